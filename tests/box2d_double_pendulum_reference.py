"""Slow single-env reference of rllab's ``normalize(DoublePendulumEnv())``, built with pybox2d.

The world is made with our own pybox2d calls from the constants of
``shared/reference/paper-envs.md`` §3 (rllab's ``double_pendulum.xml.mako`` with
``link_len = 1``), in the order rllab's XML parser creates it: bodies link1, link2, then the static
track; joints ground–link1, then link1–link2 (that order decides Box2D's island order, §5).
Box2D itself (pip ``box2d`` 2.3.10, float32) does the stepping, so this is the ground truth the
numpy port in ``evo_svpg.envs.box2d_double_pendulum`` is tested against. About 30 µs a step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

with warnings.catch_warnings():  # SWIG's "builtin type ... has no __module__" on import
    warnings.simplefilter("ignore", DeprecationWarning)
    import Box2D

DT, VEL_ITERS, POS_ITERS, FRAME_SKIP = 0.01, 20, 20, 2
LINK_LEN, HALF_WIDTH, DENSITY = 1.0, 0.05, 5.0
TORQUE_BOUNDS = (-50.0, 50.0)
RESET_STD = np.array([0.1, 0.1, 0.01, 0.01])  # θ1, θ2, ω1, ω2


def _rect(top: float) -> list[tuple[float, float]]:
    """rllab's ``compute_rect_vertices([0, 0], [0, -len], width/2)``, shifted by ``top``."""
    return [(HALF_WIDTH, top), (HALF_WIDTH, top - LINK_LEN), (-HALF_WIDTH, top - LINK_LEN),
            (-HALF_WIDTH, top)]  # fmt: skip


class ReferenceDoublePendulum:
    """One rllab double pendulum world (persisting across resets, as in rllab)."""

    def __init__(self) -> None:
        # rllab passes allow_sleeping=False, which pybox2d ignores: sleeping stays on (§1).
        self.world = w = Box2D.b2World(allow_sleeping=False)
        w.warmStarting, w.continuousPhysics, w.subStepping = True, True, False
        self.link1 = w.CreateBody(type=Box2D.b2_dynamicBody)
        self.link1.position = (0.0, 0.0)
        self.link1.CreatePolygonFixture(vertices=_rect(0.0), density=DENSITY, groupIndex=-1)
        self.link2 = w.CreateBody(type=Box2D.b2_dynamicBody)
        self.link2.position = (0.0, -LINK_LEN)
        self.link2.CreatePolygonFixture(vertices=_rect(0.0), density=DENSITY, groupIndex=-1)
        track = w.CreateBody(type=Box2D.b2_staticBody)
        track.position = (0.0, -0.1)
        track.CreatePolygonFixture(box=(100.0, 0.1), groupIndex=-1)
        w.CreateJoint(type=Box2D.b2RevoluteJoint, bodyA=track, bodyB=self.link1, anchor=(0, 0))
        self.elbow = w.CreateJoint(
            type=Box2D.b2RevoluteJoint, bodyA=self.link1, bodyB=self.link2, anchor=(0, -LINK_LEN)
        )
        # rllab's initial_state: every body's position, angle and velocities at construction.
        self.initial = [
            (tuple(b.position), b.angle, tuple(b.linearVelocity), b.angularVelocity)
            for b in w.bodies
        ]

    def reset(self, init: np.ndarray) -> np.ndarray:
        """rllab's reset with the draw ``init = (θ1, θ2, ω1, ω2)``: restore the initial state,
        then set only the angles and angular velocities (the broken reset, §3)."""
        for body, (pos, angle, vel, avel) in zip(self.world.bodies, self.initial, strict=True):
            body.position, body.angle = pos, angle
            body.linearVelocity, body.angularVelocity = vel, avel
        self.link1.angle, self.link2.angle = float(init[0]), float(init[1])
        self.link1.angularVelocity, self.link2.angularVelocity = float(init[2]), float(init[3])
        return self.obs()

    def obs(self) -> np.ndarray:
        l1, l2 = self.link1, self.link2
        return np.array([np.sin(l1.angle), np.cos(l1.angle), l1.angularVelocity,
                         np.sin(l2.angle), np.cos(l2.angle), l2.angularVelocity])  # fmt: skip

    def state(self) -> np.ndarray:
        """[c1x, c1y, θ1, v1x, v1y, ω1, c2x, c2y, θ2, v2x, v2y, ω2] (centres of mass)."""
        out = []
        for b in (self.link1, self.link2):
            out += [*b.worldCenter, b.angle, *b.linearVelocity, b.angularVelocity]
        return np.array(out)

    def step(self, action: float) -> tuple[np.ndarray, float]:
        """``normalize``'s rescaling of ``action`` ∈ [−1, 1], then frame_skip × (set the elbow
        motor as rllab's ``forward_dynamics`` does, ``world.Step``); reward from the new state."""
        lb, ub = TORQUE_BOUNDS
        act = float(np.clip(lb + (float(action) + 1.0) * 0.5 * (ub - lb), lb, ub))
        for _ in range(FRAME_SKIP):
            self.elbow.motorEnabled = True
            self.elbow.motorSpeed = 1e5 if act > 0 else -1e5
            self.elbow.maxMotorTorque = abs(act)
            self.world.Step(DT, VEL_ITERS, POS_ITERS)
        pos, angle = self.link2.position, self.link2.angle
        tip = (pos[0] - LINK_LEN * np.sin(angle), pos[1] - LINK_LEN * np.cos(angle))
        reward = -float(np.linalg.norm(np.asarray(tip) - np.array([0.0, 2 * LINK_LEN])))
        return self.obs(), reward


Policy = Callable[[np.ndarray, np.random.Generator], float]


def run_returns(
    policy: Policy, episodes: int, seed: int, horizon: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Returns of ``episodes`` episodes of ``policy(obs, rng) -> action in [-1, 1]`` in ONE
    world (rllab reuses its world across episodes), resets drawn from ``default_rng(seed)``;
    also the observations after each episode's first step ``[episodes, 6]``."""
    rng = np.random.default_rng(seed)
    env = ReferenceDoublePendulum()
    returns, first = np.zeros(episodes), np.zeros((episodes, 6))
    for k in range(episodes):
        obs = env.reset(rng.standard_normal(4) * RESET_STD)
        for t in range(horizon):
            obs, reward = env.step(policy(obs, rng))
            returns[k] += reward
            if t == 0:
                first[k] = obs
    return returns, first
