"""evo_svpg: population-based RL around the exact Stein Variational Policy Gradient update."""

from evo_svpg.config import RunConfig
from evo_svpg.engine import Run, build_run
from evo_svpg.loop import train
from evo_svpg.modes import MODES
from evo_svpg.svgd import median_bandwidth, svgd_direction, svpg_direction

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "Run",
    "RunConfig",
    "build_run",
    "median_bandwidth",
    "svgd_direction",
    "svpg_direction",
    "train",
]
