"""The README's component tables are the registries' content (regenerate with
``python tests/test_readme_tables.py``, which prints them)."""

from __future__ import annotations

from pathlib import Path

from evo_svpg.registry import ESTIMATORS, MODES, OPERATORS

README = Path(__file__).resolve().parents[1] / "README.md"


def operator_order() -> list[str]:
    """Operators in order of first use by the modes, then the rest (measures)."""
    seen = [op for mode in MODES for op in MODES[mode].operators]
    ordered = list(dict.fromkeys(seen))
    return ordered + [name for name in OPERATORS if name not in ordered]


def _sections(entry) -> str:
    return ", ".join(f"`{s}`" for s in entry.sections) or "—"


def component_tables() -> str:
    lines = ["| operator | what it does | settings sections |", "|---|---|---|"]
    for name in operator_order():
        entry = OPERATORS[name]
        lines.append(f"| `{name}` | {entry.doc} | {_sections(entry)} |")
    lines += [
        "",
        "| estimator | what it is | settings sections | action spaces | episode-level signals |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(ESTIMATORS):
        entry, caps = ESTIMATORS[name], ESTIMATORS[name].capabilities
        spaces = ", ".join(sorted(caps.action_spaces))
        signal = "yes" if caps.episode_signal else "no"
        lines.append(f"| `{name}` | {entry.doc} | {_sections(entry)} | {spaces} | {signal} |")
    return "\n".join(lines)


def test_readme_lists_exactly_the_registered_operators_and_estimators():
    assert component_tables() in README.read_text()


if __name__ == "__main__":
    print(component_tables())


def test_readme_names_every_fast_path_env_and_descriptor():
    from evo_svpg.registry import DESCRIPTORS, FAST_PATHS

    text = README.read_text()
    for name in [*FAST_PATHS, *DESCRIPTORS]:
        assert f"`{name}`" in text, name
