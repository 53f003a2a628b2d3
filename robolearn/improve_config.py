"""``robolearn improve``'s settings (:class:`ImproveConfig`): the method, its teacher, the
novice, and what each method's parts are set to (see :mod:`robolearn.improve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from policies.interactive import EnsembleConfig, PIERConfig, SAGConfig
from policies.thrifty_risk import RiskConfig
from robolearn.rlif import RLIFConfig
from robolearn.teacher import TeacherConfig
from robolearn_core.config import InvalidValue

METHODS = ("dagger", "hgdagger", "thrifty", "askdagger", "rlif")
KEEP = ("last", "fewest_takeovers")
FIT_EVERY_EPISODE = ("dagger", "hgdagger", "askdagger")  # methods refitting each episode


@dataclass
class ImproveConfig:
    start: str = MISSING  # a BC run directory (its dataset.json) or a demonstration store
    method: str = "askdagger"  # dagger | hgdagger | thrifty | askdagger | rlif
    env: str | None = None  # where the robot practises; None: the demonstrations' env
    robot_kwargs: dict[str, Any] = field(default_factory=dict)  # robot settings over the env's
    teacher: str = "expert"  # expert: the env's scripted expert, degraded by teacher_config
    teacher_config: TeacherConfig = field(default_factory=TeacherConfig)  # its degradations, rule
    teleop: str = "keyboard"  # teacher=human: the person's device (keyboard | gamepad | ...)
    teleop_config: dict[str, Any] = field(default_factory=dict)  # teacher=human: its settings
    query_timeout_s: float = 60.0  # teacher=human: how long a query waits for an answer
    rounds: int = 6  # rounds of collecting, each followed by a refit
    episodes: int = 4  # episodes collected per round
    max_steps: int | None = None  # steps per episode; None: the demonstrations' env's
    output: str = "outputs/improve"  # the session directory (run again to resume)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # the novice's members
    beta: str = "exponential"  # dagger: exponential | linear | first | none
    beta_p: float = 0.5  # dagger: beta_i = beta_p ** i (exponential)
    alpha: float = 0.05  # thrifty: target share of steps handed to the teacher
    risk: bool = True  # thrifty: also hand over when the risk critic's Q(s, plan) is low
    risk_config: RiskConfig = field(default_factory=RiskConfig)  # thrifty: the risk critic
    sag: SAGConfig = field(default_factory=SAGConfig)  # askdagger: S-Aware Gating
    plan_steps: int = 1  # askdagger: steps a plan covers, one query for all of them (1: a
    # query every step)
    plan: str = "rollout"  # askdagger, plan_steps > 1: how a plan is made (rollout: the
    # one-step novice acts it on a copy of the simulation, where the simulated teacher judges
    # it; chunk: a novice that predicts plan_steps actions at once, executed open-loop once
    # decided on, judged by a person from its summary or by the simulated teacher executing
    # it on a copy; measured against each other in the README, interactive imitation)
    fit_every: str = "round"  # round: the novice is refitted once a round (DAgger's and
    # ThriftyDAgger's iteration); episode: also after every episode that added training
    # data, the next episode acting with the newer fit (ASkDAgger's Algorithm 1, step 5),
    # each fit from scratch on everything so far; dagger, hgdagger and askdagger, not with
    # keep=fewest_takeovers (README, interactive imitation: what it measured)
    pier: bool = True  # askdagger: prioritised, importance-weighted replay
    pier_config: PIERConfig = field(default_factory=PIERConfig)  # askdagger: PIER's constants
    rlif: RLIFConfig = field(default_factory=RLIFConfig)  # rlif: the RL learner and its updates
    keep: str = "last"  # the session's result: last (the last fit) | fewest_takeovers (the
    # fit whose round needed the teacher on the fewest steps, ties to the later; hgdagger and
    # rlif: no task reward, a person keeps the policy they corrected least), in OUTPUT/kept
    # (OUTPUT/novice stays the last fit). Why and what it measured: README, RLIF
    eval_episodes: int = 0  # per round, the novice alone on held-out seeds (0: no evaluation)
    eval_every: int = 1  # evaluate after every this many rounds (and after the last)
    eval_seed: int = 100_000  # first seed of the evaluation episodes (held out)
    seed: int = 0  # seeds fits, gates and the collected episodes
    threads: int = 1  # torch CPU threads (fits and the novice's steps)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidValue("method", f"{self.method!r} not one of {', '.join(METHODS)}")
        if self.teacher not in ("expert", "human"):
            raise InvalidValue("teacher", f"{self.teacher!r}: expert (simulated) or human")
        if self.teacher == "human" and self.method in ("dagger", "thrifty"):
            raise InvalidValue("teacher", f"method={self.method} needs an answer at every "
                               "step (dagger labels each one; thrifty hands control over "
                               "without asking): run it with teacher=expert, or use "
                               "hgdagger, rlif or askdagger with a person")
        if self.rounds < 1 or self.episodes < 1:
            raise InvalidValue("rounds", "rounds and episodes must be >= 1")
        if self.eval_every < 1:
            raise InvalidValue("eval_every", f"must be >= 1, got {self.eval_every}")
        if self.keep not in KEEP:
            raise InvalidValue("keep", f"{self.keep!r}: one of {', '.join(KEEP)}")
        if self.keep == "fewest_takeovers" and self.method not in ("hgdagger", "rlif"):
            raise InvalidValue("keep", f"fewest_takeovers needs the teacher's takeovers "
                               f"(method=hgdagger or rlif), not method={self.method}")
        if not 0 < self.alpha < 1:
            raise InvalidValue("alpha", f"must be in (0, 1), got {self.alpha}")
        if self.fit_every not in ("round", "episode"):
            raise InvalidValue("fit_every", f"{self.fit_every!r}: round or episode")
        if self.fit_every == "episode" and self.method not in FIT_EVERY_EPISODE:
            raise InvalidValue("fit_every", f"episode refits the novice ensemble of dagger, "
                               f"hgdagger and askdagger, not method={self.method}'s (thrifty "
                               "sets its thresholds from each round's fit; rlif's learner "
                               "trains between rounds)")
        if self.fit_every == "episode" and self.keep != "last":
            raise InvalidValue("fit_every", "episode gives a round several fits, and keep="
                               f"{self.keep} keeps the one fit that drove a round: use "
                               "fit_every=round")
        if self.plan not in ("rollout", "chunk"):
            raise InvalidValue("plan", f"{self.plan!r}: rollout or chunk")
        if self.plan == "chunk" and self.method != "askdagger":
            raise InvalidValue("plan", f"chunk is ASkDAgger's plan (method=askdagger), not "
                               f"method={self.method}'s")
        if self.plan_steps < 1 or (self.plan_steps > 1 and (
                self.method != "askdagger" or (self.teacher, self.plan) == ("human", "rollout"))):
            raise InvalidValue("plan_steps", f"{self.plan_steps}: must be >= 1, and > 1 only "
                               "with method=askdagger, and with teacher=human only with "
                               "plan=chunk (a rollout is previewed on a copy of the simulation)")
