"""pycma's ``CMAEvolutionStrategy`` as plain data, and back, for checkpoints that hold no code.

A CMAEvolutionStrategy is a graph of pycma objects holding numbers, arrays, strings and
containers of them, plus a few functions and classes (options such as `CMA_eigenmethod`,
`BoundaryHandler`). `capture_state` walks the graph from the strategy and encodes every value as
plain data; `restore_state` walks the encoding and writes the values into a freshly built
strategy, so no object is ever created from what the checkpoint says: pycma objects are
restored in place into the fresh build's own (only `_CREATED_DURING_RUN` classes, which ask
creates, are built, by their constructor), functions and classes are the fresh build's own
(the checkpoint only names them, and the names must match). Encodings:
  None, bool, int, float, str (exact types), numeric/bool np.ndarray   as themselves (arrays
      copied), list / tuple   as a list / tuple of encodings; every other value is a dict:
  {"kind": "numpy_scalar", "value": 0-d array}   a numpy scalar (np.float64 stays np.float64)
  {"kind": "numpy_scalars", "value": 1-d array}   a list of numpy scalars of one dtype
  {"kind": "dict", "items": [(key, value), ...]}   a dict (keys and values encoded)
  {"kind": "range", "value": (start, stop, step)}
  {"kind": "generator", "state": ...}   a numpy Generator: its bit_generator.state
  {"kind": "object", "class": "module.Qualname", "attrs": {name: value}, "items": [...]}
      a pycma object (or our Randn) by its attributes ("items": those of a dict / list
      subclass such as CMAOptions or RecombinationWeights)
  {"kind": "code", "name": "module.qualname"}   a function / class / other callable
  {"kind": "ref", "path": "mean"}   the mutable object first met at ``path``: pycma shares
      e.g. `opts`, the `randn` generator, `mean` with `_stoptolxstagnation.x`, `D` with `dC`
Paths are attribute paths from the strategy: "adapt_sigma.ps", "fit.hist", "opts['randn']".
"""

from __future__ import annotations

import cma
import numpy as np

from evo_svpg.rng import Randn

__all__ = ["capture_state", "restore_state"]

_PLAIN = (type(None), bool, int, float, str)
_NUMERIC_KINDS = "biuf"  # numpy dtype kinds: bool, int, uint, float
# pycma objects that `ask` creates (so a fresh build lacks them): built by their constructor.
_CREATED_DURING_RUN = {
    f"{c.__module__}.{c.__qualname__}": c for c in (cma.utilities.utils.ElapsedWCTime,)
}


def _class_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _is_state_object(value: object) -> bool:
    """A pycma object (or our Randn) whose attributes are state, restored in place."""
    return type(value).__module__.split(".")[0] == "cma" or type(value) is Randn


def _code_name(value: object) -> str:
    f = getattr(value, "__func__", value)  # a bound method: its function
    module = getattr(f, "__module__", None) or type(f).__module__
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{module}.{name}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def capture_state(value: object, path: str, seen: dict[int, str]) -> object:
    """``value`` as plain data; ``seen`` maps the ids of mutable objects met so far to paths."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, np.generic):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cmaes state: attribute {path!r} is a {value.dtype} numpy scalar")
        return {"kind": "numpy_scalar", "value": np.asarray(value)}
    if type(value) is range:
        return {"kind": "range", "value": (value.start, value.stop, value.step)}
    if type(value) is tuple:
        return tuple(capture_state(x, f"{path}[{i}]", seen) for i, x in enumerate(value))
    if id(value) in seen:
        return {"kind": "ref", "path": seen[id(value)]}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cmaes state: attribute {path!r} is a {value.dtype} array")
        seen[id(value)] = path
        return np.array(value, order="C", copy=True)
    if type(value) is list:
        seen[id(value)] = path
        dtypes = {x.dtype for x in value if isinstance(x, np.generic)}
        if value and len(dtypes) == 1 and all(isinstance(x, np.generic) for x in value):
            (dtype,) = dtypes
            if dtype.kind in _NUMERIC_KINDS:  # e.g. fit.hist: one array, not an entry per value
                return {"kind": "numpy_scalars", "value": np.array(value, dtype=dtype)}
        return [capture_state(x, f"{path}[{i}]", seen) for i, x in enumerate(value)]
    if type(value) is dict:
        seen[id(value)] = path
        return {"kind": "dict", "items": _capture_items(value, path, seen)}
    if isinstance(value, np.random.Generator):
        seen[id(value)] = path
        state = value.bit_generator.state  # a new dict: its own `seen` (its id is not kept)
        return {
            "kind": "generator",
            "state": capture_state(state, f"{path}.bit_generator.state", {}),
        }
    if _is_state_object(value):
        seen[id(value)] = path
        encoded = {"kind": "object", "class": _class_name(value)}
        if isinstance(value, dict):
            encoded["items"] = _capture_items(value, path, seen)
        elif isinstance(value, list):
            encoded["items"] = [capture_state(x, f"{path}[{i}]", seen) for i, x in enumerate(value)]
        elif isinstance(value, tuple | set | frozenset):
            raise TypeError(f"cmaes state: attribute {path!r} is a {_class_name(value)}")
        attrs = vars(value)
        encoded["attrs"] = {k: capture_state(x, _join(path, k), seen) for k, x in attrs.items()}
        return encoded
    if callable(value):  # functions, classes, numpy's array-function dispatchers, ...
        return {"kind": "code", "name": _code_name(value)}
    raise TypeError(f"cmaes state: attribute {path!r} is a {_class_name(value)}")


def _capture_items(value: dict, path: str, seen: dict[int, str]) -> list:
    return [
        (capture_state(k, f"{path}[{k!r}]", seen), capture_state(x, f"{path}[{k!r}]", seen))
        for k, x in value.items()
    ]


_MISSING = object()


def restore_state(saved: object, fresh: object, path: str, restored: dict[str, object]) -> object:
    """The value that ``saved`` encodes, written into ``fresh`` (what the new build holds
    there, or ``_MISSING``) if that is a pycma object; ``restored`` maps paths to the objects
    restored so far (the targets of refs)."""
    if type(saved) in _PLAIN:
        return saved
    if isinstance(saved, np.ndarray):
        if saved.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"cmaes state: attribute {path!r} is a {saved.dtype} array")
        value = np.array(saved, copy=True)
        restored[path] = value
        return value
    if type(saved) is tuple:
        return tuple(
            restore_state(x, _item(fresh, i), f"{path}[{i}]", restored) for i, x in enumerate(saved)
        )
    if type(saved) is list:
        value = []
        restored[path] = value
        value.extend(
            restore_state(x, _item(fresh, i), f"{path}[{i}]", restored) for i, x in enumerate(saved)
        )
        return value
    kind = saved.get("kind") if type(saved) is dict else None
    if kind == "numpy_scalar":
        return _numeric(saved["value"], path, ndim=0)[()]
    if kind == "numpy_scalars":
        value = list(_numeric(saved["value"], path, ndim=1))
        restored[path] = value
        return value
    if kind == "range":
        return range(*saved["value"])
    if kind == "ref":
        if saved["path"] not in restored:
            raise ValueError(f"cmaes state: attribute {path!r} refers to unknown {saved['path']!r}")
        return restored[saved["path"]]
    if kind == "dict":
        value = {}
        restored[path] = value
        value.update(_restore_items(saved["items"], fresh, path, restored))
        return value
    if kind == "generator":
        if not isinstance(fresh, np.random.Generator):
            raise ValueError(f"cmaes state: attribute {path!r} is not a numpy Generator here")
        state = restore_state(saved["state"], _MISSING, f"{path}.bit_generator.state", {})
        if state.get("bit_generator") != fresh.bit_generator.state["bit_generator"]:
            raise ValueError(f"cmaes state: attribute {path!r} has another bit generator")
        fresh.bit_generator.state = state
        restored[path] = fresh
        return fresh
    if kind == "code":
        if fresh is _MISSING or _is_state_object(fresh) or not callable(fresh):
            raise ValueError(f"cmaes state: attribute {path!r} holds code this pycma does not")
        if _code_name(fresh) != saved["name"]:
            raise ValueError(
                f"cmaes state: attribute {path!r} is {saved['name']} in the checkpoint but "
                f"{_code_name(fresh)} here"
            )
        return fresh
    if kind == "object":
        return _restore_object(saved, fresh, path, restored)
    raise ValueError(f"cmaes state: attribute {path!r} has an unknown encoding")


def _restore_object(saved: dict, fresh: object, path: str, restored: dict[str, object]) -> object:
    name = saved["class"]
    if fresh is _MISSING or not _is_state_object(fresh) or _class_name(fresh) != name:
        if name not in _CREATED_DURING_RUN:
            here = "nothing" if fresh is _MISSING else _class_name(fresh)
            raise ValueError(
                f"cmaes state: attribute {path!r} is a {name} in the checkpoint, but this "
                f"pycma builds {here} there"
            )
        fresh = _CREATED_DURING_RUN[name]()
    restored[path] = fresh
    if isinstance(fresh, dict):
        items = _restore_items(saved["items"], fresh, path, restored)
        dict.clear(fresh)  # dict's own methods: pycma's CMAOptions overrides some
        dict.update(fresh, items)
    elif isinstance(fresh, list):
        items = [
            restore_state(x, _item(fresh, i), f"{path}[{i}]", restored)
            for i, x in enumerate(saved["items"])
        ]
        list.clear(fresh)
        list.extend(fresh, items)
    attrs = vars(fresh)
    missing = [k for k in attrs if k not in saved["attrs"]]
    if missing:
        raise ValueError(
            f"cmaes state: attribute {_join(path, missing[0])!r} missing from the checkpoint"
        )
    for k, x in saved["attrs"].items():
        attrs[k] = restore_state(x, attrs.get(k, _MISSING), _join(path, k), restored)
    return fresh


def _restore_items(items: list, fresh: object, path: str, restored: dict[str, object]) -> dict:
    out = {}
    for k, x in items:
        key = restore_state(k, _MISSING, f"{path}[{k!r}]", restored)
        try:
            here = dict.get(fresh, key, _MISSING) if isinstance(fresh, dict) else _MISSING
        except TypeError as e:
            raise ValueError(f"cmaes state: attribute {path!r} has an unhashable key") from e
        out[key] = restore_state(x, here, f"{path}[{key!r}]", restored)
    return out


def _item(container: object, i: int) -> object:
    if isinstance(container, list | tuple) and i < len(container):
        return container[i]
    return _MISSING


def _numeric(value: object, path: str, ndim: int) -> np.ndarray:
    if (
        not isinstance(value, np.ndarray)
        or value.dtype.kind not in _NUMERIC_KINDS
        or value.ndim != ndim
    ):
        raise ValueError(f"cmaes state: attribute {path!r} is not a {ndim}-d numeric array")
    return value
