"""``checkpoint.pt``: data only, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds tensors, numbers, strings and containers of them, never objects: the
unpickler of ``weights_only=True`` refuses anything else, so a crafted file cannot run code on
``--resume``. numpy arrays (RNG states, archives) are stored as tensors tagged with their dtype
and turned back into arrays on load; numpy scalars become Python numbers. Objects that keep
state of their own (pycma's strategies) are written as their data and rebuilt by their owner.

Every checkpoint carries :data:`FORMAT_VERSION`; the loaded payload keeps it as
``format_version`` so its reader (:mod:`evo_svpg.run_state`) can interpret older layouts. A file
of a version not in :data:`READABLE`, damaged, truncated or not a checkpoint at all gets one
``ValueError`` naming the file.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evo_svpg.rundir import atomic_write_bytes

# 1: pickled objects (not loadable); 2: data, operator state as a list; 3: keyed component state
FORMAT_VERSION = 3
READABLE = (2, 3)
_ARRAY = "__ndarray__"


def to_storable(value: Any) -> Any:
    """``value`` with numpy arrays as tagged tensors and numpy scalars as Python numbers."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint a numpy array of dtype {value.dtype}")
        return {_ARRAY: torch.from_numpy(np.array(value, copy=True, order="C"))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_storable(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}: checkpoints hold data only")


def from_storable(value: Any) -> Any:
    """Inverse of :func:`to_storable`."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return value[_ARRAY].numpy().copy()
        return {k: from_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(from_storable(v) for v in value)
    return value


def _reason(exc: BaseException) -> str:
    """The line of torch's message that says what it refused (e.g. "unsupported GLOBAL
    posix.system"), without its advice to load the file unsafely."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    for paragraph in str(exc).split("\n\n"):
        line = paragraph.strip()
        if line and not line.startswith(boilerplate):
            return line.splitlines()[0].rstrip(".")[:160]
    return type(exc).__name__


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (temporary file, fsync, rename): never a torn file."""
    data = {"format_version": FORMAT_VERSION, **to_storable(payload)}
    atomic_write_bytes(path, lambda fh: torch.save(data, fh))


def load_checkpoint(path: Path) -> dict:
    """The payload saved by :func:`save_checkpoint`; ValueError naming ``path`` otherwise."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles: we refuse them
            warnings.simplefilter("ignore")
            data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"checkpoint {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:  # fmt: skip
        raise ValueError(
            f"checkpoint {path} cannot be loaded: it is damaged or not an evo_svpg checkpoint "
            f"(nothing in it was executed; {_reason(exc)})"
        ) from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in READABLE:
        raise ValueError(
            f"checkpoint {path} has format version {version!r}; this evo_svpg reads versions "
            f"{list(READABLE)} (other checkpoints cannot be resumed: start the run again)"
        )
    try:
        return from_storable(data)
    except (AttributeError, TypeError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path} is malformed ({exc})") from None
