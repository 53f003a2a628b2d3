"""``robolearn train``: any registered policy on any episode store, by config.

The loop is shared by every policy (sampling, optimisation, logging, checkpoints); the maths
lives in each policy's ``compute_loss``. On CUDA it uses bf16 autocast; everywhere it keeps an
EMA of the weights (the EMA is what checkpoints hold for acting). Logs go to TensorBoard
(``<output>/tb``) and ``<output>/metrics.jsonl``.

Exact resume: batches come from a seeded permutation per epoch, indexed by the global step, and
a checkpoint holds weights, EMA, optimiser, LR schedule, step and every RNG state, so a run
interrupted at step k and resumed gives the same weights as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from data import EpisodeStore, StoreError
from data.sampling import split_episodes
from data.torch_dataset import BatchDataset, EpisodeDataset
from robolearn.config import MISSING, ConfigError, InvalidValue, to_yaml
from robolearn.progress import console

log = logging.getLogger("robolearn.train")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 1e-6  # AdamW weight decay
    warmup_steps: int = 200  # linear warm-up, then cosine decay to 0 at the last step
    grad_clip: float = 10.0  # max gradient norm

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise InvalidValue("lr", f"must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise InvalidValue("warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass
class TrainConfig:
    dataset: str = MISSING  # episode store to train on
    output: str = "outputs/train"  # run directory: checkpoints/, tb/, metrics.jsonl, config
    policy: str = "mlp"  # registered policy name (mlp, act, diffusion)
    observations: list[str] | None = None  # observation keys the policy sees; None: all
    steps: int = 5000  # gradient steps in total
    batch_size: int = 64  # windows per step
    num_workers: int = 2  # DataLoader worker processes
    val_fraction: float = 0.1  # episodes held out for the validation loss
    log_every: int = 100  # steps between logged metrics (and validation loss)
    save_every: int = 1000  # steps between checkpoints (the last step always saves)
    ema_decay: float = 0.995  # EMA of the weights kept for acting; 0 turns it off
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    resume: bool = True  # continue from <output>/checkpoints/last if it exists
    stop_at: int | None = None  # stop after this step with a checkpoint (time-boxed jobs)
    seed: int = 0  # seeds data order, initialisation and training noise
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (1 is fastest for small
    # models on a busy 2-core machine: measured 0.8 ms vs 44 ms per MLP step)
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW and its LR schedule

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise InvalidValue("ema_decay", f"must be in [0, 1), got {self.ema_decay}")


def schema_for(path: str | None, overrides: list[str]) -> type:
    """The typed schema of this run: TrainConfig plus ``policy_config`` of the chosen policy
    (read from the file and overrides first), so every policy field is checked up front."""
    from policies import POLICIES, policy_config_class
    from robolearn.config import probe

    name = str(probe(path, overrides).get("policy", "mlp"))
    from policies.rl import RL_ALGOS

    chosen = {"selected_by": {"policy_config": ("policy", name)}}
    if name in RL_ALGOS:  # an RL learner: the online/offline runner's schema
        from policies.rl import agent_class
        from robolearn.env import with_robot
        from robolearn.rl_train import RLTrainConfig

        acls = agent_class(name).config_class
        return with_robot(dataclasses.make_dataclass(
            f"RLTrainConfig_{name}", [("policy_config", acls, field(default_factory=acls))],
            bases=(RLTrainConfig,), namespace=chosen), path, overrides)
    if name not in POLICIES:
        from robolearn.config import ConfigError

        raise ConfigError(f"policy: unknown policy {name!r}; known: "
                          f"{', '.join([*POLICIES, *RL_ALGOS])}")
    cls = policy_config_class(name)
    return dataclasses.make_dataclass(
        f"TrainConfig_{name}", [("policy_config", cls, field(default_factory=cls))],
        bases=(TrainConfig,), namespace=chosen)


class StepSampler(Sampler[list[int]]):
    """Batches for steps ``start..total``: epoch e is ``permutation(seed + e)`` of all windows,
    so the batch of any step is known without replaying the ones before it."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int) -> None:
        if n < batch_size:
            raise ValueError(f"the dataset has {n} windows, fewer than batch_size={batch_size}")
        self.n, self.b, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per_epoch = n // batch_size

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        perm, epoch = None, -1
        for step in range(self.start, self.total):
            e, k = divmod(step, self.per_epoch)
            if e != epoch:
                perm, epoch = np.random.default_rng(self.seed + e).permutation(self.n), e
            assert perm is not None
            yield perm[k * self.b:(k + 1) * self.b].tolist()


def _lr_lambda(cfg: TrainConfig) -> Any:
    def f(step: int) -> float:
        if step < cfg.optim.warmup_steps:
            return (step + 1) / cfg.optim.warmup_steps
        span = max(1, cfg.steps - cfg.optim.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.optim.warmup_steps) / span)))
    return f


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if torch.cuda.is_available() and s["cuda"]:
        torch.cuda.set_rng_state_all(s["cuda"])


def run(cfg: Any) -> int:
    """Train; returns 0. ``cfg`` is a ``schema_for(...)`` instance (has ``policy_config``)."""
    from robolearn.rl_train import RLTrainConfig

    if isinstance(cfg, RLTrainConfig):
        from robolearn import rl_train

        return rl_train.run(cfg)
    from policies import make_policy
    from policies.normalize import compute_stats

    out = Path(cfg.output)
    ckpt_dir = out / "checkpoints"
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    with EpisodeStore.open(cfg.dataset, "r") as store:
        obs = [k for k in store.features if k.startswith("observation.")]
        unknown = sorted(set(cfg.observations or ()) - set(obs))
        if unknown:
            raise StoreError(f"observations: {unknown} not in {cfg.dataset} (it has {obs})")
        keys = [k for k in obs if cfg.observations is None or k in cfg.observations] + ["action"]
        features = {k: store.features[k] for k in keys}
        train_eps, val_eps = split_episodes(store, cfg.val_fraction, seed=cfg.seed)
        # normalization from the training episodes only: the validation loss must not see
        # statistics of the episodes it validates on
        stats = compute_stats(store, keys, episodes=train_eps)
        source_meta = {"dataset": str(Path(cfg.dataset).resolve()), **store.metadata}
    policy = make_policy(cfg.policy, features, stats, config=cfg.policy_config)
    device = policy.device
    ema = torch.optim.swa_utils.AveragedModel(
        policy, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)) \
        if cfg.ema_decay > 0 else None
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step = 0
    last = ckpt_dir / "last"
    if cfg.resume and (last / "training_state.pt").exists():
        # onto the CPU: the random states must stay CPU byte tensors (set_rng_state refuses
        # CUDA ones); load_state_dict moves weights and optimiser state to the device
        state = torch.load(last / "training_state.pt", map_location="cpu", weights_only=False)
        policy.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        restore_rng_state(state["rng"])
        step = int(state["step"])
        log.info("resumed %s at step %d", out, step)
    start_output(out, wipe=not cfg.resume)  # a fresh run replaces an old one
    (out / "config.yaml").write_text(to_yaml(cfg))
    (out / "dataset.json").write_text(json.dumps(source_meta, indent=1, default=str))
    if step >= cfg.steps:
        log.info("%s: already trained for %d steps", out, step)
        return 0

    spec = policy.window_spec()
    train_ds = EpisodeDataset(cfg.dataset, spec, train_eps)
    val_ds = EpisodeDataset(cfg.dataset, spec, val_eps) if val_eps else None
    stop = min(cfg.steps, cfg.stop_at or cfg.steps)
    loader = DataLoader(BatchDataset(train_ds), batch_size=None,
                        sampler=StepSampler(len(train_ds), cfg.batch_size, cfg.seed, step, stop),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    amp = cfg.amp and device.type == "cuda"
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    metrics_file = open(out / "metrics.jsonl", "a")
    t0, samples = time.perf_counter(), 0
    policy.train()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("training {task.fields[policy]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, policy=cfg.policy, loss=0.0)
        for batch in loader:
            batch = policy.to_device(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, info = policy.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(policy)
            step += 1
            samples += cfg.batch_size
            bar.update(task, completed=step, loss=float(loss.detach()))
            if step % cfg.log_every == 0 or step == cfg.steps:
                m = {"step": step, "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                     "lr": sched.get_last_lr()[0],
                     "samples_per_s": samples / (time.perf_counter() - t0), **info}
                if val_ds is not None:
                    m["val_loss"] = _val_loss(ema.module if ema is not None else policy,
                                              val_ds, cfg)
                for k, v in m.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
                metrics_file.write(json.dumps(m) + "\n")
                metrics_file.flush()
            if step % cfg.save_every == 0 or step in (cfg.steps, stop):
                _save(ckpt_dir, step, policy, ema, opt, sched)
    writer.close()
    metrics_file.close()
    log.info("trained %s for %d steps: %s", cfg.policy, step, ckpt_dir / "last" / "policy")
    return 0


@torch.no_grad()
def _val_loss(policy: Any, ds: EpisodeDataset, cfg: Any, batches: int = 4) -> float:
    was = policy.training
    policy.eval()
    rng = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(batches):
        idx = torch.randint(0, len(ds), (cfg.batch_size,), generator=rng).tolist()
        batch = ds.get_batch(idx)
        loss, _ = policy.compute_loss(policy.to_device(batch))
        losses.append(float(loss))
    policy.train(was)
    return float(np.mean(losses))


def _save(ckpt_dir: Path, step: int, policy: Any, ema: Any, opt: Any, sched: Any) -> None:
    save_checkpoint(ckpt_dir, step, ema.module if ema is not None else policy,
                    {"model": policy.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema else None,
                     "step": step, "rng": rng_state()})


OUTPUT_MARKER = ".robolearn-output"  # in every output directory robolearn creates


def start_output(out: Path, *, wipe: bool) -> None:
    """Create the output directory ``out``; with ``wipe``, first delete what an earlier robolearn
    run left there. A non-empty directory robolearn did not create (no marker, e.g. a mistyped
    ``output=~/data``) is never deleted: that is a :class:`ConfigError` naming it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {out} exists and is not a directory")
    if wipe and out.exists() and any(out.iterdir()):
        if not _robolearn_output(out):
            raise ConfigError(f"output: {out} is not empty and was not created by robolearn "
                              f"(no {OUTPUT_MARKER}); refusing to delete it, choose another "
                              "output")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTPUT_MARKER).touch()


def _robolearn_output(out: Path) -> bool:
    if (out / OUTPUT_MARKER).exists():
        return True
    # run directories written before the marker existed
    return any((out / n).is_file() for n in ("config.yaml", "report.json")) and any(
        (out / n).exists() for n in ("checkpoints", "metrics.jsonl", "report.json", "demos.zarr"))


def save_checkpoint(ckpt_dir: Path, step: int, policy: Any, state: dict[str, Any]) -> None:
    """``checkpoints/step_N/{policy/, training_state.pt}``, then ``last`` -> it, atomically.
    ``policy`` is what acting loads (``robolearn eval``); ``state`` is what resuming needs."""
    tmp = ckpt_dir / f".step_{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    policy.save(tmp / "policy")
    torch.save(state, tmp / "training_state.pt")
    final = ckpt_dir / f"step_{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    link = ckpt_dir / ".last.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(final.name)
    link.replace(ckpt_dir / "last")  # the switch is one rename: a crash leaves old or new
