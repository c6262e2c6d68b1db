"""Batched environments: numpy fast paths for classic control, gymnasium for the rest."""

from evo_svpg.envs.base import BatchedEnv, StepResult
from evo_svpg.envs.registry import FAST_PATH_IDS, make_batched_env

__all__ = ["FAST_PATH_IDS", "BatchedEnv", "StepResult", "make_batched_env"]
