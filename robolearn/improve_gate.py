"""The interactive session's per-step decision (:class:`Gate`): who acts and what is recorded,
for each method of :mod:`robolearn.improve`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from policies.interactive import NoviceEnsemble, beta, sag_threshold
from policies.thrifty_risk import RiskQ
from robolearn.improve_data import (
    ANNOTATED,
    FOLLOWED,
    LABELLED,
    NONE,
    PLANNED,
    REJECTED,
    TAKEOVER,
    VALIDATED,
    obs_vector,
)
from robolearn.rlif import RLIFNovice
from robolearn.teacher import Teacher

if TYPE_CHECKING:
    from robolearn.improve_config import ImproveConfig

Novice = NoviceEnsemble | RLIFNovice


# --------------------------------------------------------------------------- the gate
class Gate:
    """One method's per-step decision, seen by the control loop as the teleop device (the
    teacher's action when the teacher acts, else None) and as the policy (the novice's)."""

    def __init__(self, cfg: ImproveConfig, novice: Novice, teacher: Teacher,
                 round_index: int, threshold: float, rng: np.random.Generator,
                 action_dim: int) -> None:
        self.cfg, self.novice, self.teacher = cfg, novice, teacher
        self.round, self.threshold, self.rng = round_index, threshold, rng
        self.beta = beta(cfg.beta, round_index, cfg.beta_p, cfg.rounds)
        self.in_control = False  # thrifty: the teacher holds control
        self.risk: RiskQ | None = None  # thrifty: the risk critic and its two thresholds
        self.risk_thr = self.back_thr = float("nan")
        self._plan = np.zeros(action_dim, np.float32)
        # askdagger: SAG sets the threshold before each step (Algorithm 1) from the session's
        # earlier steps and this episode's: a first round asks about everything only until
        # its window holds n_min wrong plans and a right one, not for the whole round
        self.sag_past: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._ep_u: list[float] = []
        self._ep_label: list[int] = []
        self._sag_stale = True
        self._extra: dict[str, Any] = {}
        self.columns: set[str] | None = None  # the store's per-step columns (None: all)
        self._nan = np.full(action_dim, np.nan, np.float32)
        # askdagger with plans of cfg.plan_steps steps: the simulated teacher's look at the
        # plan from here (SimulatedTeacher.preview), (obs, the novice's act or its chunk) ->
        # (the plan's largest uncertainty, every step acceptable); the steps of the plan
        # decided on still to execute, and whether it was accepted. plan=chunk: the novice's
        # plan is one chunk of its actions, held while its later steps execute; a person is
        # shown it whole (no simulator needed)
        self.preview: Callable[[dict[str, np.ndarray], Any], tuple[float, bool]] | None = None
        self._left, self._accepted = 0, False
        self.chunked = cfg.plan == "chunk"
        self._chunk, self._u = np.zeros((0, action_dim), np.float32), 0.0

    def reset(self, seed: int | None = None) -> None:
        self.teacher.reset(seed)
        self.in_control = False
        self._ep_u, self._ep_label, self._sag_stale = [], [], True
        self._left, self._accepted = 0, False

    def _sag(self, u: float) -> None:
        """SAG's threshold again after a new outcome (or every 25 steps: imputed unknowns)."""
        if self.sag_past is None or not (self._sag_stale or len(self._ep_u) % 25 == 0):
            return
        pu, pl, pr = self.sag_past
        n = len(self._ep_u)
        self.threshold = sag_threshold(
            np.concatenate([pu, np.asarray(self._ep_u, np.float64), [u]]),
            np.concatenate([pl, np.asarray(self._ep_label, np.int64), [0]]),
            np.concatenate([pr, np.full(n + 1, self.round)]), self.round, self.cfg.sag,
            self.rng)
        self._sag_stale = False

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        if self.chunked and self._left > 0 and not self.teacher.holding:
            plan, u = self._chunk[len(self._chunk) - self._left], self._u  # a later step
        elif self.chunked:
            self._chunk, self._u = self.novice.plan(obs)  # type: ignore[union-attr]
            plan, u = self._chunk[0], self._u
        else:
            plan, u = self.novice.act(obs)
        self._plan = plan
        self.teacher.label(obs)  # the teacher watches every step (cached; counted only if used)
        whole: bool | None = None  # a plan of several steps: the teacher's verdict on it
        if self.preview is not None and self.teacher.holding:
            # a drive hands back when the novice's plan is right, not its next step alone
            u, whole = self._look(obs, u)
        self.teacher.see(obs, plan, whole)  # a drive after a rejection may end here
        event, label, teacher_acts = NONE, self._nan, False
        was_held = self.teacher.holding or (self.cfg.method == "thrifty" and self.in_control)
        m = self.cfg.method
        if m == "dagger":
            label, event = self.teacher.label(obs), LABELLED
            teacher_acts = bool(self.rng.random() < self.beta)
        elif m in ("hgdagger", "rlif"):
            if self.teacher.wants_control(obs, plan):
                label, event, teacher_acts = self.teacher.label(obs), TAKEOVER, True
        elif m == "thrifty":
            q = float("nan") if self.risk is None else float(
                self.risk.value(obs_vector(obs, self.novice.obs_keys), plan))
            risky = q < self.risk_thr  # False while there is no critic (NaN)
            if not self.in_control and (u > self.threshold or risky):
                self.in_control = True
            elif self.in_control and u <= self.threshold and not q <= self.back_thr \
                    and self.teacher.judge(obs, plan, drive=False):
                self.in_control = False
            if self.in_control:
                label, event, teacher_acts = self.teacher.label(obs), TAKEOVER, True
        elif self.teacher.holding:  # askdagger: a person drives after rejecting a plan: a
            # demonstration, not another query's outcome (SAG counts one per query)
            label, event, teacher_acts = self.teacher.label(obs), TAKEOVER, True
            self._left = 0  # a plan cut short by a takeover is not resumed: the next is new
        elif self._left > 0:  # askdagger: a later step of a plan decided on at its first
            self._left -= 1
            label, event = (plan, PLANNED) if self._accepted else (self._nan, FOLLOWED)
        else:  # askdagger
            if self.preview is not None and whole is None:  # plan_steps > 1: its verdict
                u, whole = self._look(obs, u)  # the plan's largest uncertainty
            self._sag(u)
            active = u >= self.threshold
            self._left, self._accepted = self.cfg.plan_steps - 1, False
            if active or self.rng.random() < self.cfg.sag.p_rand:
                if hasattr(self.teacher, "uncertainty"):  # a person sees why it asks
                    self.teacher.uncertainty = (u, self.threshold)
                shown = self._chunk if self.chunked else plan  # a person sees it whole
                verdict = self.teacher.judge(obs, shown, drive=active) if whole is None \
                    else self.teacher.answer(whole, drive=active)  # type: ignore[attr-defined]
                if verdict is None:  # nobody answered: the novice acts, nothing labelled
                    pass
                elif verdict:
                    label, event, self._accepted = plan, VALIDATED, True
                elif active:
                    label, event, teacher_acts = self.teacher.label(obs), ANNOTATED, True
                    self._left = 0  # the teacher drives instead
                else:
                    label, event = self.teacher.label(obs), REJECTED
        executed = np.asarray(label, np.float32)
        if teacher_acts and not np.isfinite(executed).all():
            # a person holds control but has not moved anything yet: the robot follows the
            # device's idle output; a rejection stays recorded (a wrong plan), unlabelled
            idle = getattr(self.teacher, "command", lambda o: None)(obs)
            event, label = REJECTED if event == ANNOTATED else NONE, self._nan
            executed = plan if idle is None else np.asarray(idle, np.float32)
        if m == "askdagger" and event not in (PLANNED, FOLLOWED):  # SAG sees decisions
            known = 1 if event == VALIDATED else -1 if event in (ANNOTATED, REJECTED) else 0
            self._ep_u.append(float(u))
            self._ep_label.append(known)
            self._sag_stale |= known != 0
        self.teacher.tick()
        turned_down = (teacher_acts and not was_held and m != "dagger") \
            or event in (ANNOTATED, REJECTED)  # DAgger's beta hands over without judging
        self._extra = {"interactive.event": np.int8(event),
                       "interactive.label": np.asarray(label, np.float32),
                       "interactive.uncertainty": np.float32(u),
                       "interactive.threshold": np.float32(self.threshold),
                       "interactive.rejected": plan if turned_down else self._nan}
        return executed if teacher_acts else None

    def _look(self, obs: dict[str, np.ndarray], u: float) -> tuple[float, bool]:
        """The simulated teacher's preview of the plan from here: (its uncertainty, whether
        every step is acceptable); a chunk keeps the novice's uncertainty for the whole."""
        assert self.preview is not None
        if self.chunked:
            return u, self.preview(obs, self._chunk)[1]
        return self.preview(obs, self.novice.act)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self._plan

    def extras(self) -> dict[str, Any]:
        if self.columns is None:
            return self._extra
        return {k: v for k, v in self._extra.items() if k in self.columns}
