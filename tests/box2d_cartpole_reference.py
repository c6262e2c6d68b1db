"""Slow single-env reference for :mod:`evo_svpg.envs.box2d_cartpole`: rllab's cart-pole world
built with pybox2d (``pip install box2d==2.3.10``; Box2D 2.3, float32), stepped as rllab's
``normalize(CartpoleSwingupEnv())`` / ``normalize(CartpoleEnv())`` step it.

Everything is written from the facts in shared/reference/paper-envs.md (§1, §2, §6) and
rllab's ``cartpole.xml.mako`` / ``xml_box2d.py`` / ``box2d_env.py``: the bodies, fixtures and
joints are created in the XML's order (cart, pole, track; pole joint, track–cart prismatic) with
the parser's keyword arguments, so Box2D builds the same island as rllab's world. Sleeping is on
(rllab's ``b2World(allow_sleeping=False)`` is ignored by pybox2d). The reset is rllab's broken
one: restore every body's initial pose and velocity, then set only the cart's x and ẋ and the
pole's angle and angular velocity (the pole's origin stays at (0, cart height)).
The prismatic joint has zero local anchors, so its first step also drops the cart from its
initial height h/2 to the track origin's y = −0.1 (what the port reproduces).
"""

from __future__ import annotations

from collections.abc import Callable

import Box2D
import numpy as np

CART_WIDTH = 4.0 / 12**0.5
CART_HEIGHT = 3.0 / 12**0.5
POLE_WIDTH = 0.1
POLE_HEIGHT = 1.0
DT, VEL_ITERS, POS_ITERS = 0.05, 8, 3
FORCE_LIMIT = 10.0  # the control's ctrllimit (-10, 10) N

# rllab's reset distributions (low, high) of (x, ẋ, θ, θ̇).
SWINGUP_RESET = (np.array([-1.0, -2.0, np.pi - 1, -3.0]), np.array([1.0, 2.0, np.pi + 1, 3.0]))
_BALANCE_BOUNDS = np.array([2.4, 4.0, 0.2, 4.0])
BALANCE_RESET = (-0.05 * _BALANCE_BOUNDS, 0.05 * _BALANCE_BOUNDS)


class Box2DCartpole:
    """One rllab cart-pole world; ``task`` is ``"swingup"`` or ``"balance"``.

    Actions are normalize's: a ∈ [−1, 1] is the force 10a N on the cart (clipped).
    """

    def __init__(self, task: str = "swingup") -> None:
        if task not in ("swingup", "balance"):
            raise ValueError(f"task={task!r}")
        self.task = task
        world = Box2D.b2World()  # gravity (0, -10), sleeping on, warm starting on
        world.warmStarting, world.continuousPhysics, world.subStepping = True, True, False
        cart = world.CreateBody(type=Box2D.b2_dynamicBody)
        cart.position = (0.0, CART_HEIGHT / 2)
        cart.CreatePolygonFixture(box=(CART_WIDTH / 2, CART_HEIGHT / 2), density=1.0,
                                  friction=0.0005)  # fmt: skip
        pole = world.CreateBody(type=Box2D.b2_dynamicBody)
        pole.position = (0.0, CART_HEIGHT)
        half = POLE_WIDTH / 2  # rllab's compute_rect_vertices((0, 0), (0, 1), 0.05)
        pole.CreatePolygonFixture(
            vertices=[(half, 0.0), (half, POLE_HEIGHT), (-half, POLE_HEIGHT), (-half, 0.0)],
            density=1.0, friction=0.000002, groupIndex=-1,
        )  # fmt: skip
        track = world.CreateBody(type=Box2D.b2_staticBody)
        track.position = (0.0, -0.1)
        track.CreatePolygonFixture(box=(100.0, 0.1), friction=0.000002, groupIndex=-1)
        world.CreateJoint(type=Box2D.b2RevoluteJoint, bodyA=cart, bodyB=pole,
                          anchor=(0.0, CART_HEIGHT))  # fmt: skip
        world.CreateJoint(type=Box2D.b2PrismaticJoint, bodyA=track, bodyB=cart)
        self.world, self.cart, self.pole = world, cart, pole
        self.initial_state = [self._body_state(b) for b in world.bodies]

    @staticmethod
    def _body_state(body) -> tuple:
        return (tuple(body.position), body.angle, tuple(body.linearVelocity),
                body.angularVelocity)  # fmt: skip

    def observation(self) -> np.ndarray:
        """[x, ẋ, θ, θ̇] as float32 (Box2D's own precision)."""
        cart, pole = self.cart, self.pole
        return np.array([cart.position[0], cart.linearVelocity[0], pole.angle,
                         pole.angularVelocity], dtype=np.float32)  # fmt: skip

    def reset(self, init=None, rng: np.random.Generator | None = None) -> np.ndarray:
        """rllab's reset; ``init`` = (x, ẋ, θ, θ̇), else drawn from ``rng`` like the port."""
        if init is None:
            low, high = SWINGUP_RESET if self.task == "swingup" else BALANCE_RESET
            init = rng.uniform(low, high)
        for body, (pos, angle, vel, avel) in zip(
            self.world.bodies, self.initial_state, strict=True
        ):
            body.position, body.angle = pos, angle
            body.linearVelocity, body.angularVelocity = vel, avel
        x, xdot, theta, thetadot = (float(v) for v in init)
        self.cart.position = (x, self.cart.position[1])
        self.cart.linearVelocity = (xdot, self.cart.linearVelocity[1])
        self.pole.angle = theta
        self.pole.angularVelocity = thetadot
        return self.observation()

    def step(self, action: float) -> tuple[np.ndarray, float, bool]:
        """One normalize(env).step: (observation, reward, done)."""
        lb, ub = -FORCE_LIMIT, FORCE_LIMIT
        force = float(np.clip(lb + (float(action) + 1.0) * 0.5 * (ub - lb), lb, ub))
        cart = self.cart
        cart.ApplyForce(cart.GetWorldVector((force, 0.0)), cart.GetWorldPoint((0.0, 0.0)), True)
        self.world.Step(DT, VEL_ITERS, POS_ITERS)
        x, theta = self.cart.position[0], self.pole.angle
        if self.task == "swingup":
            done = abs(x) > 3
            reward = -100.0 if done else (-1.0 if abs(x) > 3 else float(np.cos(theta)))
        else:
            done = abs(x) > 2.4 or abs(theta) > 0.2
            notdone = 1 - int(done)
            ucost = 1e-5 * force**2
            reward = notdone * 10 - notdone * (1 - float(np.cos(theta))) - notdone * ucost
        return self.observation(), float(reward), bool(done)


# a = gains · (x, ẋ, θ, θ̇): continuous-time LQR of the linearised ODE of §2 (Q = diag(1, 1,
# 10, 1), R = 1, F = 10a), from scipy.linalg.solve_continuous_are.
LQR_GAINS = np.array([1.0, 1.71, -10.79, -2.83])
I_PIVOT = 0.1 * (0.1**2 + 1.0) / 12 + 0.1 * 0.5**2  # pole's inertia about its pivot, kg m²


def feedback_policy(task: str) -> Callable[[np.ndarray, object], np.ndarray]:
    """A simple deterministic controller, vectorised: ``obs [..., 4] -> action [...]`` in
    normalize's units (the second argument, an rng, is unused).

    Balance: an LQR gain of the linearised cart-pole (§2's equations; it brings the world to
    rest, so Box2D puts it to sleep every 10 steps). Swing-up: energy pumping towards the
    upright energy with a spring and damper on the cart, and the LQR gain once cos θ > 0.9.
    """

    def lqr(obs, rng=None):
        o = np.asarray(obs, dtype=np.float64)
        wrapped = np.stack([o[..., 0], o[..., 1], (o[..., 2] + np.pi) % (2 * np.pi) - np.pi,
                            o[..., 3]], axis=-1)  # fmt: skip
        return np.clip(wrapped @ LQR_GAINS, -1.0, 1.0)

    if task == "balance":
        return lqr

    def swing_up(obs, rng=None):
        o = np.asarray(obs, dtype=np.float64)
        x, xdot, theta, thetadot = (o[..., i] for i in range(4))
        cos = np.cos(theta)
        energy = 0.5 * I_PIVOT * thetadot**2 + 0.1 * 10 * 0.5 * (cos - 1)
        pump = np.clip(-20.0 * energy * thetadot * cos - 0.3 * x - 0.6 * xdot, -1.0, 1.0)
        return np.where(cos > 0.9, lqr(o), pump)

    return swing_up


def run_episodes(
    task: str,
    policy: Callable[[np.ndarray, np.random.Generator], float],
    n_episodes: int,
    seed: int = 0,
    max_steps: int = 500,
) -> np.ndarray:
    """Returns of ``n_episodes`` episodes of ``policy(obs, rng) -> action`` in one world (the
    world, its joints' warm-start impulses and sleep timers persist across resets, as in rllab).
    """
    env, rng = Box2DCartpole(task), np.random.default_rng(seed)
    returns = np.zeros(n_episodes)
    for i in range(n_episodes):
        obs = env.reset(rng=rng)
        for _ in range(max_steps):
            obs, reward, done = env.step(float(policy(obs, rng)))
            returns[i] += reward
            if done:
                break
    return returns
