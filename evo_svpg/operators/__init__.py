"""Operators: the steps an iteration is composed of, ``op(state, ctx) -> state``."""

from evo_svpg.operators.base import (
    Context,
    Estimator,
    Evaluator,
    Every,
    Operator,
    ParticleStateHolder,
    PopulationState,
    ReportsPolicies,
    Stateless,
    evaluate,
    ranking_key,
    require_finite,
)
from evo_svpg.operators.gradient import (
    AdamAscent,
    CollectRollouts,
    OwnGradient,
    PolicyGradient,
    SteinDirection,
)

__all__ = [
    "AdamAscent",
    "CollectRollouts",
    "Context",
    "Estimator",
    "Evaluator",
    "Every",
    "Operator",
    "OwnGradient",
    "ParticleStateHolder",
    "PolicyGradient",
    "PopulationState",
    "ReportsPolicies",
    "Stateless",
    "SteinDirection",
    "evaluate",
    "ranking_key",
    "require_finite",
]
