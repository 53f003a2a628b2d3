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

import contextlib
import dataclasses
import json
import logging
import math
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
from robolearn.rundir import (
    RUN_ENTRIES,
    STATE,
    check_output,
    check_resumable,
    load_training_state,
    restore,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    start_output,
    truncate_metrics,
)
from robolearn_core.config import MISSING, ConfigError, InvalidValue, to_yaml
from robolearn_core.progress import console

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
    keep_last: int = 3  # newest checkpoints kept (plus the best by validation loss,
    # checkpoints/best, and the one resume loads); 0 keeps every one
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
        if not 0 <= self.val_fraction < 1:
            raise InvalidValue("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.keep_last < 0:
            raise InvalidValue("keep_last", f"must be >= 0 (0 keeps every checkpoint), got "
                                            f"{self.keep_last}")
        if not 0 <= self.ema_decay < 1:
            raise InvalidValue("ema_decay", f"must be in [0, 1), got {self.ema_decay}")


def schema_for(path: str | None, overrides: list[str]) -> type:
    """The typed schema of this run: TrainConfig plus ``policy_config`` of the chosen policy
    (read from the file and overrides first), so every policy field is checked up front."""
    from policies import POLICIES, policy_config_class
    from robolearn_core.config import probe

    name = str(probe(path, overrides).get("policy", "mlp"))
    from policies.rl import RL_ALGOS

    chosen = {"selected_by": {"policy_config": ("policy", name)}}
    if name in RL_ALGOS:  # an RL learner: the online/offline runner's schema
        from policies.rl import agent_class
        from robolearn.env import with_robot
        from robolearn.rl_setup import RLTrainConfig

        acls = agent_class(name).config_class
        return with_robot(dataclasses.make_dataclass(
            f"RLTrainConfig_{name}", [("policy_config", acls, field(default_factory=acls))],
            bases=(RLTrainConfig,), namespace=chosen), path, overrides)
    if name not in POLICIES:
        from robolearn_core.config import ConfigError

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


# on resume the budget, logging, checkpointing and the device may change; anything else would
# mix two experiments in one run
RESUMABLE_CHANGES = ("steps", "stop_at", "log_every", "save_every", "keep_last", "num_workers",
                     "threads", "resume", "output", "policy_config.device")


class NonFiniteLoss(ConfigError):
    """The loss or gradient became NaN or infinite on finite data: the run's settings make
    training diverge. Raised before the update, so no weight is NaN."""


def run(cfg: Any) -> int:
    """Train; returns 0. ``cfg`` is a ``schema_for(...)`` instance (has ``policy_config``).
    Every input is checked (output directory, data, checkpoint, config) before anything is
    written."""
    from robolearn.rl_setup import RLTrainConfig

    if isinstance(cfg, RLTrainConfig):
        from robolearn import rl_train

        return rl_train.run(cfg)
    from policies import make_policy
    from policies.normalize import check_finite, compute_stats, offset_stats

    out = Path(cfg.output)
    ckpt_dir = out / "checkpoints"
    check_output(out, wipe=not cfg.resume, entries=RUN_ENTRIES)
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
        if not train_eps:
            raise ConfigError(f"val_fraction: {cfg.val_fraction} leaves none of the "
                              f"{len(store)} episode(s) of {cfg.dataset} to train on")
        # normalization from the training episodes only: the validation loss must not see
        # statistics of the episodes it validates on (compute_stats also refuses NaN in them)
        stats = compute_stats(store, keys, episodes=train_eps)
        ref = getattr(cfg.policy_config, "action_offset", None)
        if ref is not None:  # the policy learns offsets: their statistics, not the actions'
            if ref not in keys[:-1]:
                raise ConfigError(f"policy_config.action_offset: {ref!r} is not one of the "
                                  f"observations it trains on ({keys[:-1]})")
            stats["action"] = offset_stats(store, ref, train_eps)
        check_finite(store, keys, val_eps)
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
    if cfg.resume and (last.is_symlink() or last.exists()):
        check_resumable(out, cfg, RESUMABLE_CHANGES,
                        "the step budget, logging, checkpointing and the device")
        step = _resume(load_training_state(last), last / STATE, policy, opt, sched, ema)
        log.info("resumed %s at step %d", out, step)

    spec = policy.window_spec()
    train_ds = EpisodeDataset(cfg.dataset, spec, train_eps)
    if len(train_ds) < cfg.batch_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {len(train_ds)} "
                          f"windows of the {len(train_eps)} training episode(s) of "
                          f"{cfg.dataset}; lower it or record more data")
    val_ds = EpisodeDataset(cfg.dataset, spec, val_eps) if val_eps else None
    start_output(out, wipe=not cfg.resume, entries=RUN_ENTRIES)  # a fresh run replaces an old one
    (out / "config.yaml").write_text(to_yaml(cfg))
    (out / "dataset.json").write_text(json.dumps(source_meta, indent=1, default=str))
    truncate_metrics(out / "metrics.jsonl", lambda row: int(row.get("step", 0)) <= step)
    if step >= cfg.steps:
        log.info("%s: already trained for %d steps", out, step)
        return 0

    stop = min(cfg.steps, cfg.stop_at or cfg.steps)
    loader = DataLoader(BatchDataset(train_ds), batch_size=None,
                        sampler=StepSampler(len(train_ds), cfg.batch_size, cfg.seed, step, stop),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    amp = cfg.amp and device.type == "cuda"
    from torch.utils.tensorboard import SummaryWriter

    t0, samples = time.perf_counter(), 0
    policy.train()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    # purge_step: TensorBoard drops the events a resumed run logged after its checkpoint
    with contextlib.closing(SummaryWriter(str(out / "tb"), purge_step=step or None)) as writer, \
            open(out / "metrics.jsonl", "a") as metrics_file, \
            Progress(TextColumn("training {task.fields[policy]}"), BarColumn(),
                     MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                     TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, policy=cfg.policy, loss=0.0)
        for batch in loader:
            batch = policy.to_device(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, info = policy.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.optim.grad_clip)
            loss_value, norm_value = torch.stack([loss.detach().float(),
                                                  grad_norm.float()]).tolist()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                raise NonFiniteLoss(f"step {step + 1}: the training loss is {loss_value} "
                                    f"(gradient norm {norm_value}) on finite data; stopped "
                                    "before this update, the weights stay finite. Try a lower "
                                    "optim.lr or a longer optim.warmup_steps")
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(policy)
            step += 1
            samples += cfg.batch_size
            bar.update(task, completed=step, loss=loss_value)
            acting = ema.module if ema is not None else policy
            val_loss = None
            if step % cfg.log_every == 0 or step == cfg.steps:
                m = {"step": step, "loss": loss_value, "grad_norm": norm_value,
                     "lr": sched.get_last_lr()[0],
                     "samples_per_s": samples / (time.perf_counter() - t0), **info}
                if val_ds is not None:
                    m["val_loss"] = val_loss = _val_loss(acting, val_ds, cfg)
                for k, v in m.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
                metrics_file.write(json.dumps(m) + "\n")
                metrics_file.flush()
            if step % cfg.save_every == 0 or step in (cfg.steps, stop):
                if val_ds is not None and val_loss is None:  # ranks the checkpoints
                    val_loss = _val_loss(acting, val_ds, cfg)
                _save(ckpt_dir, step, policy, ema, opt, sched, cfg.keep_last, val_loss)
    log.info("trained %s for %d steps: %s", cfg.policy, step, ckpt_dir / "last" / "policy")
    return 0


def _resume(state: dict[str, Any], path: Path, policy: Any, opt: Any, sched: Any,
            ema: Any) -> int:
    """Load a training state into this run's objects; returns its step."""
    step = 0

    def load() -> None:
        nonlocal step
        policy.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        restore_rng_state(state["rng"])
        step = int(state["step"])

    restore("training state", path, load)
    return step


@torch.no_grad()
def _val_loss(policy: Any, ds: EpisodeDataset, cfg: Any, batches: int = 4) -> float:
    """Loss on the same validation windows, with the same noise (diffusion), every time: the
    numbers compare across steps and rank the checkpoints. Training's random streams are left
    as they were (a validation at a stop_at checkpoint must not change the resumed run)."""
    was = policy.training
    policy.eval()
    rng = torch.Generator().manual_seed(cfg.seed)
    losses = []
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        for _ in range(batches):
            idx = torch.randint(0, len(ds), (cfg.batch_size,), generator=rng).tolist()
            batch = ds.get_batch(idx)
            loss, _ = policy.compute_loss(policy.to_device(batch))
            losses.append(float(loss))
    policy.train(was)
    return float(np.mean(losses))


def _save(ckpt_dir: Path, step: int, policy: Any, ema: Any, opt: Any, sched: Any,
          keep_last: int, val_loss: float | None) -> None:
    save_checkpoint(ckpt_dir, step, ema.module if ema is not None else policy,
                    {"model": policy.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "ema": ema.state_dict() if ema else None,
                     "step": step, "rng": rng_state()},
                    keep_last=keep_last, val_loss=val_loss)
