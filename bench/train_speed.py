"""Training speed on CPU: samples/s of each robolearn policy's training step beside lerobot's.

One small low-dim dataset shaped like the simulated arm's (``observation.state`` 12, ``observation
.environment_state`` 13, ``action`` 6; smooth random walks) is written twice, as a robolearn
episode store and as a LeRobotDataset (the sampling benchmark's writer). Each contender then runs
the loop its own project's ``train`` command runs, on one torch thread, in-process data loading:

- robolearn: ``EpisodeDataset`` + ``DataLoader`` (``BatchDataset``, ``StepSampler``) exactly as
  ``robolearn train`` builds them; ``compute_loss`` (normalization inside), backward, grad clip,
  AdamW, EMA update.
- lerobot: ``LeRobotDataset`` with the policy's ``delta_timestamps`` and a shuffled DataLoader as
  ``lerobot-train``; its preprocessor pipeline (normalization), ``policy.forward``, backward,
  grad clip, AdamW.

Two figures each: **end to end** (a fresh batch from the contender's loader every step) and
**compute** (one prefetched batch reused: forward, backward and update alone). Pairs use the same
sizes: ACT (no CVAE, pre-norm, same width, heads, depth, feed-forward and chunk) and Diffusion (same
U-Net widths, kernel, step embedding, horizons, 100 DDPM steps); parameter counts are printed.
lerobot has no plain MLP behaviour-cloning policy, so ``mlp`` has no pair. lerobot's Diffusion
wants diffusers only for its noise scheduler; where diffusers is missing (this locked env) the
one scheduler call a training step makes, ``add_noise``, is robolearn's (see
:func:`stand_in_noise_scheduler`) and the row says so.

    .venv/bin/python -m bench.train_speed [--quick] [--steps 30] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from bench._episodes import Episode, _random_walk

STATE, ENV_STATE, ACTION = "observation.state", "observation.environment_state", "action"
DIMS = {STATE: 12, ENV_STATE: 13, ACTION: 6}  # the simulated arm's
FPS = 30

# robolearn policy -> (robolearn policy_config, lerobot policy type, lerobot config kwargs)
PAIRS: dict[str, tuple[dict[str, Any], str | None, dict[str, Any]]] = {
    "mlp": ({}, None, {}),
    "act": ({"d_model": 128, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2,
             "ff_dim": 512, "dropout": 0.1, "action_horizon": 16},
            "act", {"dim_model": 128, "n_heads": 4, "n_encoder_layers": 2,
                    "n_decoder_layers": 2, "dim_feedforward": 512, "dropout": 0.1,
                    "chunk_size": 16, "n_action_steps": 16, "use_vae": False,
                    "pre_norm": True}),
    "diffusion": ({"down_dims": [64, 128], "kernel_size": 5, "step_embed_dim": 64,
                   "obs_horizon": 2, "action_horizon": 16, "n_action_steps": 8,
                   "train_steps": 100},
                  "diffusion", {"down_dims": (64, 128), "kernel_size": 5,
                                "diffusion_step_embed_dim": 64, "n_obs_steps": 2,
                                "horizon": 16, "n_action_steps": 8,
                                "num_train_timesteps": 100}),
}


def make_arm_episodes(n_episodes: int, length: int, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [{k: _random_walk(rng, length, d) for k, d in DIMS.items()} for _ in range(n_episodes)]


@dataclass
class Result:
    name: str
    params: int
    end_to_end: float  # samples/s
    compute: float  # samples/s


def timed(step: Callable[[], int], steps: int, warmup: int, max_seconds: float) -> float:
    """Samples/s of ``step`` (returns the batch size) over ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        n += step()
        if time.perf_counter() - t0 > max_seconds:
            break
    return n / (time.perf_counter() - t0)


# ── robolearn ────────────────────────────────────────────────────────────────────────────────
def write_store(episodes: Sequence[Episode], path: Path) -> None:
    from data import EpisodeStore

    features = {k: {"dtype": "float32", "shape": [d]} for k, d in DIMS.items()}
    with EpisodeStore.create(path, features, fps=FPS) as store, \
            store.recorder(task="bench", source="scripted") as rec:
        for ep in episodes:
            for t in range(len(ep[ACTION])):
                rec.add({k: ep[k][t] for k in DIMS})
            rec.end_episode(success=True)


def robolearn_run(name: str, config: dict[str, Any], store_path: Path, batch_size: int,
                  steps: int, max_seconds: float) -> Result:
    from torch.utils.data import DataLoader

    from data import EpisodeStore
    from data.torch_dataset import BatchDataset, EpisodeDataset
    from policies import make_policy, policy_config_class
    from policies.normalize import compute_stats
    from robolearn.train import StepSampler

    torch.manual_seed(0)
    with EpisodeStore.open(store_path, "r") as store:
        features = {k: store.features[k] for k in DIMS}
        stats = compute_stats(store, list(DIMS))
    policy = make_policy(name, features, stats,
                         config=policy_config_class(name)(device="cpu", **config))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)
    ema = torch.optim.swa_utils.AveragedModel(
        policy, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995))
    ds = EpisodeDataset(store_path, policy.window_spec())
    loader = DataLoader(BatchDataset(ds), batch_size=None, num_workers=0,
                        sampler=StepSampler(len(ds), batch_size, 0, 0, 10**9))
    batches = iter(loader)
    policy.train()

    def update(batch: dict[str, Any]) -> int:
        loss, _ = policy.compute_loss(policy.to_device(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
        ema.update_parameters(policy)
        return batch_size

    fixed = next(batches)
    params = sum(p.numel() for p in policy.parameters())
    e2e = timed(lambda: update(next(batches)), steps, 2, max_seconds)
    compute = timed(lambda: update(fixed), steps, 2, max_seconds)
    return Result(f"robolearn {name}", params, e2e, compute)


# ── lerobot ──────────────────────────────────────────────────────────────────────────────────
def lerobot_writer(episodes: Sequence[Episode], workdir: Path) -> Any:
    """The sampling benchmark's LeRobotDataset writer with the arm's features."""
    from bench._lerobot_baseline import LeRobot

    class LeRobotArm(LeRobot):
        delta: dict[str, list[float]] = {}

        def features(self) -> dict[str, dict[str, Any]]:
            return {k: {"dtype": "float32", "shape": (d,), "names": None}
                    for k, d in DIMS.items()}

        def delta_timestamps(self) -> dict[str, list[float]]:
            return self.delta or {k: [0.0] for k in DIMS}

    writer = LeRobotArm(use_videos=False, fps=FPS, repo_id="robolearn/bench-train-speed")
    writer.build(episodes, workdir)
    return writer


def stand_in_noise_scheduler() -> bool:
    """lerobot's Diffusion needs diffusers (``lerobot[diffusion]``, not in this locked env) only
    for its noise scheduler, and a training step calls just ``add_noise`` on it. Without
    diffusers, put in robolearn's DDPM ``add_noise`` (the same squared-cosine schedule, three
    tensor ops) so that lerobot's own U-Net, conditioning and loss can be timed. True if done."""
    from lerobot.policies.diffusion import modeling_diffusion as md
    from lerobot.utils.import_utils import _diffusers_available

    if _diffusers_available:
        return False
    from policies.diffusion import add_noise, squared_cosine_alphas_cumprod

    class AddNoise:
        def __init__(self, num_train_timesteps: int, **_: Any) -> None:
            self.config = SimpleNamespace(num_train_timesteps=num_train_timesteps)
            self.alpha_bar = squared_cosine_alphas_cumprod(num_train_timesteps)

        def add_noise(self, x0: torch.Tensor, noise: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
            return add_noise(x0, noise, t, self.alpha_bar)

    md.require_package = lambda *args, **kwargs: None  # type: ignore[assignment]
    md._make_noise_scheduler = lambda name, **kw: AddNoise(**kw)  # type: ignore[assignment]
    return True


def lerobot_run(kind: str, config: dict[str, Any], writer: Any, batch_size: int, steps: int,
                max_seconds: float) -> Result:
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.policies.factory import make_policy, make_policy_config, make_pre_post_processors
    from torch.utils.data import DataLoader

    stand_in = kind == "diffusion" and stand_in_noise_scheduler()
    torch.manual_seed(0)
    cfg = make_policy_config(kind, device="cpu", pretrained_backbone_weights=None, **config)
    writer.delta = resolve_delta_timestamps(cfg, writer.dataset.meta)
    writer._open()  # reopen with the policy's windows, as lerobot-train's make_dataset does
    dataset = writer.dataset
    policy = make_policy(cfg, ds_meta=dataset.meta)
    pre, _ = make_pre_post_processors(cfg, dataset_stats=dataset.meta.stats)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                        drop_last=True, generator=torch.Generator().manual_seed(0))

    def cycle() -> Iterator[dict[str, Any]]:
        while True:
            yield from loader

    batches = cycle()
    policy.train()

    def update(batch: dict[str, Any]) -> int:
        loss, _ = policy.forward(pre(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step()
        opt.zero_grad()
        return batch_size

    fixed = next(batches)
    params = sum(p.numel() for p in policy.parameters())
    e2e = timed(lambda: update(next(batches)), steps, 2, max_seconds)
    compute = timed(lambda: update(dict(fixed)), steps, 2, max_seconds)
    return Result(f"lerobot {kind}" + (" (add_noise stand-in)" if stand_in else ""), params, e2e,
                  compute)


# ── main ─────────────────────────────────────────────────────────────────────────────────────
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, a smaller dataset")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per figure")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cap per figure")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--policies", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--no-lerobot", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.length, args.steps, args.max_seconds = 10, 60, 8, 5.0
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    episodes = make_arm_episodes(args.episodes, args.length)
    table = Table(title=f"training samples/s, batch {args.batch_size}, {args.threads} thread(s), "
                        f"{args.episodes} episodes x {args.length} steps, low-dim")
    for col in ("contender", "params", "end to end", "compute only", "robolearn / lerobot"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        write_store(episodes, work / "robolearn.zarr")
        writer = None if args.no_lerobot else lerobot_writer(episodes, work)
        for name in args.policies:
            config, kind, lr_config = PAIRS[name]
            ours = robolearn_run(name, config, work / "robolearn.zarr", args.batch_size,
                                 args.steps, args.max_seconds)
            theirs, ratio = None, "-"
            if kind is not None and writer is not None:
                try:
                    theirs = lerobot_run(kind, lr_config, writer, args.batch_size, args.steps,
                                         args.max_seconds)
                except ImportError as e:  # lerobot[diffusion] needs diffusers, not locked here
                    ratio = f"lerobot {kind} not measured: {e}".split(". ")[0]
            if theirs is not None:
                ratio = (f"{ours.end_to_end / theirs.end_to_end:.2f}x e2e, "
                         f"{ours.compute / theirs.compute:.2f}x compute")
            for r in (ours, theirs):
                if r is not None:
                    table.add_row(r.name, f"{r.params:,}", f"{r.end_to_end:,.0f}",
                                  f"{r.compute:,.0f}", ratio if r is ours else "")
            console.print("; ".join(f"{r.name} ({r.params:,} params): {r.end_to_end:,.0f} e2e, "
                                    f"{r.compute:,.0f} compute samples/s"
                                    for r in (ours, theirs) if r is not None) + f"; {ratio}")
        if writer is not None:
            writer.close()
    console.print(table)


if __name__ == "__main__":
    main()
