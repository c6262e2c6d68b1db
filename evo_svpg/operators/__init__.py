"""Operators: the steps an iteration is composed of, ``op(state, ctx) -> state``.

Importing this package registers the built-in operators in :data:`evo_svpg.registry.OPERATORS`.
"""

from evo_svpg.operators import (  # noqa: F401
    erl,
    langevin,
    measure,
    novelty,
    selection,
    variation,
)
from evo_svpg.operators.base import (
    Build,
    Context,
    Contract,
    Estimator,
    Evaluator,
    Every,
    Operator,
    ParticleStateHolder,
    PopulationState,
    ReportsPolicies,
    Stateless,
    component_name,
    contract_of,
    evaluate,
    ranking_key,
    register_operator,
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
    "Build",
    "CollectRollouts",
    "Context",
    "Contract",
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
    "component_name",
    "contract_of",
    "evaluate",
    "ranking_key",
    "register_operator",
    "require_finite",
]
