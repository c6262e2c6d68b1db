"""Fresh-episode evaluation of any batch of policies ``[m, d]`` in one batched env call per step.

Candidates of every particle (CEM/CMA-ES samples, an evolutionary population) are evaluated
together: ``m`` policies × ``episodes`` envs each, all reset at once and stepped until every
env has finished one episode (or hit the time limit). Only the steps of those episodes are
counted as spent; envs that finished early keep being stepped for the batch but their
transitions are discarded and not counted (a sequential evaluator would not have taken them).

Policies whose episodes have all ended are dropped from the forward pass once at most half of
the current batch is still running, so a population of short episodes does not pay for the
longest one. Action noise is drawn for all ``m`` policies every step, so this compaction changes
the cost, never the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from evo_svpg.behaviour import Describer
from evo_svpg.envs import BatchedEnv, make_batched_env
from evo_svpg.envs.base import ObservationRoles
from evo_svpg.policy import (
    PolicySpec,
    action_noise,
    actions_from_noise,
    forward_numpy,
    keyed_action_noise,
)
from evo_svpg.settings import Settings, positive_int, register_settings, setting
from evo_svpg.streams import ParticleStreams, ResetDraws

logger = logging.getLogger("evo_svpg")


@register_settings
@dataclass(frozen=True)
class EvaluationSettings(Settings):
    """Used by every operator that ``needs`` the evaluator (CEM, CMA-ES, ERL)."""

    section, title = "evaluation", "fresh-episode evaluation of candidates"
    eval_episodes: int = setting(
        1, "fresh episodes per evaluated candidate (CEM-RL, ERL: 1)", key="eval_episodes",
        check=positive_int,
    )  # fmt: skip


@dataclass
class EvalEpisodes:
    """The evaluated episodes of ``m`` policies × ``e`` episodes each."""

    returns: np.ndarray  # [m, e] float64 undiscounted
    terminated: np.ndarray  # [m, e] bool: ended in a terminal state (MountainCar: the goal)
    steps: int  # env steps of these episodes
    descriptors: np.ndarray | None  # [m, e, D] behaviour descriptors, if the evaluator has one


class EvaluationLog:
    """Every evaluated batch kept until :meth:`take_log` when ``log`` is a list (the QD grid
    archive is offered every episode a run pays for); None keeps nothing."""

    log: list[EvalEpisodes] | None = None

    def _logged(self, result: EvalEpisodes) -> EvalEpisodes:
        if self.log is not None:
            self.log.append(result)
        return result

    def take_log(self) -> list[EvalEpisodes]:
        """The batches evaluated since the last call (empty unless ``log`` is a list)."""
        if self.log is None:
            return []
        taken, self.log = self.log, []
        return taken


@dataclass(frozen=True)
class EvaluatorSpec:
    """An :class:`Evaluator` as data: the learner and every worker build the same one from it
    (:meth:`build`), so an operator's evaluations can be shared out over particle shards."""

    env_id: str
    policy: PolicySpec
    episodes: int
    seed: int
    deterministic: bool = False
    descriptor: str | None = None
    roles: ObservationRoles | None = None
    max_episode_steps: int | None = None
    random_streams: str = "shared"
    log: bool = False  # keep every evaluated batch until ``take_log()`` (the QD grid archive)

    def build(self) -> Evaluator:
        evaluator = Evaluator(
            self.env_id, self.policy, self.episodes, self.seed,
            deterministic=self.deterministic, descriptor=self.descriptor, roles=self.roles,
            max_episode_steps=self.max_episode_steps, random_streams=self.random_streams,
        )  # fmt: skip
        if self.log:
            evaluator.log = []
        return evaluator


class Evaluator(EvaluationLog):
    """Mean undiscounted return of ``episodes`` fresh episodes per policy.

    Actions are drawn from the stochastic policy, as in training, so the evaluated fitness is
    the objective J that the policy gradient climbs; ``deterministic`` takes the most likely
    action (argmax logits, or the Gaussian mean) instead, to test what a policy *does*. One
    batched env is kept per batch size ``m`` (created on first use). With ``random_streams =
    "shared"`` its random stream continues across calls; with ``"per-particle"`` row ``i`` of
    the ``c``-th call draws its actions and resets from streams keyed (seed, i, c)
    (:mod:`evo_svpg.streams`), so rows evaluated apart (a worker's share, ``first``) get what
    they would get in one batch. With a ``descriptor`` name every episode is also described.
    """

    def __init__(
        self,
        env_id: str,
        spec: PolicySpec,
        episodes: int,
        seed: int,
        compact: bool = True,
        *,
        deterministic: bool = False,
        descriptor: str | None = None,
        roles: ObservationRoles | None = None,
        max_episode_steps: int | None = None,
        random_streams: str = "shared",
    ) -> None:
        if episodes < 1:
            raise ValueError(f"episodes={episodes} must be >= 1")
        self.env_id, self.spec, self.episodes, self.seed = env_id, spec, episodes, seed
        self.compact, self.deterministic, self.descriptor = compact, deterministic, descriptor
        self.roles = roles  # the (x, v) entries the descriptor reads; None: the env's own
        self.max_episode_steps = max_episode_steps
        self.log = None  # a list: keep every evaluated batch until take_log() (EvaluationLog)
        self._resumed = False
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        self._envs: dict[int, BatchedEnv] = {}
        self.per_particle = random_streams == "per-particle"
        self.calls = 0  # per-particle streams: evaluations so far, the key of the next
        self._reset_draws: dict[int, ResetDraws] = {}
        self._pending_env_states: dict[int, dict] = {}
        if not spec.discrete:
            self._low = np.asarray(spec.action_low, dtype=np.float32)
            self._high = np.asarray(spec.action_high, dtype=np.float32)

    def _env(self, m: int) -> BatchedEnv:
        env = self._envs.get(m)
        if env is None:
            seed = int(np.random.SeedSequence([self.seed, 1, m]).generate_state(1)[0])
            env = make_batched_env(
                self.env_id, m * self.episodes, seed=seed, max_episode_steps=self.max_episode_steps
            )
            if self.per_particle and env.is_fast_path:
                self._reset_draws[m] = ResetDraws(ParticleStreams(self.seed, 0, m), self.episodes)
                env.use_reset_draws(self._reset_draws[m])
            if not env.max_episode_steps:
                raise ValueError(
                    f"{self.env_id} has no time limit: evaluating candidates needs episodes "
                    "that end (register the env with max_episode_steps)"
                )
            if m in self._pending_env_states:
                env.set_state(self._pending_env_states.pop(m))
            elif self._resumed and not env.is_fast_path:
                # Generic envs cannot be snapshotted: continue from a fresh seed rather than
                # replay the start states of the run's first evaluations.
                logger.warning(
                    "%s is on the generic gymnasium path: the resumed run's evaluation episodes "
                    "start from a fresh seed, so it is not bit-identical to an uninterrupted one",
                    self.env_id,
                )
                env.reset(seed=int(self.rng.integers(2**31)))
            self._envs[m] = env
        return env

    def returns(self, theta: np.ndarray) -> tuple[np.ndarray, int]:
        """``(mean return [m] float64, env steps spent)`` of the policies ``theta [m, d]``."""
        result = self.episodes_of(theta)
        return result.returns.mean(axis=1), result.steps

    def episodes_of(self, theta: np.ndarray, first: int = 0) -> EvalEpisodes:
        """One fresh episode per env for the policies ``theta [m, d]``, all in one batch;
        ``first``: the index of row 0 among the call's candidates (per-particle streams)."""
        theta = np.ascontiguousarray(theta, dtype=np.float32)
        m, e, spec = theta.shape[0], self.episodes, self.spec
        streams = self._start_call(first, m)
        if m == 0:  # a worker's empty share: the call still counts
            empty = np.zeros((0, e))
            return EvalEpisodes(empty, empty.astype(bool), 0, None)
        env = self._env(m)
        draws = self._reset_draws.get(m)
        if draws is not None:
            draws.streams, draws.step = streams, 0
        describer = None
        if self.descriptor is not None:
            describer = Describer.for_env(self.descriptor, spec, env, roles=self.roles)
        if streams is not None and draws is None:  # generic env: slots seeded as in one batch
            obs = env.reset(seed=streams.generic_reset_seed(e))
        else:
            obs = env.reset()
        t = 0
        running = np.ones((m, e), dtype=bool)  # episode still going
        terminated = np.zeros((m, e), dtype=bool)
        total = np.zeros((m, e), dtype=np.float64)
        length = np.zeros((m, e), dtype=np.int64)
        active = np.arange(m)  # policies in the forward batch (a superset of the running ones)
        parts = spec.split(theta)
        if spec.discrete:
            actions = np.zeros((m, e), dtype=np.int64)
        else:
            actions = np.zeros((m, e, spec.act_dim), dtype=np.float32)
        while True:  # every episode ends: fast-path envs all have gymnasium's time limit
            obs_active = obs.reshape(m, e, spec.obs_dim)[active]
            out = forward_numpy(spec, parts, obs_active)
            log_std = None if spec.discrete else parts[-1]
            actions[active] = self._actions(out, log_std, m, active, streams, t)
            actions[~running] = 0  # finished slots: a fixed action, whichever rows were computed
            if spec.discrete:
                env_actions = actions.reshape(m * e)
            else:
                env_actions = np.clip(actions, self._low, self._high).reshape(m * e, -1)
            if draws is not None:
                draws.step = t + 1  # row 0 was the reset
            t += 1
            res = env.step(env_actions)
            if describer is not None:
                rows = np.flatnonzero(running)
                flat_actions = actions.reshape(m * e, *actions.shape[2:])
                feats = describer.step_features(obs[rows], res.final_obs[rows], flat_actions[rows])
                describer.acc.update(feats, rows)
            total += res.reward.reshape(m, e) * running
            length += running
            terminated |= res.terminated.reshape(m, e) & running
            running &= ~(res.terminated | res.truncated).reshape(m, e)
            obs = res.obs
            still = running[active].any(axis=1)
            if not still.any():
                break
            if self.compact and 2 * int(still.sum()) <= active.size:
                active = active[still]
                parts = spec.split(theta[active])
        descriptors = None if describer is None else describer.acc.peek().reshape(m, e, -1)
        return self._logged(EvalEpisodes(total, terminated, int(length.sum()), descriptors))

    def _start_call(self, first: int, m: int) -> ParticleStreams | None:
        """Per-particle streams: this call's, keyed by its number (every worker counts every
        call, even with no rows of it)."""
        if not self.per_particle:
            return None
        streams = ParticleStreams(self.seed, first, m)
        streams.rollouts = self.calls
        streams.start()
        self.calls += 1
        return streams

    def _actions(
        self, out: np.ndarray, log_std, m: int, active: np.ndarray,
        streams: ParticleStreams | None, t: int,
    ) -> np.ndarray:  # fmt: skip
        if self.deterministic:
            return out.argmax(axis=-1) if self.spec.discrete else out
        # Noise for all m policies every step: compaction changes the cost, never the result.
        if streams is None:
            noise = action_noise(self.spec, (m, *out.shape[1:]), self.rng)[active]
        else:
            noise = keyed_action_noise(self.spec, streams, t, out.shape[1:])[active]
        return actions_from_noise(self.spec, out, log_std, noise)

    def state_dict(self) -> dict:
        if self.per_particle:  # the envs are reset for every call and draw nothing of their own
            return {"calls": self.calls}
        envs = {m: env.get_state() for m, env in self._envs.items() if env.is_fast_path}
        return {"rng": self.rng.bit_generator.state, "envs": {**self._pending_env_states, **envs}}

    def load_state_dict(self, state: dict) -> None:
        if ("calls" in state) != self.per_particle:
            kinds = ("one shared stream", "per-particle streams")
            raise ValueError(
                f"the checkpoint's evaluator drew from {kinds['calls' in state]}, this run's "
                f"from {kinds[self.per_particle]}"
            )
        if self.per_particle:
            self.calls = int(state["calls"])
            return
        self.rng.bit_generator.state = state["rng"]
        self._resumed = True
        self._envs.clear()
        self._pending_env_states = dict(state["envs"])
