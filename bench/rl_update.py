"""RL update throughput (issue 5), ratios from one run:

- **robolearn RLPD update**: SAC with 10 LayerNorm critics as one batched ensemble, UTD 20,
  batch 256, 256x256 MLPs: gradient steps/s, where one gradient step is one critic-ensemble
  update (20 per ``update`` call, plus one actor and temperature step per call);
- **the same update with a Python loop over the 10 critics** (``critic_impl=loop``, identical
  maths): target at least 3x slower than the batched ensemble;
- **stable-baselines3 SAC** ``train()`` (2 critics, one actor step per critic step, batch 256,
  256x256): critic gradient steps/s; target: robolearn's gradient steps/s at least SB3's while
  updating 10 critics instead of 2.

Same observation and action sizes for all (the car's: 15-dim state, 2-dim action), random
transitions in the replay, ``--threads`` torch threads, best of ``--rounds`` timings.

    .venv/bin/python -m bench.rl_update [--quick] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from data.schema import Feature
from policies.rl.replay import ReplayBuffer
from policies.rl.sac import RLPD, RLPDConfig

OBS, ACT = 15, 2


def make_agent(impl: str, device: str, batch: int, utd: int) -> tuple[RLPD, ReplayBuffer]:
    feats = {"observation.state": Feature("float32", (OBS,)), "action": Feature("float32", (ACT,))}
    stats = {"observation.state": {"mean": np.zeros(OBS, np.float32),
                                   "std": np.ones(OBS, np.float32)},
             "action": {"min": -np.ones(ACT, np.float32), "max": np.ones(ACT, np.float32),
                        "mean": np.zeros(ACT, np.float32), "std": np.ones(ACT, np.float32)}}
    cfg = RLPDConfig(critic_impl=impl, device=device, batch_size=batch, utd=utd)
    agent = RLPD(cfg, feats, stats)
    buf = ReplayBuffer(feats, 10_000, agent.device)
    n = 10_000
    rng = np.random.default_rng(0)
    buf.extend({"obs/observation.state": rng.normal(size=(n, OBS)).astype(np.float32),
                "next_obs/observation.state": rng.normal(size=(n, OBS)).astype(np.float32),
                "action": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
                "reward": rng.normal(size=n).astype(np.float32),
                "done": np.zeros(n, np.float32), "mc_return": np.zeros(n, np.float32)})
    return agent, buf


def time_robolearn(impl: str, device: str, calls: int, rounds: int, batch: int,
                   utd: int) -> float:
    """Critic gradient steps/s of ``RLPD.update`` (utd critic steps + 1 actor step per call)."""
    agent, buf = make_agent(impl, device, batch, utd)
    agent.update(buf.sample(utd * batch, agent.generator))  # warm-up
    best = float("inf")
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            info = agent.update(buf.sample(utd * batch, agent.generator))
        float(info["critic_loss"])  # one host sync at the end, as the runner logs
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return calls * utd / best


def time_sb3(device: str, steps: int, rounds: int, batch: int) -> float:
    """Gradient steps/s of stable-baselines3 SAC's ``train`` (2 critics, actor every step)."""
    model = _sb3_model(device, batch)
    best = float("inf")
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        model.train(gradient_steps=steps, batch_size=batch)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return steps / best


def _sb3_model(device: str, batch: int) -> Any:
    """An SB3 SAC with a filled replay buffer, set up as ``learn()`` does, warmed up."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import Logger

    class Dummy(gym.Env):  # type: ignore[type-arg]
        observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)

        def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
            return np.zeros(OBS, np.float32), {}

        def step(self, action: Any) -> Any:
            return np.zeros(OBS, np.float32), 0.0, False, False, {}

    model = SB3SAC("MlpPolicy", Dummy(), batch_size=batch, buffer_size=10_000, device=device,
                   policy_kwargs={"net_arch": [256, 256]}, verbose=0, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2_000):
        model.replay_buffer.add(rng.normal(size=(1, OBS)), rng.normal(size=(1, OBS)),
                                rng.uniform(-1, 1, (1, ACT)), rng.normal(size=1),
                                np.zeros(1), [{}])
    model.set_logger(Logger(None, []))  # learn()'s default logger makes a folder in /tmp
    model._setup_learn(total_timesteps=1)  # schedules and counters, as learn() does
    model.train(gradient_steps=2, batch_size=batch)
    return model


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched (forward and backward, optimiser included): on a
    GPU each is at least one kernel launch, whatever the tensor sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.n += 1
        return func(*args, **(kwargs or {}))


# Operators after which the host must wait for the device: a scalar read (``.item()``,
# ``float(t)``, ``if t:``) or an output whose size depends on the values (``nonzero``, boolean
# masks, ``unique``). On a GPU each one stalls the Python thread until every queued kernel has
# run. Device-to-host copies (``.cpu()``) are invisible on a CPU-only machine; on CUDA
# ``torch.cuda.set_sync_debug_mode`` catches those too.
SYNCING_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal",
    "aten::nonzero", "aten::masked_select", "aten::_unique", "aten::_unique2",
    "aten::unique_dim", "aten::unique_consecutive", "aten::repeat_interleave",
    "aten::masked_scatter", "aten::_assert_async",
})


def _bool_index(args: Any) -> bool:
    """A boolean mask among ``index``/``index_put`` indices (nonzero under the hood)."""
    idx = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool
               for t in (idx if isinstance(idx, (list, tuple)) else ()))


class HostSyncDetector(TorchDispatchMode):
    """Records every dispatched operator that would make the host wait for a GPU
    (:data:`SYNCING_OPS`, boolean-mask indexing): ``found`` lists their names in order.

    ``host_scalars``: tensors that live on the host whatever the device, whose reads are not a
    sync: the optimisers' step counters (:func:`optimizer_steps`; torch's Adam keeps them on the
    CPU unless ``capturable``) are read once per parameter group and step."""

    def __init__(self, host_scalars: Any = ()) -> None:
        super().__init__()
        self.found: list[str] = []
        self._host = {t.data_ptr() for t in host_scalars}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        name = func._schema.name
        if name in SYNCING_OPS or (name in ("aten::index", "aten::index_put", "aten::index_put_",
                                            "aten::_index_put_impl_") and _bool_index(args)):
            if not (name == "aten::_local_scalar_dense" and args[0].data_ptr() in self._host):
                self.found.append(name)
        return func(*args, **(kwargs or {}))


def optimizer_steps(*objs: Any) -> list[torch.Tensor]:
    """The step-counter tensors of every optimiser among ``objs``' attributes (created by
    their first step)."""
    return [st["step"] for obj in objs for opt in vars(obj).values()
            if isinstance(opt, torch.optim.Optimizer)
            for st in opt.state.values() if isinstance(st.get("step"), torch.Tensor)]


def ops_per_grad_step(name: str, batch: int, utd: int) -> float:
    """Aten operators per critic gradient step of one update (counted on CPU)."""
    counter = OpCounter()
    if name == "sb3":
        model = _sb3_model("cpu", batch)
        with counter:
            model.train(gradient_steps=utd, batch_size=batch)
    else:
        agent, buf = make_agent(name, "cpu", batch, utd)
        mb = buf.sample(utd * batch, agent.generator)
        with counter:
            agent.update(mb)
    return counter.n / utd


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calls, batch, utd = (1, 256, 20) if args.quick else (4, 256, 20)
    rounds = 1 if args.quick else args.rounds
    print(f"device {args.device}, {args.threads} thread(s); batch {batch}, 256x256 MLPs, "
          f"obs {OBS}, action {ACT}")
    ours = time_robolearn("batched", args.device, calls, rounds, batch, utd)
    loop = time_robolearn("loop", args.device, calls, rounds, batch, utd)
    sb3 = time_sb3(args.device, calls * utd, rounds, batch)
    rows = [("robolearn RLPD update, 10 critics batched, UTD 20", ours, 10),
            ("same update, Python loop over the 10 critics", loop, 10),
            ("stable-baselines3 SAC train(), 2 critics", sb3, 2)]
    print(f"{'contender':<52} {'grad steps/s':>12} {'critic-nets/s':>14} {'vs robolearn':>13}")
    for name, rate, n in rows:
        print(f"{name:<52} {rate:>12.1f} {rate * n:>14.0f} {rate / ours:>12.2f}x")
    ops = {k: ops_per_grad_step(k, batch, utd) for k in ("batched", "loop", "sb3")}
    print(f"aten operators per critic gradient step (each >= 1 kernel launch on a GPU): "
          f"batched {ops['batched']:.0f}, loop {ops['loop']:.0f} "
          f"({ops['loop'] / ops['batched']:.2f}x), SB3 {ops['sb3']:.0f} "
          f"({ops['sb3'] / ops['batched']:.2f}x)")
    agent, buf = make_agent("batched", "cpu", batch, utd)
    agent.update(buf.sample(utd * batch, agent.generator))
    with HostSyncDetector(optimizer_steps(agent)) as detector:
        agent.update(buf.sample(utd * batch, agent.generator))
    model = _sb3_model("cpu", batch)
    with HostSyncDetector(optimizer_steps(model.actor, model.critic, model)) as sb3_sync:
        model.train(gradient_steps=utd, batch_size=batch)
    print(f"operators that make the host wait for a GPU, per update of {utd} critic steps: "
          f"robolearn {len(detector.found)}, SB3 {len(sb3_sync.found)} "
          f"({len(sb3_sync.found) / utd:.1f} per gradient step: .item() of its losses, "
          f"torch.distributions' argument checks)")
    print(f"batched vs loop: {ours / loop:.2f}x (target >= 3x); gradient steps/s vs SB3: "
          f"{ours / sb3:.2f}x (target >= 1x) while updating 5x the critics "
          f"(critic networks updated/s: {ours * 10 / (sb3 * 2):.2f}x SB3's)")


if __name__ == "__main__":
    main()
