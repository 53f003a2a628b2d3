"""A run's output directory: who owns it, starting over, checkpoints, resuming, the metrics log.

- **Ownership.** Every output directory robolearn creates holds a marker (``.robolearn-output``).
  A non-empty directory without it was not made by robolearn: nothing is written into it and
  nothing in it is deleted (a mistyped ``output=~/data`` costs nothing).
- **Starting over** (``resume=false``) deletes only the entries the command itself writes there
  (``entries``: names or glob patterns) and sub-directories that carry the marker (an
  evaluation's output inside its run); anything else inside means the directory holds someone's
  files, so the fresh start is refused, naming them, rather than delete them or mix them in.
- **Checkpoints** (``checkpoints/step_N/{policy/, training_state.pt}``): written under a
  temporary name, renamed, then ``last`` switched to them by one rename; each file's SHA-256 is
  recorded (``SHA256SUMS``) and verified on load. Older checkpoints are pruned to the newest
  ``keep_last`` plus the best (lowest validation loss, linked as ``best``); pruning runs after
  ``last`` has moved and never touches what ``last`` or ``best`` point to, and a directory is
  renamed out of sight before it is deleted, so a crash never leaves a half-deleted checkpoint.
- **Resuming** compares the run's saved ``config.yaml`` with the new config: only the keys a
  command lists as resumable may differ (else a :class:`ConfigError` naming each key and both
  values); and ``metrics.jsonl`` loses the rows logged after the checkpoint (they are logged
  again), so each step appears once.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import pickle
import random
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from policies.checksums import CheckpointError, verify, write_sums
from robolearn_core.config import ConfigError, to_yaml

log = logging.getLogger("robolearn.run")

OUTPUT_MARKER = ".robolearn-output"  # in every output directory robolearn creates
STATE = "training_state.pt"
# what a training run (BC or RL) writes in its output directory: a fresh start deletes these
# (and marked sub-directories) and nothing else; eval/ is robolearn eval's default output
RUN_ENTRIES = ("checkpoints", "tb", "metrics.jsonl", "config.yaml", "dataset.json", "eval")
# entries that are outputs of their own (``robolearn eval RUN`` writes RUN/eval): deleted by a
# fresh start only when robolearn marked them
SUB_OUTPUTS = ("eval",)


# ---------------------------------------------------------------------------- ownership
def check_output(out: Path, *, wipe: bool, entries: Collection[str]) -> None:
    """Raise a :class:`ConfigError` naming ``out`` unless :func:`start_output` may use it:
    writable, and either new, empty, or robolearn's (and, with ``wipe``, holding nothing but
    ``entries`` and marked sub-directories). Writes nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not _robolearn_output(out):
            raise ConfigError(f"output: {out} is not empty and was not created by robolearn "
                              f"(no {OUTPUT_MARKER}); refusing to write into it or delete "
                              "anything in it: choose another output (a run robolearn wrote "
                              f"before it marked its outputs: touch {out / OUTPUT_MARKER})")
        foreign = _foreign_entries(out, entries) if wipe else []
        if foreign:
            raise ConfigError(f"output: {out} holds {', '.join(foreign[:5])}"
                              f"{' ...' if len(foreign) > 5 else ''}, which robolearn did not "
                              "write there; refusing to start over in it (a fresh start deletes "
                              "only a run's own files): move them, or choose another output")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output: cannot create {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        raise ConfigError(f"output: cannot write {out}: {existing} is "
                          f"{'on a read-only file system' if read_only else 'not writable'}; "
                          "choose another output")


def start_output(out: Path, *, wipe: bool, entries: Collection[str], kind: str = "run") -> None:
    """Check ``out`` (:func:`check_output`), then create it with the marker; with ``wipe``,
    first delete the ``entries`` an earlier run wrote there (check_output has refused anything
    else)."""
    check_output(out, wipe=wipe, entries=entries)
    try:
        if wipe and out.is_dir():
            for p in sorted(out.iterdir()):
                if p.name != OUTPUT_MARKER:
                    _remove(p)
        out.mkdir(parents=True, exist_ok=True)
        (out / OUTPUT_MARKER).write_text(f"{kind}\n")  # what it is: a fresh start of the
        # directory above may delete an evaluation, never a run nested in it
    except OSError as exc:
        raise ConfigError(f"output: cannot write {out}: {exc.strerror or exc}") from None


def _robolearn_output(out: Path) -> bool:
    """Only the marker says so. (A guess from the files inside -- ``config.yaml`` beside
    ``checkpoints/`` -- took other tools' run directories for robolearn's and wrote into or
    emptied them; a run written before robolearn marked its outputs is refused, and the message
    says how to mark it.)"""
    return (out / OUTPUT_MARKER).is_file()


def _foreign_entries(out: Path, entries: Collection[str]) -> list[str]:
    """What a fresh start in ``out`` must not delete: anything not named by ``entries`` except
    evaluations of this run (directories whose marker says ``eval``), and a sub-output entry
    (``eval``) that robolearn did not mark. A run the user nested here is foreign: it is
    somebody's work, marked or not."""
    def ours(p: Path) -> bool:
        if p.is_dir() and not p.is_symlink() and _kind(p) == "eval":
            return True
        if not any(fnmatch.fnmatchcase(p.name, e) for e in entries):
            return False
        return p.name not in SUB_OUTPUTS or _kind(p) is not None

    return sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARKER and not ours(p))


def _kind(path: Path) -> str | None:
    """What robolearn wrote in ``path`` ("run", "eval", "quickstart"; "" from a marker written
    before markers said), or None where it did not mark it."""
    try:
        return (path / OUTPUT_MARKER).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(ckpt_dir: Path, step: int, policy: Any, state: dict[str, Any], *,
                    keep_last: int = 0, val_loss: float | None = None) -> Path:
    """``checkpoints/step_N/{policy/, training_state.pt}``, then ``last`` -> it, atomically;
    then prune to the newest ``keep_last`` (0: keep all) plus the best by ``val_loss``.
    ``policy`` is what acting loads (``robolearn eval``); ``state`` is what resuming needs."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*ckpt_dir.glob(".step_*.tmp"), *ckpt_dir.glob(".step_*.trash")]:
        shutil.rmtree(stale)  # a save or a prune a crash interrupted
    tmp = ckpt_dir / f".step_{step:08d}.tmp"
    policy.save(tmp / "policy")
    torch.save(state, tmp / STATE)
    if val_loss is not None:
        (tmp / "val_loss.json").write_text(json.dumps({"step": step, "val_loss": val_loss}))
    write_sums(tmp, [STATE])
    final = ckpt_dir / f"step_{step:08d}"
    old = None
    if final.exists():  # the same step saved again (a learner restarted at it): set the old
        # copy aside and delete it only after the new one is in place, so ``last`` names a
        # missing directory for two renames, not for a whole deletion (a learner SIGKILLed in
        # that window once came back to "training_state.pt: missing")
        old = final.with_name(f".{final.name}.trash")
        final.rename(old)
    tmp.rename(final)
    _link(ckpt_dir, "last", final)  # the switch is one rename: a crash leaves old or new
    if old is not None:
        shutil.rmtree(old)
    if keep_last > 0:
        _prune(ckpt_dir, keep_last)
    return final


def _link(ckpt_dir: Path, name: str, target: Path) -> None:
    link = ckpt_dir / f".{name}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target.name)
    link.replace(ckpt_dir / name)


def _trash(d: Path) -> None:
    """Delete a checkpoint directory; renamed first, so no half-deleted one stays in sight."""
    trash = d.with_name(f".{d.name}.trash")
    d.rename(trash)
    shutil.rmtree(trash)


def _prune(ckpt_dir: Path, keep_last: int) -> None:
    steps = sorted(ckpt_dir.glob("step_*"), key=lambda d: int(d.name.split("_")[1]))
    keep = {d.name for d in steps[-keep_last:]}
    keep.add((ckpt_dir / "last").resolve().name)  # what resume loads, whatever happens
    scored = [(s, d) for d in steps if (s := _val_loss(d)) is not None]
    if scored:
        best = min(scored, key=lambda sd: sd[0])[1]
        if (ckpt_dir / "best").resolve() != best.resolve():
            _link(ckpt_dir, "best", best)
        keep.add(best.name)
    for d in steps:
        if d.name not in keep:
            _trash(d)


def _val_loss(step_dir: Path) -> float | None:
    try:
        return float(json.loads((step_dir / "val_loss.json").read_text())["val_loss"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def load_training_state(step_dir: Path) -> dict[str, Any]:
    """``step_dir/training_state.pt``, verified against its checksum (CPU tensors: the random
    states must stay CPU byte tensors; ``load_state_dict`` moves the rest to the device)."""
    verify(step_dir, [STATE])
    path = step_dir / STATE
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        detail = str(exc).split(". ")[0] or "damaged"  # torch adds sentences of advice
        raise CheckpointError(f"{path}: cannot read it ({type(exc).__name__}: {detail})"
                              ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training state (a {type(state).__name__})")
    return state


def restore(what: str, path: Path, load: Callable[[], Any]) -> None:
    """Run ``load()`` (a ``load_state_dict``); a state that does not fit this run's model is a
    :class:`CheckpointError` naming the file (a policy or model size changed since it was
    saved) instead of torch's size-mismatch traceback."""
    try:
        load()
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        # torch's message: a heading line, then one line per mismatch; the first one is enough
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise CheckpointError(f"{path}: its {what} does not fit this run's ({detail}); "
                              "resume=false starts over") from None


# ---------------------------------------------------------------------------- resuming
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def check_resumable(out: Path, cfg: Any, resumable: Collection[str], may_change: str,
                    defaults: dict[str, Any] | None = None) -> None:
    """Refuse to resume the run in ``out`` under a config that differs from its saved
    ``config.yaml`` in any key but ``resumable`` (``may_change`` says which, in words).
    ``defaults``: flattened values that a ``config.yaml`` written before those keys existed
    ran with."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return
    try:
        old = flatten(OmegaConf.to_container(OmegaConf.load(saved)))
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise CheckpointError(f"{saved}: cannot read the run's config "
                              f"({str(exc).splitlines()[0]})") from None
    new = flatten(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))))
    old = {**{k: v for k, v in (defaults or {}).items() if k not in old}, **old}
    changed = [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted({*old, *new})
               if old.get(k) != new.get(k) and k not in resumable]
    if changed:
        raise ConfigError(f"output {out}: resuming a run whose config.yaml differs in "
                          f"{', '.join(changed)}; only {may_change} may change on resume. "
                          "Choose another output, or resume=false to start this one over")


def truncate_metrics(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Drop the rows of ``metrics.jsonl`` that ``keep`` rejects (logged after the checkpoint a
    run resumes from: they will be logged again) and torn lines (a killed writer's last);
    rewritten atomically. Returns how many rows were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and keep(row):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
        log.info("%s: dropped %d row(s) logged after the checkpoint", path, dropped)
    return dropped
