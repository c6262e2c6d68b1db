"""Batched on-policy sampler: all particles × all their envs advance in one array step.

``n`` particles each own ``E`` envs of one :class:`~evo_svpg.envs.BatchedEnv` with ``n·E``
slots (particle ``i`` owns slots ``i·E … i·E+E−1``). One :meth:`Sampler.collect` call takes
exactly ``T`` steps in every env, i.e. ``T·E`` transitions per particle.

With ``sampling = "continuing"`` (the default) envs are *not* reset between iterations: an
episode cut at the end of an iteration goes on in the next one, under the updated policy. Its
transitions before the cut are used with ``cut_at_boundary`` set (estimators treat that as a
truncation: REINFORCE cuts the return there, A2C bootstraps from the critic), and its return is
reported in the iteration where it ends.

With ``sampling = "whole-episodes"`` (rllab's ``BatchSampler``) every iteration resets all envs
and each env keeps starting episodes while its particle has taken fewer than
``steps_per_particle`` steps; every episode started is run to its end, so none is cut. The
envs of a particle are stepped together, so an env whose particle has enough steps idles
(stepped with the batch, its steps marked invalid in ``Rollout.valid`` and never counted)
until the particle's other episodes end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from evo_svpg.behaviour import Behaviours, Describer
from evo_svpg.envs import BatchedEnv
from evo_svpg.policy import (
    PolicySpec,
    action_noise,
    actions_from_noise,
    forward_numpy,
    keyed_action_noise,
)
from evo_svpg.settings import Settings, register_settings, setting
from evo_svpg.streams import RANDOM_STREAMS, ParticleStreams, ResetDraws

SAMPLINGS = ("continuing", "whole-episodes")


@register_settings
@dataclass(frozen=True)
class SamplingSettings(Settings):
    section, title = "sampling", "how an iteration's episodes are sampled"
    mode: str = setting(
        "continuing", "continuing: episodes carry over iterations; whole-episodes: as rllab, "
        "none cut (the paper)", key="sampling", choices=lambda: SAMPLINGS,
    )  # fmt: skip
    random_streams: str = setting(
        "per-particle", "per-particle: each particle's actions and each env's resets draw from "
        "streams of their own (any --workers gives the same results); shared: one stream for "
        "all, in slot order (v0.1, and every run saved before this setting existed)",
        key="random_streams", choices=lambda: RANDOM_STREAMS, absent="shared",
    )  # fmt: skip

    @property
    def whole_episodes(self) -> bool:
        return self.mode == "whole-episodes"


logger = logging.getLogger("evo_svpg")


class NonFiniteError(RuntimeError):
    """A NaN or inf appeared in a return, gradient or update; the run must stop."""


@dataclass
class Rollout:
    """One iteration's transitions, time-major: ``[T, n, E, ...]``."""

    obs: np.ndarray  # [T, n, E, obs_dim] float32
    actions: np.ndarray  # [T, n, E] int64 or [T, n, E, act_dim] float32
    rewards: np.ndarray  # [T, n, E] float32
    terminated: np.ndarray  # [T, n, E] bool: true terminal states (no bootstrap)
    truncated: np.ndarray  # [T, n, E] bool: time limit, or cut at the iteration boundary (t = T−1)
    final_obs: np.ndarray  # [T, n, E, obs_dim] float32: next observation before any autoreset
    episode_returns: list[np.ndarray]  # per particle: undiscounted returns of episodes ended here
    episode_lengths: list[np.ndarray]  # per particle: their lengths
    # Every layer's output (post-activation; the last is the logits/means) while sampling,
    # particle-major ``[n, T·E, width]``: the analytic policy gradient backpropagates through them.
    activations: list[np.ndarray] | None = None
    # Behaviour descriptors of the episodes (and cut segments) of this rollout, if the sampler
    # was given a describer (novelty and quality-diversity operators read them).
    behaviours: Behaviours | None = None
    # Set by an operator that scores whole episodes (novelty): ``[T, n, E]`` float64, every step
    # holding its episode segment's signal. REINFORCE then weights each step by it instead of by
    # the discounted return-to-go of ``rewards`` (NS-ES credits a whole episode with its score).
    episode_signal: np.ndarray | None = None
    # ``[T, n, E]`` int64: each step's index within its episode (0 at a reset), counting the
    # steps an episode took in earlier iterations (rllab's time feature of its baseline).
    step_in_episode: np.ndarray | None = None
    # Whole-episode sampling: ``[T, n, E]`` bool, the steps that count (an env idles once its
    # particle has enough steps and its episode has ended); None: every step counts.
    valid: np.ndarray | None = None

    @property
    def n_particles(self) -> int:
        return self.obs.shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, n, E)``: steps, particles, envs per particle."""
        return self.rewards.shape

    @property
    def steps_taken(self) -> int:
        """Env steps this rollout counts (all particles): what ``env_steps`` is charged."""
        if self.valid is None:
            return self.n_particles * self.steps_per_particle
        return int(self.valid.sum())

    @property
    def steps_per_particle(self) -> int:
        return self.obs.shape[0] * self.obs.shape[2]


class Sampler:
    """Owns the envs, their running episodes and the action-sampling RNG of a population."""

    def __init__(
        self,
        env: BatchedEnv,
        spec: PolicySpec,
        n_particles: int,
        seed: int,
        describer: Describer | None = None,
        whole_episodes: bool = False,
        random_streams: str = "shared",
        first_particle: int = 0,
    ) -> None:
        """``first_particle``: the population index of this sampler's particle 0 (a worker's
        shard); only per-particle streams can sample a shard as the whole population would."""
        if env.num_envs % n_particles:
            raise ValueError(f"env has {env.num_envs} slots, not a multiple of {n_particles}")
        if random_streams not in RANDOM_STREAMS:
            raise ValueError(f"random_streams={random_streams!r}; choose one of {RANDOM_STREAMS}")
        if first_particle and random_streams == "shared":
            raise ValueError(
                f"a shard of the population (first_particle={first_particle}) needs "
                "random_streams='per-particle', not 'shared'"
            )
        self.env, self.spec, self.n = env, spec, n_particles
        self.describer = describer
        self.whole_episodes = whole_episodes
        if whole_episodes and describer is not None:
            raise ValueError("whole-episode sampling does not describe behaviours (novelty, QD)")
        self.envs_per_particle = e = env.num_envs // n_particles
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        # Per-particle streams (evo_svpg.streams): rollout 0 is the first reset, rollout c ≥ 1
        # the c-th collect. Reset draws of step t are row t (row 0: a whole-episode rollout's
        # initial reset, then t + 1).
        self.streams: ParticleStreams | None = None
        self.reset_draws: ResetDraws | None = None
        self._reset_row_offset = 0
        if random_streams == "per-particle":
            self.streams = ParticleStreams(seed, first_particle, n_particles)
            self.streams.start()
            if env.is_fast_path:
                self.reset_draws = ResetDraws(self.streams, e)
                env.use_reset_draws(self.reset_draws)
                self.obs = env.reset()
            else:
                self.obs = self._reseed_generic_slots()
        else:
            self.obs = env.reset(seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
        self.running_return = np.zeros(env.num_envs, dtype=np.float64)
        self.running_length = np.zeros(env.num_envs, dtype=np.int64)
        self._buffer_steps = 0
        if not spec.discrete:
            self._low = np.asarray(spec.action_low, dtype=np.float32)
            self._high = np.asarray(spec.action_high, dtype=np.float32)

    def _buffers(self, t_max: int) -> dict[str, np.ndarray]:
        """Rollout buffers, allocated once and reused: fresh 100 MB arrays every iteration
        cost more in page faults than the forward pass that fills them."""
        if self._buffer_steps != t_max:
            n, e, spec, od = self.n, self.envs_per_particle, self.spec, self.spec.obs_dim
            act_shape = (t_max, n, e) if spec.discrete else (t_max, n, e, spec.act_dim)
            self._bufs = {
                "obs": np.empty((t_max, n, e, od), dtype=np.float32),
                "final": np.empty((t_max, n, e, od), dtype=np.float32),
                "act": np.empty(act_shape, dtype=np.int64 if spec.discrete else np.float32),
                "rew": np.empty((t_max, n, e), dtype=np.float32),
                "term": np.empty((t_max, n, e), dtype=bool),
                "trunc": np.empty((t_max, n, e), dtype=bool),
                "ret": np.empty((t_max, n * e), dtype=np.float64),  # running return
                "len": np.empty((t_max, n * e), dtype=np.int64),  # running length
            }
            for i, (_, width) in enumerate(spec.layer_sizes):
                self._bufs[f"layer{i}"] = np.empty((n, t_max, e, width), dtype=np.float32)
            self._buffer_steps = t_max
            self._layer_bufs = [self._bufs[f"layer{i}"] for i in range(len(spec.layer_sizes))]
        return self._bufs

    def collect(self, theta: np.ndarray, steps_per_env: int) -> Rollout:
        """Sample with the policies ``theta [n, d]`` (numpy): every env ``steps_per_env`` steps
        (continuing), or whole episodes until each particle has ``steps_per_env · E`` steps.

        The returned arrays are the sampler's reusable buffers: valid until the next call.
        """
        if self.whole_episodes:
            return self._collect_whole_episodes(theta, steps_per_env)
        t_max = steps_per_env
        self._start_rollout(reset_row_offset=0)
        bufs = self._buffers(t_max)
        ret_buf, len_buf = bufs["ret"], bufs["len"]
        policy = self._policy(theta)
        obs = self.obs
        for t in range(t_max):
            res = self._step(t, obs, policy, bufs)
            self.running_return += res.reward
            self.running_length += 1
            ret_buf[t] = self.running_return
            len_buf[t] = self.running_length
            done = res.terminated | res.truncated
            self.running_return[done] = 0.0
            self.running_length[done] = 0
            obs = res.obs
        self.obs = obs
        behaviours = None
        if self.describer is not None:  # before the cut below: it needs the true episode ends
            behaviours = self.describer.describe(
                bufs["obs"], bufs["final"], bufs["act"], bufs["term"] | bufs["trunc"], ret_buf
            )
        return self._rollout(bufs, t_max, behaviours, None)

    def _collect_whole_episodes(self, theta: np.ndarray, steps_per_env: int) -> Rollout:
        """rllab's sampling (module docstring): fresh episodes, none cut. An env whose particle
        has ``steps_per_env · E`` steps when its episode ends stops counting; the rollout ends
        when every env has stopped (after at most ``steps_per_env + time limit − 1`` steps)."""
        n, e = self.n, self.envs_per_particle
        need = steps_per_env * e
        t_cap = steps_per_env + self.env.max_episode_steps
        bufs = self._buffers(t_cap)
        bufs.setdefault("valid", np.empty((t_cap, n, e), dtype=bool))
        valid_buf, ret_buf, len_buf = bufs["valid"], bufs["ret"], bufs["len"]
        policy = self._policy(theta)
        self._start_rollout(reset_row_offset=1)
        if self.streams is not None and self.reset_draws is None:
            obs = self._reseed_generic_slots()  # generic envs: reseeded the same in any shard
        else:
            obs = self.env.reset()
        active = np.ones(n * e, dtype=bool)
        taken = np.zeros(n, dtype=np.int64)
        self.running_return[:] = 0.0
        self.running_length[:] = 0
        t = 0
        while active.any():
            res = self._step(t, obs, policy, bufs)
            valid_buf[t] = active.reshape(n, e)
            bufs["rew"][t] *= valid_buf[t]
            bufs["term"][t] &= valid_buf[t]
            bufs["trunc"][t] &= valid_buf[t]
            taken += active.reshape(n, e).sum(axis=1)
            self.running_return += np.where(active, res.reward, 0.0)
            self.running_length += active
            ret_buf[t] = self.running_return
            len_buf[t] = self.running_length
            done = (res.terminated | res.truncated) & active
            self.running_return[done] = 0.0
            self.running_length[done] = 0
            active &= ~(done & np.repeat(taken >= need, e))  # enough: no new episode
            obs = res.obs
            t += 1
        self.obs = obs
        return self._rollout(bufs, t, None, valid_buf[:t])

    def _reseed_generic_slots(self) -> np.ndarray:
        """Reset a gymnasium (generic) env so that slot ``s`` is seeded from (seed, rollouts
        so far, s) whatever the sharding (gymnasium seeds copy ``i`` with ``seed + i``); its
        copies then draw from their own generators."""
        return self.env.reset(seed=self.streams.generic_reset_seed(self.envs_per_particle))

    def _start_rollout(self, reset_row_offset: int) -> None:
        if self.streams is not None:
            self.streams.start()
            self._reset_row_offset = reset_row_offset
            if self.reset_draws is not None:
                self.reset_draws.step = 0

    def _action_noise(self, t: int, shape: tuple[int, ...]) -> np.ndarray:
        if self.streams is None:
            return action_noise(self.spec, shape, self.rng)
        return keyed_action_noise(self.spec, self.streams, t, shape[1:])

    def _policy(self, theta: np.ndarray) -> tuple:
        parts = self.spec.split(theta)
        return parts, None if self.spec.discrete else parts[-1]

    def _step(self, t: int, obs: np.ndarray, policy: tuple, bufs: dict):
        """One step of every env with the policies, written into row ``t`` of the buffers.

        One thread on purpose: splitting this per-step forward over particle-shard threads
        measured 17% *slower* at 20 envs per particle (hand-off costs more than it saves).
        """
        n, e, spec = self.n, self.envs_per_particle, self.spec
        parts, log_std = policy
        od = spec.obs_dim
        bufs["obs"][t] = obs.reshape(n, e, od)
        layers = [buf[:, t] for buf in self._layer_bufs]
        out = forward_numpy(spec, parts, bufs["obs"][t], layers)
        actions = actions_from_noise(spec, out, log_std, self._action_noise(t, out.shape))
        bufs["act"][t] = actions
        if spec.discrete:
            env_actions = actions.reshape(n * e)
        else:
            env_actions = np.clip(actions, self._low, self._high).reshape(n * e, -1)
        if self.reset_draws is not None:
            self.reset_draws.step = t + self._reset_row_offset
        res = self.env.step(env_actions)
        bufs["rew"][t] = res.reward.reshape(n, e)
        bufs["term"][t] = res.terminated.reshape(n, e)
        bufs["trunc"][t] = res.truncated.reshape(n, e)
        bufs["final"][t] = res.final_obs.reshape(n, e, od)
        return res

    def _rollout(self, bufs: dict, t_used: int, behaviours, valid: np.ndarray | None) -> Rollout:
        """The first ``t_used`` rows of the buffers as a :class:`Rollout`, with each particle's
        episodes that ended in it."""
        n, e = self.n, self.envs_per_particle
        rew_buf, term_buf = bufs["rew"][:t_used], bufs["term"][:t_used]
        trunc_buf, ret_buf, len_buf = bufs["trunc"][:t_used], bufs["ret"][:t_used], bufs["len"]
        if not np.isfinite(rew_buf).all():
            raise NonFiniteError("the environment returned a non-finite reward")
        done_buf = (term_buf | trunc_buf).reshape(t_used, n * e)
        t_idx, slot = np.nonzero(done_buf)
        owner = slot // e
        order = np.argsort(owner, kind="stable")
        splits = np.cumsum(np.bincount(owner, minlength=n))[:-1]
        episode_returns = np.split(ret_buf[t_idx, slot][order], splits)
        episode_lengths = np.split(len_buf[:t_used][t_idx, slot][order], splits)
        if valid is None:  # continuing: the iteration boundary cuts every running episode
            trunc_buf[-1] |= ~term_buf[-1]
        layers = [buf[:, :t_used] for buf in self._layer_bufs]
        activations = [buf.reshape(n, t_used * e, -1) for buf in layers]
        step = np.maximum(len_buf[:t_used] - 1, 0).reshape(t_used, n, e)
        return Rollout(
            bufs["obs"][:t_used], bufs["act"][:t_used], rew_buf, term_buf, trunc_buf,
            bufs["final"][:t_used], episode_returns, episode_lengths, activations, behaviours,
            step_in_episode=step, valid=valid,
        )  # fmt: skip

    def state_dict(self) -> dict:
        """Everything needed to continue sampling bit-identically after a resume."""
        return {
            # Generic gymnasium envs cannot be snapshotted: a resume restarts their episodes.
            "env": self.env.get_state() if self.env.is_fast_path else None,
            "obs": self.obs.copy(),
            "running_return": self.running_return.copy(),
            "running_length": self.running_length.copy(),
            "rng": self.rng.bit_generator.state
            if self.streams is None
            else self.streams.state_dict(),
            "describer": None if self.describer is None else self.describer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        per_particle = "rollouts" in state["rng"]
        if per_particle != (self.streams is not None):
            raise ValueError(
                "the checkpoint's sampler drew from "
                f"{'per-particle' if per_particle else 'one shared'} random streams, this run "
                f"from {'per-particle' if self.streams is not None else 'one shared'}: set "
                f"random_streams={'per-particle' if per_particle else 'shared'} to resume it"
            )
        if per_particle:
            self.streams.load_state_dict(state["rng"])
        else:
            self.rng.bit_generator.state = state["rng"]
        if state["env"] is None:
            logger.warning(
                "%s is on the generic gymnasium path, whose envs cannot be restored: their "
                "episodes restart, so this resumed run is not bit-identical to an uninterrupted "
                "one",
                self.env.env_id,
            )
            if self.streams is None:
                self.obs = self.env.reset(seed=int(self.rng.integers(2**31)))
            else:
                self.obs = self._reseed_generic_slots()
            self.running_return[:] = 0.0
            self.running_length[:] = 0
            if self.describer is not None:
                self.describer.reset()
            return
        self.env.set_state(state["env"])
        self.obs = state["obs"].copy()
        self.running_return = state["running_return"].copy()
        self.running_length = state["running_length"].copy()
        if self.describer is not None:
            if state.get("describer") is None:
                raise ValueError(
                    "the checkpoint has no behaviour-descriptor state for its running episodes "
                    "(written by a run without descriptors); it cannot resume this run"
                )
            self.describer.load_state_dict(state["describer"])
