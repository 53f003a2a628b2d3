"""``robolearn eval``: a trained policy, N seeded episodes in simulation, one report.

Reports the success rate with its 95% Wilson interval, the mean return, per-episode results
(``eval.json``) and MP4 videos of the first episodes where rendering is available. The
environment defaults to the one the training data was collected in (the store's ``env_id``
and ``env_overrides`` metadata), so camera settings match what the policy was trained on.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from policies.checksums import CheckpointError
from robolearn.env import ENVS, RobotEnv, make_env, unknown_env
from robolearn.loop import ControlLoop, LoopConfig
from robolearn.rundir import start_output
from robolearn.safety import SafetyConfig
from robolearn.video import write_mp4
from robolearn_core.config import MISSING, ConfigError, InvalidValue
from robolearn_core.progress import track

log = logging.getLogger("robolearn.eval")


@dataclass
class EvalConfig:
    checkpoint: str = MISSING  # a saved policy directory, or a training run directory
    env: str | None = None  # registered env id; None: the env the training data came from
    episodes: int = 50  # seeded evaluation episodes
    seed: int = 100_000  # first seed (data collection uses small seeds: no overlap)
    max_steps: int | None = None  # per episode; None: the env's own limit
    videos: int = 2  # how many of the first episodes to render to MP4
    camera: str | None = None  # camera for the videos; None: the robot's default view
    output: str | None = None  # report directory; None: <run or checkpoint>/eval
    device: str = "auto"  # torch device for the policy
    # the filter between the policy and the robot (bounds, safety.max_delta, safety.on_nonfinite):
    # evaluate under the limits the robot will be deployed with
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise InvalidValue("episodes", f"must be >= 1, got {self.episodes}")
        if self.videos < 0:
            raise InvalidValue("videos", f"must be >= 0, got {self.videos}")
        if self.env is not None and self.env not in ENVS:
            raise InvalidValue("env", unknown_env(self.env))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0% and 100%, unlike p +- 2 se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# what eval writes in its output directory (a new evaluation there deletes these, nothing else)
EVAL_ENTRIES = ("eval.json", "episode_*.mp4")


def resolve_checkpoint(path: Path) -> tuple[Path, Path]:
    """(policy directory, run directory) for a policy dir or a training run dir."""
    if (path / "policy.json").exists():
        run = path.parent.parent.parent if path.parent.parent.name == "checkpoints" else path
        return path, run
    if (path / "checkpoints" / "last" / "policy" / "policy.json").exists():
        return path / "checkpoints" / "last" / "policy", path
    if not path.exists():
        raise ConfigError(f"checkpoint: {path} does not exist")
    if (path / "zarr.json").exists():
        raise ConfigError(f"checkpoint: {path} is an episode store, not a trained policy "
                          f"(train one first: robolearn train dataset={path})")
    raise ConfigError(f"checkpoint: {path} is neither a saved policy (policy.json) nor a "
                      "training run (checkpoints/last/policy)")


def _run_metadata(run: Path) -> dict[str, Any]:
    """What the run recorded about its training data (``dataset.json``), or {}."""
    path = run / "dataset.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return meta


def env_for(cfg: EvalConfig, run: Path) -> RobotEnv:
    """The env to evaluate in: ``cfg.env``, else the one the training data came from, with the
    data's robot settings (cameras); refused when its robot is not the one the data's env had."""
    meta = _run_metadata(run)
    data_env = meta.get("env_id")
    env_id = cfg.env or data_env
    if env_id is None:
        raise ConfigError(f"env: the training data of {run} does not say which env it came "
                          "from (no env_id in its dataset.json); pass env=robolearn/<Name>-v0")
    if env_id not in ENVS:
        raise ConfigError(f"env: {unknown_env(env_id)} (from {run / 'dataset.json'})")
    data_robot = ENVS[data_env]["robot"] if data_env in ENVS else meta.get("robot_type")
    robot = ENVS[env_id]["robot"]
    if data_robot is not None and robot != data_robot:
        same = [e for e, kw in ENVS.items() if kw["robot"] == data_robot]
        raise ConfigError(f"env: {env_id} drives robot {robot}, but {run} was trained on "
                          f"{data_env or 'its'} data, robot {data_robot}; evaluate it in one of "
                          f"{', '.join(same) or '?'}")
    kwargs = dict(ENVS[env_id])
    overrides = meta.get("env_overrides", {})
    if data_env == env_id:
        kwargs.update(overrides)
    elif data_env in ENVS:
        # the same robot in another env (another track): the data's robot settings (cameras)
        # carry over, except those this env registers itself (its track)
        kwargs["robot_kwargs"] = {**overrides.get("robot_kwargs", {}),
                                  **kwargs.get("robot_kwargs", {})}
    if cfg.max_steps is not None:
        kwargs["max_steps"] = cfg.max_steps
    return make_env(**kwargs)


def evaluate(policy: Any, env: RobotEnv, episodes: int, seed: int, videos: int = 0,
             video_dir: Path | None = None, camera: str | None = None,
             progress: bool = True, safety: SafetyConfig | None = None) -> dict[str, Any]:
    """Run ``policy.select_action`` for ``episodes`` seeded episodes through the control loop
    (safety filter included: ``safety``, default limits if None); returns the summary and
    per-episode results."""
    loop = ControlLoop(env, LoopConfig(realtime=False, safety=safety or SafetyConfig()))
    results: list[dict[str, Any]] = []
    video_paths: list[str] = []
    for i in track(range(episodes), "evaluating", enabled=progress):
        frames: list[np.ndarray] = []

        def grab(e: RobotEnv, frames: list[np.ndarray] = frames) -> None:
            frame = e.robot.render(camera)
            if frame is not None:
                frames.append(frame)

        observer = grab if i < videos and video_dir is not None else None
        r = loop.run_episode(policy.select_action, seed=seed + i, source="policy",
                             record=False, observer=observer)
        results.append({"seed": seed + i, "success": r.success, "return": r.ret,
                        "steps": r.steps, "nonfinite_actions": r.safety.nonfinite,
                        "clipped_actions": r.safety.clipped,
                        "rate_limited_actions": r.safety.rate_limited,
                        "reward_terms": r.reward_terms, "task": env.task.info()})
        if frames and video_dir is not None:
            path = video_dir / f"episode_{i:03d}_{'success' if r.success else 'failure'}.mp4"
            write_mp4(frames, path, env.robot.fps)
            video_paths.append(str(path))
    n_ok = int(sum(bool(r["success"]) for r in results))
    lo, hi = wilson(n_ok, episodes)
    return {"episodes": episodes, "success_rate": n_ok / episodes, "ci95": [lo, hi],
            "mean_return": float(np.mean([r["return"] for r in results])),
            "mean_steps": float(np.mean([r["steps"] for r in results])),
            # NaN/inf actions of the policy, which the safety filter held or stopped
            "nonfinite_actions": sum(r["nonfinite_actions"] for r in results),
            "videos": video_paths, "results": results}


def run(cfg: EvalConfig) -> int:
    from policies.base import Policy

    policy_dir, run_dir = resolve_checkpoint(Path(cfg.checkpoint))
    policy = Policy.load(policy_dir, device=None if cfg.device == "auto" else cfg.device)
    env = env_for(cfg, run_dir)
    missing = [k for k in policy.obs_keys if k not in env.features]
    out = Path(cfg.output) if cfg.output else run_dir / "eval"
    try:
        if missing:
            raise ConfigError(f"env: the policy observes {missing}, which "
                              f"{cfg.env or 'the env of its data'} does not provide (it gives "
                              f"{sorted(env.features)})")
        start_output(out, wipe=True, entries=EVAL_ENTRIES, kind="eval")
    except ConfigError:
        env.close()
        raise
    try:
        report = evaluate(policy, env, cfg.episodes, cfg.seed, cfg.videos, out, cfg.camera,
                          safety=cfg.safety)
    finally:
        env.close()
    report["checkpoint"] = str(policy_dir)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    lo, hi = report["ci95"]
    nonfinite = report["nonfinite_actions"]
    if nonfinite:
        log.warning("the policy produced %d non-finite action(s); the safety filter replaced "
                    "them (safety.on_nonfinite=%s): see nonfinite_actions per episode in %s",
                    nonfinite, cfg.safety.on_nonfinite, out / "eval.json")
    print(f"success {100 * report['success_rate']:.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%) "
          f"over {cfg.episodes} episodes, mean return {report['mean_return']:.2f}"
          f"{f', {nonfinite} non-finite actions' if nonfinite else ''}; "
          f"report {out / 'eval.json'}")
    return 0
