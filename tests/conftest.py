"""One BLAS/torch thread for the whole suite, as runs use by default (see docs/results/speed.md)."""

from evo_svpg.engine import set_threads

set_threads(1)
