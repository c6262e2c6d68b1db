"""Policy-gradient estimators: ``gradient(theta [n, d], rollout) -> ∇J [n, d]``."""

from evo_svpg.estimators.a2c import A2C
from evo_svpg.estimators.reinforce import Reinforce

ESTIMATORS = ("reinforce", "a2c")

__all__ = ["A2C", "ESTIMATORS", "Reinforce"]
