"""The package's shape: no import cycles, and registries that the CLI and the run agree on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from evo_svpg.config import RunConfig, all_keys
from evo_svpg.registry import DESCRIPTORS, ESTIMATORS, FAST_PATHS, MODES, OPERATORS, SECTIONS

PACKAGE = Path(__file__).resolve().parents[1] / "evo_svpg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module → evo_svpg modules it imports``, from every import statement in the file,
    function-level ones included (``from pkg import name`` counts as importing ``pkg.name``
    when that is a module, else ``pkg``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    target = child if child in modules else node.module
                    if target in modules:
                        edges.add(target)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30
    assert "evo_svpg.engine" in graph["evo_svpg.cli"]  # it sees imports
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_components_never_import_the_run_config_or_the_engine():
    """Components receive their settings; they never reach for the central modules."""
    graph = import_graph()
    central = {"evo_svpg.config", "evo_svpg.engine", "evo_svpg.cli", "evo_svpg.modes"}
    for module, edges in graph.items():
        if module.startswith(("evo_svpg.operators", "evo_svpg.estimators", "evo_svpg.envs")):
            assert not edges & central, (module, edges & central)


def test_every_settings_key_is_a_flag_and_belongs_to_one_section():
    keys = all_keys()
    assert len(keys) == len(set(keys))  # no two sections own the same key
    from evo_svpg.cli import _parser

    run = next(a for a in _parser()._subparsers._group_actions[0].choices.values()
               if a.prog.endswith("run"))  # fmt: skip
    flags = {opt for action in run._actions for opt in action.option_strings}
    assert {"--" + k.replace("_", "-") for k in keys} <= flags


def test_every_registered_component_is_reachable_by_name():
    for name in MODES:
        for op in MODES[name].operators:
            assert op in OPERATORS
    for name, entry in [*OPERATORS.items(), *ESTIMATORS.items()]:
        assert entry.name == name
        assert entry.doc
        for section in entry.sections:
            assert section in SECTIONS
    assert set(ESTIMATORS) == {"reinforce", "a2c", "linear-baseline"}
    assert {"extremes", "final_state", "gep"} <= set(DESCRIPTORS)
    assert "CartPole-v1" in FAST_PATHS


def test_a_mode_does_not_validate_settings_of_components_it_does_not_use():
    cfg = RunConfig(mode="pure", erl_population=2, erl_migrants=2)  # ERL would refuse these
    assert cfg.used_sections == ["sampling", "svgd", "adam"]
    assert cfg.unused_changes() == {"erl_population": 2}
    with pytest.raises(ValueError, match=r"erl_migrants=2 must be <= erl_population - elites"):
        cfg.replace(mode="erl")
    with pytest.raises(ValueError, match=r"erl_population=0 must be a positive integer"):
        RunConfig(mode="pure", erl_population=0)  # a setting's own range: checked in any mode


def test_config_tables_flat_keys_and_config_json_are_the_same_config():
    flat = RunConfig(mode="cem-per-particle", cem_candidates=4, alpha=3.0)
    nested = RunConfig.from_dict({"mode": "cem-per-particle", "cem": {"candidates": 4},
                                  "svgd": {"alpha": 3.0}})  # fmt: skip
    assert flat == nested == RunConfig.from_dict(flat.to_nested())
    shown = flat.to_nested()
    assert (shown["cem"]["candidates"], shown["svgd"]["alpha"]) == (4, 3.0)
    assert "erl" in shown["unused"]
    assert "cem" not in shown["unused"]
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['size'\] in section \[cem\]"):
        RunConfig.from_dict({"cem": {"size": 4}})
    with pytest.raises(AttributeError, match=r"cfg\['cem'\].candidates"):
        _ = flat.cem_candidates


def test_a_key_given_flat_and_in_its_table_must_agree():
    with pytest.raises(ValueError, match=r"alpha is given twice, 5 and 7"):
        RunConfig.from_dict({"alpha": 5, "svgd": {"alpha": 7}})
    assert RunConfig.from_dict({"alpha": 5, "svgd": {"alpha": 5}})["svgd"].alpha == 5


def test_two_sections_cannot_own_one_key():
    import dataclasses

    from evo_svpg.settings import Settings, register_settings, setting

    @dataclasses.dataclass(frozen=True)
    class Clash(Settings):
        section = "clash"
        size: int = setting(1, "a size", key="archive_size")  # novelty's key

    with pytest.raises(ValueError, match=r"declares key\(s\) \['archive_size'\], which section "
                       r"'novelty'"):  # fmt: skip
        register_settings(Clash)
    assert "clash" not in SECTIONS


def test_an_every_operators_writes_do_not_count_for_the_iterations_in_between():
    from evo_svpg.engine import check_composition
    from evo_svpg.operators import (
        AdamAscent,
        CollectRollouts,
        Every,
        OwnGradient,
        PolicyGradient,
    )  # fmt: skip
    from evo_svpg.policy import PolicySpec

    ops = [CollectRollouts(), PolicyGradient(), Every(2, OwnGradient()), AdamAscent(1e-3)]
    with pytest.raises(ValueError, match=r"operator 3 \(AdamAscent\) reads \['direction'\]"):
        check_composition(RunConfig(), PolicySpec(4, 2, True), ops,
                          ESTIMATORS["reinforce"].capabilities)  # fmt: skip


def test_a_config_survives_copy_and_pickle():
    import copy
    import pickle

    cfg = RunConfig(mode="cem-per-particle", cem_candidates=4)
    assert copy.deepcopy(cfg) == cfg == pickle.loads(pickle.dumps(cfg))
    assert pickle.loads(pickle.dumps(cfg))["cem"].candidates == 4
