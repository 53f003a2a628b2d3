"""Online and offline-to-online RL learners, by name: ``policy: sac | rlpd | iql | calql | wsrl``.

Each learner is an ``nn.Module`` agent built from its config dataclass, the features it sees
and normalization statistics; its actor is a regular policy (:class:`ActorPolicy`,
``rl_actor``), which is what checkpoints hold for evaluation and deployment. The runner that
collects experience and calls ``agent.update`` is :mod:`robolearn.rl_train`.
"""

from __future__ import annotations

from typing import Any

from robolearn_core.registry import resolve

RL_ALGOS: dict[str, str] = {
    "sac": "policies.rl.sac:SAC",  # SAC (any ensemble size / UTD by config)
    "rlpd": "policies.rl.sac:RLPD",  # SAC + 50/50 offline data, 10 critics, UTD 20
    "iql": "policies.rl.iql:IQL",  # IQL pretraining, then IQL fine-tuning on mixed data
    "calql": "policies.rl.calql:CalQL",  # Cal-QL pretraining, then Cal-QL fine-tuning
    "wsrl": "policies.rl.calql:WSRL",  # Cal-QL pretraining, warm-up, online SAC without offline
}


def agent_class(name: str) -> Any:
    """The agent class registered as ``name``; an unknown name lists the known ones."""
    return resolve(RL_ALGOS, name, "RL learner")
