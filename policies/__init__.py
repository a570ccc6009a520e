"""The agent's network: IMPALA CNN encoder, a core chosen by name from CORES, and heads."""

from .actor_critic import ActorCritic, Heads, build_actor_critic
from .config import ModelConfig
from .cores import CORES, Core, build_core
from .encoder import ImpalaCNN
from .state import State

__all__ = [
    "CORES",
    "ActorCritic",
    "Core",
    "Heads",
    "ImpalaCNN",
    "ModelConfig",
    "State",
    "build_actor_critic",
    "build_core",
]
