"""Policy-gradient estimators: ``gradient(theta [n, d], rollout) -> ∇J [n, d]``.

Each registers itself in :data:`evo_svpg.registry.ESTIMATORS` with its declared
:class:`~evo_svpg.estimators.base.Capabilities` (README "Recipes: an estimator").
"""

from evo_svpg.estimators.a2c import A2C
from evo_svpg.estimators.base import Capabilities, register_estimator
from evo_svpg.estimators.linear_baseline import LinearBaselineReinforce
from evo_svpg.estimators.reinforce import Reinforce
from evo_svpg.registry import ESTIMATORS

__all__ = [
    "A2C",
    "ESTIMATORS",
    "Capabilities",
    "LinearBaselineReinforce",
    "Reinforce",
    "register_estimator",
]
