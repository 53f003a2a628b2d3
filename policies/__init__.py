"""Behaviour-cloning policies, by name: ``policy: mlp | act | diffusion``.

>>> stats = compute_stats(store, [*obs_keys, "action"])
>>> policy = make_policy("diffusion", features, stats, action_horizon=16)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from policies.device import pick_device
from robolearn_core.registry import resolve

if TYPE_CHECKING:
    from data.schema import Feature
    from policies.base import Policy, PolicyConfig
    from policies.normalize import Stats

POLICIES: dict[str, str] = {
    "mlp": "policies.mlp:MLPPolicy",
    "act": "policies.act:ACTPolicy",
    "diffusion": "policies.diffusion:DiffusionPolicy",
    "rl_actor": "policies.rl.actor:ActorPolicy",  # the RL learners' actor (also trains by BC)
}


def policy_class(name: str) -> type[Policy]:
    """The policy class registered as ``name``; an unknown name lists the known ones."""
    cls: type[Policy] = resolve(POLICIES, name, "policy")
    return cls


def policy_config_class(name: str) -> type[PolicyConfig]:
    """The config dataclass of policy ``name`` (an omegaconf structured schema)."""
    return policy_class(name).config_class


def make_policy(name: str, features: Mapping[str, Feature], stats: Stats, *,
                config: PolicyConfig | None = None, **overrides: Any) -> Policy:
    """Build policy ``name`` on its device (``config.device``: "auto" = cuda if available).

    ``overrides`` set config fields (nested ones as dicts: ``encoder={"keypoints": 16}``);
    a bad value raises :class:`robolearn_core.config.InvalidValue` naming the field.
    """
    cls = policy_class(name)
    if config is None:
        schema = OmegaConf.merge(OmegaConf.structured(cls.config_class), overrides)
        config = OmegaConf.to_object(schema)  # type: ignore[assignment]
    elif overrides:
        raise TypeError("pass either config or field overrides, not both")
    assert config is not None
    policy = cls(config, features, stats)
    return policy.to(pick_device(config.device))
