"""Run configuration: one validated dataclass, loaded from TOML and overridden by CLI flags.

Defaults follow the SVPG paper's CartPole setting (16 particles, α = 10, 10,000 env steps per
particle per iteration, 50 iterations, MLP 100-50-25 tanh, Adam lr 5e-3 as in the original code).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from evo_svpg.estimators import ESTIMATORS
from evo_svpg.policy import ACTIVATIONS, OBS_SCALINGS
from evo_svpg.svgd import BANDWIDTH_CONVENTIONS


def _doc(text: str, default: Any) -> Any:
    """A field with a default and a one-line description (shown by ``evo-svpg run --help``)."""
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run; saved as ``config.json`` next to its results."""

    mode: str = _doc("composition of operators, see `evo-svpg modes`", "pure")
    env: str = _doc("gymnasium id (fast path: CartPole-v1, Acrobot-v1, ...)", "CartPole-v1")
    particles: int = _doc("number of policies n in the population", 16)
    iterations: int = _doc("training iterations", 50)
    steps_per_particle: int = _doc("env steps per particle per iteration (seed: 10,000)", 10_000)
    envs_per_particle: int = _doc("parallel envs per particle; must divide the steps", 20)
    alpha: float = _doc("SVPG temperature α: ∇J is divided by α (seed: 10)", 10.0)
    estimator: str = _doc("policy-gradient estimator", "reinforce")
    bandwidth: str | float = _doc("kernel bandwidth: a convention name or a positive h", "svgd")
    lr: float = _doc("Adam learning rate on the [n, d] particles (original code: 5e-3)", 5e-3)
    gamma: float = _doc("discount factor γ", 0.99)
    gae_lambda: float = _doc("GAE λ (a2c only)", 0.95)
    hidden_sizes: tuple[int, ...] = _doc("policy MLP hidden sizes (seed: 100,50,25)", (100, 50, 25))
    activation: str = _doc("hidden activation", "tanh")
    obs_scaling: str = _doc("policy input: raw obs, or obs bounds mapped to [-1, 1]", "none")
    critic_hidden_sizes: tuple[int, ...] = _doc("critic MLP hidden sizes (a2c only)", (64, 64))
    critic_lr: float = _doc("critic Adam learning rate (a2c only)", 1e-3)
    critic_epochs: int = _doc("critic passes over each iteration's data (a2c only)", 2)
    seed: int = _doc("random seed; the same seed gives the same metrics.csv", 0)
    device: str = _doc("torch device for the gradient computation", "cpu")
    checkpoint_every: int = _doc("iterations between checkpoints (and at the end)", 5)
    threads: int = _doc("particle shards computed in parallel threads (results don't change)", 2)
    budget: int = _doc("stop once this many env steps are spent (0: `iterations` alone)", 0)
    # -- evolutionary extensions (README "Modes"); sources of the defaults in the docs ---------
    eval_episodes: int = _doc("fresh episodes per evaluated candidate (CEM-RL, ERL: 1)", 1)
    final_eval_episodes: int = _doc(
        "fresh episodes per particle after training, not charged to env_steps (0: none)", 10
    )
    cem_candidates: int = _doc("K sampled candidates per particle, cem/cmaes (even)", 8)
    cem_elites: int = _doc("elites among the K+1 evaluated (CEM-RL: half the population)", 4)
    cem_init_var: float = _doc("initial per-parameter variance (CEM-RL sigma_init)", 1e-3)
    cem_floor: float = _doc("initial variance floor; ×0.95 toward cem_floor_limit (CEM-RL)", 1e-3)
    cem_floor_limit: float = _doc("limit of the decaying variance floor (CEM-RL)", 1e-5)
    cmaes_sigma0: float = _doc("initial CMA-ES step size (√ of cem_init_var by default)", 0.0316)
    select_every: int = _doc("iterations between selections (select)", 10)
    select_fraction: float = _doc("worst fraction replaced at each selection (select)", 0.25)
    select_tournament: int = _doc("tournament size among the survivors (select; ERL: 3)", 3)
    select_mutation_std: float = _doc("std of the Gaussian mutation of copies (select)", 0.005)
    evolution_every: int = _doc("iterations between replacements (original SVPG code: 20)", 20)
    evolution_fraction: float = _doc("bottom fraction overwritten (original SVPG code: 0.25)", 0.25)
    evolution_noise: float = _doc("c in copy + c·(U[0,1) − 0.5) (original SVPG code: 0.01)", 0.01)
    erl_population: int = _doc("actors of the evolutionary population (ERL: 10)", 10)
    erl_elite_fraction: float = _doc("elite fraction of that population (ERL: 0.1-0.3)", 0.2)
    erl_tournament: int = _doc("tournament size of ERL's selection (ERL: 3)", 3)
    erl_sync_every: int = _doc("iterations between copies of particles into it (ERL: 1-10)", 5)
    erl_migrants: int = _doc("best SVPG particles copied over its worst members per sync", 2)
    # -- novelty and quality diversity (README "Novelty and quality diversity") ---------------
    max_episode_steps: int = _doc("episode time limit; 0: gymnasium's (MountainCar: 200)", 0)
    descriptor: str = _doc("behaviour descriptor of an episode (novelty, QD archive)", "extremes")
    novelty_k: int = _doc("nearest neighbours averaged by novelty (NS-ES: 10)", 10)
    archive_size: int = _doc("novelty archive bound; the oldest entry goes first", 100_000)
    novelty_weight: float = _doc("weight of z(novelty) vs z(return) (novelty-reward)", 0.5)
    qd_every: int = _doc("iterations between deterministic success tests; 0: no QD records", 0)
    qd_eval_episodes: int = _doc("episodes per particle in a deterministic success test", 1)
    qd_cells: int = _doc("grid-archive cells per descriptor dimension", 32)
    qd_offset: float = _doc("QD-score offset: Σ over filled cells of (best − offset)", 0.0)

    def __post_init__(self) -> None:
        from evo_svpg.modes import MODES  # modes import operators, which import this module

        _choice("mode", self.mode, tuple(MODES))
        MODES[self.mode].validate(self)
        _choice("estimator", self.estimator, ESTIMATORS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("obs_scaling", self.obs_scaling, OBS_SCALINGS)
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env={self.env!r} must be a gymnasium id such as 'CartPole-v1'")
        _nonnegative_int("seed", self.seed)
        _nonnegative_int("final_eval_episodes", self.final_eval_episodes)
        for name in ("particles", "iterations", "steps_per_particle", "envs_per_particle"):
            _positive_int(name, getattr(self, name))
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("critic_epochs", self.critic_epochs)
        _positive_int("threads", self.threads)
        self._validate_extensions()
        if self.steps_per_particle % self.envs_per_particle:
            raise ValueError(
                f"steps_per_particle={self.steps_per_particle} must be a multiple of "
                f"envs_per_particle={self.envs_per_particle} (every env takes the same "
                "number of steps per iteration)"
            )
        for name in ("alpha", "lr", "critic_lr"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name}={value!r} must be a number in [0, 1]")
        for name in ("hidden_sizes", "critic_hidden_sizes"):
            sizes = getattr(self, name)
            if (
                not isinstance(sizes, tuple | list)
                or not sizes
                or not all(type(h) is int and h > 0 for h in sizes)
            ):
                shown = list(sizes) if isinstance(sizes, tuple) else sizes
                raise ValueError(f"{name}={shown!r} must be a non-empty list of positive ints")
        if isinstance(self.bandwidth, str):
            _choice("bandwidth", self.bandwidth, BANDWIDTH_CONVENTIONS, "or a positive number")
        elif not _is_number(self.bandwidth) or not 0 < self.bandwidth < math.inf:
            raise ValueError(
                f"bandwidth={self.bandwidth!r} must be a positive number or one of "
                f"{BANDWIDTH_CONVENTIONS}"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device={self.device!r} must be a torch device name such as 'cpu'")

    def _validate_extensions(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 0:
            raise ValueError(f"budget={self.budget!r} must be an integer >= 0 (0: no budget)")
        for name in (
            "eval_episodes", "cem_elites", "select_every", "select_tournament",
            "evolution_every", "erl_population", "erl_tournament", "erl_sync_every",
            "erl_migrants",
        ):  # fmt: skip
            _positive_int(name, getattr(self, name))
        _positive_int("cem_candidates", self.cem_candidates)
        if self.cem_candidates % 2:
            raise ValueError(
                f"cem_candidates={self.cem_candidates} must be even (mirrored sampling draws "
                "candidates in ± pairs)"
            )
        if self.cem_elites > self.cem_candidates + 1:
            raise ValueError(
                f"cem_elites={self.cem_elites} must be <= cem_candidates + 1 = "
                f"{self.cem_candidates + 1} (the candidates plus the particle itself)"
            )
        for name in ("cem_init_var", "cem_floor", "cmaes_sigma0", "select_mutation_std"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        for name in ("cem_floor_limit", "evolution_noise"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ValueError(f"{name}={value!r} must be a finite number >= 0")
        for name in ("select_fraction", "evolution_fraction", "erl_elite_fraction"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < 1:
                raise ValueError(f"{name}={value!r} must be a number in (0, 1)")
        self._validate_novelty()
        elites = erl_elites(self)
        if self.erl_migrants > self.erl_population - elites:
            raise ValueError(
                f"erl_migrants={self.erl_migrants} must be <= erl_population - elites = "
                f"{self.erl_population - elites} (migrants never overwrite the elites)"
            )

    def _validate_novelty(self) -> None:
        from evo_svpg.behaviour import DESCRIPTORS

        _choice("descriptor", self.descriptor, tuple(DESCRIPTORS))
        for name in ("novelty_k", "archive_size", "qd_eval_episodes", "qd_cells"):
            _positive_int(name, getattr(self, name))
        for name in ("max_episode_steps", "qd_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0 (0: off/default)")
        if not _is_number(self.novelty_weight) or not 0 < self.novelty_weight < 1:
            raise ValueError(
                f"novelty_weight={self.novelty_weight!r} must be a number in (0, 1) (the mode "
                "`novelty` is weight 1, `pure` is weight 0)"
            )
        if not _is_number(self.qd_offset) or not math.isfinite(self.qd_offset):
            raise ValueError(f"qd_offset={self.qd_offset!r} must be a finite number")

    def subseed(self, stream: int) -> int:
        """Independent seed of random stream ``stream`` (sampler, evaluator, CEM, ...)."""
        return int(np.random.SeedSequence([self.seed, stream]).generate_state(1)[0])

    @property
    def steps_per_env(self) -> int:
        return self.steps_per_particle // self.envs_per_particle

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from plain data (TOML/JSON); unknown keys are an error listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}")
        data = dict(data)
        for name in ("hidden_sizes", "critic_hidden_sizes"):
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(load_toml(path), source=str(path))


def erl_elites(cfg: RunConfig) -> int:
    """Elites of ERL's population: ``int(fraction · size)``, at least 1 (as in ERL's code)."""
    return max(1, fraction_count(cfg.erl_elite_fraction, cfg.erl_population))


def fraction_count(fraction: float, n: int) -> int:
    """``floor(fraction · n)``, robust to float error (0.29 × 100 is 28.999…, counted as 29)."""
    return math.floor(fraction * n + 1e-9)


def replaces_at_least_one(cfg: RunConfig, name: str) -> None:
    """Selection of ``int(fraction · particles)`` particles must select someone."""
    value = getattr(cfg, name)
    if fraction_count(value, cfg.particles) < 1:
        raise ValueError(
            f"{name}={value!r} replaces int({value!r} × particles={cfg.particles}) = 0 "
            f"particles; use at least {1 / cfg.particles:.3g} or more particles"
        )


def migrants_fit(cfg: RunConfig) -> None:
    """ERL copies ``erl_migrants`` distinct particles per sync: there must be that many."""
    if cfg.erl_migrants > cfg.particles:
        raise ValueError(
            f"erl_migrants={cfg.erl_migrants} must be <= particles={cfg.particles} (each sync "
            "copies that many distinct particles)"
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file; any problem becomes a ValueError naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config {path} is not valid TOML: {exc}") from exc


def field_docs() -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in fields(RunConfig)}


def _choice(name: str, value: Any, valid: tuple[str, ...], extra: str = "") -> None:
    if value not in valid:
        tail = f" {extra}" if extra else ""
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}{tail}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _nonnegative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
