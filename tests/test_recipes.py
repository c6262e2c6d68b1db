"""The README's recipes (an operator, an estimator, an environment) run as written, and each
adds a working component with one registry entry. Registrations are undone afterwards."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium
import pytest

from evo_svpg import registry

README = Path(__file__).resolve().parents[1] / "README.md"
REGISTRIES = [getattr(registry, name) for name in (
    "SECTIONS", "OPERATORS", "ESTIMATORS", "MODES", "FAST_PATHS", "DESCRIPTORS",
    "OBSERVATION_ROLES",
)]  # fmt: skip


def recipes() -> dict[str, str]:
    text = README.read_text()
    section = text[text.index("## Recipes") : text.index("\n## ", text.index("## Recipes") + 1)]
    blocks = re.findall(r"^### (.+?)\n.*?```python\n(.*?)```", section, flags=re.M | re.S)
    return dict(blocks)


@pytest.fixture
def registries_restored():
    before = [set(r.names()) for r in REGISTRIES]
    envs = set(gymnasium.registry)
    yield
    for reg, names in zip(REGISTRIES, before, strict=True):
        for name in set(reg.names()) - names:
            reg.remove(name)
    for env_id in set(gymnasium.registry) - envs:
        del gymnasium.registry[env_id]


def _run(name: str) -> dict:
    namespace: dict = {}
    exec(compile(recipes()[name], f"README.md ({name})", "exec"), namespace)
    return namespace


def test_the_readme_has_the_three_recipes():
    assert list(recipes()) == ["An operator", "An estimator", "An environment"]


def test_operator_recipe(registries_restored):
    ns = _run("An operator")
    run = ns["run"]
    assert run.state.iteration == 4
    assert run.state.env_steps > 4 * 4 * 1000  # the perturbations' evaluations were paid for
    assert "perturb" in registry.MODES
    assert run.config["perturb"].every == 2


def test_estimator_recipe(registries_restored):
    ns = _run("An estimator")
    assert "reinforce-baseline" in registry.ESTIMATORS
    assert ns["cfg"]["baseline"].decay == 0.8


def test_environment_recipe(registries_restored):
    ns = _run("An environment")
    assert registry.FAST_PATHS["recipes/PointMass-v0"] is ns["PointMassBatchedEnv"]


def test_the_recipe_checks_reject_a_broken_twin(registries_restored):
    ns = _run("An environment")

    class Drifting(ns["PointMassBatchedEnv"]):
        def _advance(self, actions):
            obs, reward, terminated = super()._advance(actions)
            return obs, reward + 1e-9, terminated

    registry.FAST_PATHS.remove("recipes/PointMass-v0")
    ns["register_fast_path"](Drifting)
    with pytest.raises(AssertionError, match=r"step 1: reward"):
        ns["check_fast_path"]("recipes/PointMass-v0")
    registry.FAST_PATHS.remove("recipes/PointMass-v0")
