"""evo_svpg.svgd against numpy.median, a naive double loop (tests/reference_svgd.py), finite
differences, autograd, and the SVGD reference experiments (1-D mixture, 2-D Gaussian)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import reference_svgd as ref
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from evo_svpg.svgd import (
    BANDWIDTH_CONVENTIONS,
    FALLBACK_BANDWIDTH,
    median_bandwidth,
    squared_distances,
    svgd_direction,
    svgd_direction_and_bandwidth,
    svpg_direction,
    svpg_direction_and_bandwidth,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
FAST = settings(max_examples=60, deadline=None)


@st.composite
def populations(draw, max_n=12, max_d=8, grid=True):
    """theta [n, d] float64. grid=True: multiples of 1/4 (exact arithmetic, many duplicates)."""
    n, d = draw(st.integers(1, max_n)), draw(st.integers(1, max_d))
    if grid:
        elements = st.integers(-8, 8).map(lambda k: k / 4)
    else:
        elements = st.floats(-10, 10).filter(lambda v: v == 0 or abs(v) > 1e-6)
    return draw(hnp.arrays(np.float64, (n, d), elements=elements))


def scores_like(theta):
    elements = st.floats(-5, 5, allow_nan=False, allow_subnormal=False)
    return hnp.arrays(np.float64, theta.shape, elements=elements)


def well_resolved(theta):
    """No pair so close that float64 rounding of the Gram formula (≈1e-14 relative) matters."""
    d = ref.squared_distance_matrix(theta)
    return bool(np.all((d == 0) | (d >= 1e-6 * d.max())))


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


# ----------------------------------------------------------------------------- bandwidth


@FAST
@given(populations(), st.sampled_from(BANDWIDTH_CONVENTIONS), st.sampled_from(DTYPES))
def test_median_bandwidth_is_numpy_median_of_full_matrix(theta, convention, dtype):
    n = theta.shape[0]
    full = ((theta[:, None, :] - theta[None, :, :]) ** 2).sum(-1)  # n×n, zero diagonal included
    theta_t = torch.tensor(theta, dtype=dtype)  # grid values: exact in float32 too
    np.testing.assert_array_equal(squared_distances(theta_t).numpy(), full)
    c = {"svgd": 1.0, "svpg_code": 2.0}[convention]
    h = median_bandwidth(theta_t, convention)
    assert isinstance(h, float)
    assert math.isfinite(h)
    assert h > 0
    if np.median(full) > 0:
        assert h == pytest.approx(np.median(full) / (c * math.log(n + 1)), rel=1e-14)
    else:  # documented fallback
        assert h == pytest.approx(ref.median_bandwidth(theta, convention), rel=1e-14)


@FAST
@given(populations(grid=False), st.sampled_from(BANDWIDTH_CONVENTIONS))
def test_median_bandwidth_continuous_values(theta, convention):
    assume(well_resolved(theta))
    got = median_bandwidth(t64(theta), convention)
    assert got == pytest.approx(ref.median_bandwidth(theta, convention), rel=1e-7)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_particles_get_the_positive_finite_fallback(n, dtype):
    theta = (torch.randn(1, 7, dtype=dtype) * 1e3).expand(n, 7).clone()
    for convention in BANDWIDTH_CONVENTIONS:
        h = median_bandwidth(theta, convention)
        assert h == FALLBACK_BANDWIDTH
        assert math.isfinite(h)
        assert h > 0


def test_clone_majority_uses_median_of_positive_distances():
    base = np.array([[0.0, 0.0], [3.0, 4.0]])
    theta = base[[0, 0, 0, 0, 1]]  # 4 clones + 1: 21 of 25 entries are 0
    assert np.median(ref.squared_distance_matrix(theta)) == 0
    assert median_bandwidth(t64(theta)) == pytest.approx(25.0 / math.log(6), rel=1e-14)
    assert median_bandwidth(t64(theta), "svpg_code") == pytest.approx(25.0 / (2 * math.log(6)))


def test_float32_near_clones_far_from_the_anchor_are_resolved():
    """A float32 Gram cannot resolve near-clones that sit far from θ_0; the float64 path must."""
    g = torch.Generator().manual_seed(0)
    d = 1000
    far = torch.randn(1, d, generator=g, dtype=torch.float64) * 10.0
    clones = 5.0 + 1e-3 * torch.randn(8, d, generator=g, dtype=torch.float64)
    theta32 = torch.cat([far, clones]).float()  # particle 0 is the outlier; 56 of 81 pairs tiny
    expected = ref.median_bandwidth(theta32.double().numpy())
    assert median_bandwidth(theta32) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairs_below_gram_resolution_count_as_clones_and_nothing_is_negative(dtype):
    """Near-clones 1e-13 apart, far from θ_0: their Gram-formula distance is pure rounding noise.
    It must become exactly 0 (documented), never negative, and h must be the clone fallback."""
    g = torch.Generator().manual_seed(0)
    clones = 10.0 + torch.zeros(6, 50, dtype=torch.float64)
    near = clones + 1e-13 * torch.randn(6, 50, generator=g, dtype=torch.float64)
    far = torch.zeros(1, 50, dtype=torch.float64)
    theta = torch.cat([far, near]).to(dtype)
    sq = squared_distances(theta)
    assert torch.all(sq >= 0)
    assert torch.all(sq[1:, 1:] == 0)
    expected = ref.median_bandwidth(torch.cat([far, clones]).numpy())  # 5000 / log 8
    assert median_bandwidth(theta) == pytest.approx(expected, rel=1e-6)
    phi = svgd_direction(theta, torch.zeros_like(theta))
    assert torch.isfinite(phi).all()


def test_unknown_convention_lists_the_valid_names():
    with pytest.raises(ValueError, match="svgd") as err:
        median_bandwidth(torch.randn(3, 2), "paper")
    for name in BANDWIDTH_CONVENTIONS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="svpg_code"):
        svgd_direction(torch.randn(3, 2), torch.randn(3, 2), "median")


# ----------------------------------------------------------------------------- φ vs naive loop


@FAST
@given(
    st.data(),
    populations(),
    st.sampled_from([*BANDWIDTH_CONVENTIONS, 0.3, 2.0, 17.0]),
    st.sampled_from(DTYPES),
)
def test_svgd_direction_matches_naive_double_loop(data, theta, bandwidth, dtype):
    score = data.draw(scores_like(theta)).astype(np.float32).astype(np.float64)  # exact in both
    h_ref = ref.median_bandwidth(theta, bandwidth) if isinstance(bandwidth, str) else bandwidth
    theta_t, score_t = torch.tensor(theta, dtype=dtype), torch.tensor(score, dtype=dtype)
    phi, h = svgd_direction_and_bandwidth(theta_t, score_t, bandwidth)
    assert h == pytest.approx(h_ref, rel=1e-14)
    expected = ref.svgd_phi(theta, score, h_ref)
    if dtype == torch.float64:
        np.testing.assert_allclose(phi.numpy(), expected, rtol=1e-9, atol=1e-12)
    else:  # float32 matmuls: error ≈ eps32 × (|s| + (2/h) max‖θ_i - θ_j‖) × n
        scale = 5.0 + 2.0 * math.sqrt(ref.squared_distance_matrix(theta).max()) / h_ref
        np.testing.assert_allclose(phi.numpy(), expected, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_array_equal(svgd_direction(theta_t, score_t, bandwidth).numpy(), phi)


@FAST
@given(st.data(), populations(grid=False), st.sampled_from([*BANDWIDTH_CONVENTIONS, 1.5]))
def test_svgd_direction_matches_naive_double_loop_continuous(data, theta, bandwidth):
    assume(well_resolved(theta))
    score = data.draw(scores_like(theta))
    h = ref.median_bandwidth(theta, bandwidth) if isinstance(bandwidth, str) else bandwidth
    expected = ref.svgd_phi(theta, score, h)
    scale = 5.0 + 2.0 * math.sqrt(ref.squared_distance_matrix(theta).max()) / h
    got = svgd_direction(t64(theta), t64(score), bandwidth).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7 * scale)


@FAST
@given(
    st.data(),
    populations(),
    st.sampled_from([0.1, 1.0, 10.0]),
    st.booleans(),
    st.sampled_from([*BANDWIDTH_CONVENTIONS, 0.7]),
)
def test_svpg_direction_matches_naive_eq6(data, theta, alpha, with_prior, bandwidth):
    grad = data.draw(scores_like(theta))
    prior = -0.3 * theta if with_prior else None  # Gaussian prior: ∇ log q0 = -θ / σ²
    h = ref.median_bandwidth(theta, bandwidth) if isinstance(bandwidth, str) else bandwidth
    expected = ref.svpg_phi(theta, grad, alpha, h, prior)
    prior_t = None if prior is None else t64(prior)
    phi, h_used = svpg_direction_and_bandwidth(t64(theta), t64(grad), alpha, prior_t, bandwidth)
    assert h_used == pytest.approx(h, rel=1e-14)
    np.testing.assert_allclose(phi.numpy(), expected, rtol=1e-9, atol=1e-12)
    again = svpg_direction(t64(theta), t64(grad), alpha, prior_score=prior_t, bandwidth=bandwidth)
    np.testing.assert_array_equal(again.numpy(), phi.numpy())


def test_svpg_temperature_scales_the_policy_gradient_only():
    g = torch.Generator().manual_seed(1)
    theta, grad = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    prior = torch.randn(6, 4, generator=g)
    a = svpg_direction(theta, grad, 4.0, prior, 1.3)
    b = svgd_direction(theta, grad / 4.0 + prior, 1.3)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        svpg_direction(theta, grad, 2.0, bandwidth="svgd"), svgd_direction(theta, grad / 2.0)
    )


# ----------------------------------------------------------------------------- kernel gradient


@pytest.mark.parametrize("seed", range(5))
def test_reference_kernel_gradient_is_a_finite_difference_of_k(seed):
    rng = np.random.default_rng(seed)
    xj, xi, h = rng.normal(size=4), rng.normal(size=4), float(rng.uniform(0.5, 5.0))
    eps = 1e-6
    fd = np.array(
        [
            (ref.kernel(xj + eps * e, xi, h) - ref.kernel(xj - eps * e, xi, h)) / (2 * eps)
            for e in np.eye(4)
        ]
    )
    np.testing.assert_allclose(ref.grad_kernel_first(xj, xi, h), fd, rtol=1e-6, atol=1e-10)
    assert np.dot(ref.grad_kernel_first(xj, xi, h), xi - xj) > 0  # points from θ_j towards θ_i


def autograd_repulsion(theta, h):
    """(1/n) Σ_j ∂k(θ_j, θ_i)/∂θ_j by autograd, θ_i held fixed (detached)."""
    n = theta.shape[0]
    out = torch.zeros_like(theta)
    for i in range(n):
        x = theta.clone().requires_grad_(True)  # every θ_j
        k = torch.exp(-((x - theta[i].detach()) ** 2).sum(1) / h)  # k(θ_j, θ_i) for all j
        (grad,) = torch.autograd.grad(k.sum(), x)  # row j: ∂k(θ_j, θ_i)/∂θ_j
        out[i] = grad.sum(0) / n
    return out


@pytest.mark.parametrize("bandwidth", [*BANDWIDTH_CONVENTIONS, 0.5, 3.0])
@pytest.mark.parametrize("seed", range(3))
def test_repulsive_term_equals_autograd_of_kernel(bandwidth, seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(7, 3, generator=g, dtype=torch.float64)
    phi, h = svgd_direction_and_bandwidth(theta, torch.zeros_like(theta), bandwidth)
    torch.testing.assert_close(phi, autograd_repulsion(theta, h), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bandwidth", [*BANDWIDTH_CONVENTIONS, 0.01, 100.0])
def test_single_particle_gives_back_the_score_exactly(dtype, bandwidth):
    theta, score = torch.randn(1, 9, dtype=dtype) * 50, torch.randn(1, 9, dtype=dtype)
    assert torch.equal(svgd_direction(theta, score, bandwidth), score)
    assert torch.equal(svpg_direction(theta, 4.0 * score, 4.0, bandwidth=bandwidth), score)


def _sq(theta):
    return ((theta[:, None, :] - theta[None, :, :]) ** 2).sum(-1)


@FAST
@given(populations(max_n=2, max_d=8, grid=False), st.sampled_from(BANDWIDTH_CONVENTIONS))
def test_zero_score_pushes_two_particles_apart(theta, convention):
    assume(theta.shape[0] == 2 and well_resolved(theta) and _sq(theta)[0, 1] > 1e-6)
    phi = svgd_direction(t64(theta), torch.zeros(theta.shape, dtype=torch.float64), convention)
    assert _sq(theta + 1e-3 * phi.numpy())[0, 1] > _sq(theta)[0, 1]


@pytest.mark.parametrize(
    "theta",
    [
        np.eye(6) * 2.0 + 1.0,  # regular simplex: every pair is alike
        np.random.default_rng(0).normal(size=(8, 50)),  # high-d Gaussian cloud
        np.random.default_rng(1).normal(size=(16, 200)) * 3.0 - 7.0,
    ],
    ids=["simplex", "gauss-8x50", "gauss-16x200"],
)
@pytest.mark.parametrize("bandwidth", BANDWIDTH_CONVENTIONS)
def test_zero_score_increases_every_pairwise_distance(theta, bandwidth):
    phi = svgd_direction(t64(theta), torch.zeros(theta.shape, dtype=torch.float64), bandwidth)
    before, after = _sq(theta), _sq(theta + 1e-3 * phi.numpy())
    off = ~np.eye(theta.shape[0], dtype=bool)
    assert np.all(after[off] > before[off])


@FAST
@given(populations(), st.sampled_from(BANDWIDTH_CONVENTIONS))
def test_zero_score_increases_total_spread(theta, bandwidth):
    """S(ε) = Σ_ij ‖θ_i - θ_j + ε(φ_i - φ_j)‖² has S'(0) = (4/h) Σ_ij k_ij ‖θ_i - θ_j‖² > 0 and
    S'' >= 0, so any step grows S (median h keeps some k_ij away from underflow)."""
    phi = svgd_direction(t64(theta), torch.zeros(theta.shape, dtype=torch.float64), bandwidth)
    before, after = _sq(theta).sum(), _sq(theta + 0.1 * phi.numpy()).sum()
    if before > 0:
        assert after > before
    else:
        assert np.all(phi.numpy() == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bandwidth", [*BANDWIDTH_CONVENTIONS, 2.0])
def test_clones_give_finite_identical_moves(dtype, bandwidth):
    g = torch.Generator().manual_seed(3)
    base = 100.0 + torch.randn(4, 30, generator=g, dtype=dtype)
    rows = [0, 0, 1, 2, 2, 2, 3, 0]
    theta = base[rows]
    score = torch.randn(4, 30, generator=g, dtype=dtype)[rows]
    phi = svgd_direction(theta, score, bandwidth)
    assert torch.isfinite(phi).all()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for group in ([0, 1, 7], [3, 4, 5]):
        for i in group[1:]:
            torch.testing.assert_close(phi[i], phi[group[0]], **tol)
    # all particles identical, identical scores: no repulsion, everyone moves by the score
    same = base[:1].expand(5, 30).clone()
    s = score[:1].expand(5, 30).clone()
    phi_same, h = svgd_direction_and_bandwidth(same, s, bandwidth)
    assert torch.isfinite(phi_same).all()
    assert math.isfinite(h)
    assert h > 0
    torch.testing.assert_close(phi_same, s, **tol)


def test_distinct_particle_is_repelled_from_a_clone_majority():
    theta = t64([[0.0, 0.0]] * 5 + [[1.0, 0.0]])
    phi = svgd_direction(theta, torch.zeros_like(theta))
    assert torch.isfinite(phi).all()
    assert phi[5, 0] > 0  # pushed away (+x) from the clones
    assert torch.all(phi[:5, 0] < 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_and_device_are_kept(device, dtype):
    theta = torch.randn(5, 3, dtype=dtype, device=device)
    for bandwidth in [*BANDWIDTH_CONVENTIONS, 1.0]:
        phi = svgd_direction(theta, torch.randn_like(theta), bandwidth)
        assert phi.dtype == dtype
        assert phi.device == theta.device
        assert phi.shape == theta.shape
        phi = svpg_direction(theta, torch.randn_like(theta), 10.0, torch.randn_like(theta))
        assert phi.dtype == dtype
        assert phi.device == theta.device


def test_no_autograd_graph_and_inputs_untouched():
    theta = torch.randn(4, 3, requires_grad=True)
    score = torch.randn(4, 3, requires_grad=True)
    theta0, score0 = theta.detach().clone(), score.detach().clone()
    phi = svgd_direction(theta, score)
    assert not phi.requires_grad
    assert torch.equal(theta.detach(), theta0)
    assert torch.equal(score.detach(), score0)


# ----------------------------------------------------------------------------- validation


def test_invalid_inputs_raise_value_errors_naming_the_culprit():
    theta = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 2\)"):
        svgd_direction(theta, torch.randn(3, 4))
    with pytest.raises(ValueError, match="dtype"):
        svgd_direction(theta, torch.randn(3, 2, dtype=torch.float64))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            svgd_direction(theta, torch.randn(3, 2), bad)
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            svpg_direction(theta, torch.randn(3, 2), bad)
    with pytest.raises(ValueError, match="prior_score"):
        svpg_direction(theta, torch.randn(3, 2), 1.0, torch.randn(2, 2))
    with pytest.raises(ValueError, match="shape"):
        median_bandwidth(torch.randn(4))
    with pytest.raises(ValueError, match="shape"):
        median_bandwidth(torch.randn(0, 3))
    with pytest.raises(ValueError, match="too small"):
        svgd_direction(theta, torch.randn(3, 2), 1e-39)  # 2/h overflows float32
    with pytest.raises(ValueError, match="non-finite"):
        median_bandwidth(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        svgd_direction(t64([[0.0], [math.inf], [1.0]]), torch.zeros(3, 1, dtype=torch.float64))


# ----------------------------------------------------------------------------- SVGD experiments


def _adagrad_momentum(theta, score_fn, steps, stepsize, direction=svgd_direction):
    """DartML SVGD optimiser: hist = g² at first, then 0.9 hist + 0.1 g²; θ += ε g/(1e-6+√hist)."""
    hist = None
    for _ in range(steps):
        g = direction(theta, score_fn(theta))
        hist = g**2 if hist is None else 0.9 * hist + 0.1 * g**2
        theta = theta + stepsize * g / (1e-6 + hist.sqrt())
    return theta


def _mixture_score(x):
    """∇ log p for p = ⅓ N(-2, 1) + ⅔ N(2, 1), x [n, 1]."""
    mu = torch.tensor([-2.0, 2.0], dtype=x.dtype)
    resp = torch.softmax(
        torch.log(torch.tensor([1 / 3, 2 / 3], dtype=x.dtype)) - (x - mu) ** 2 / 2, 1
    )
    return (resp * (mu - x)).sum(1, keepdim=True)


def test_svgd_recovers_the_1d_gaussian_mixture_and_needs_the_repulsion():
    x0 = torch.randn(100, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 10
    x = _adagrad_momentum(x0, _mixture_score, 800, 0.1)
    assert x.mean().item() == pytest.approx(2 / 3, abs=0.2)  # runs give 0.63-0.71
    assert (x**2).mean().item() == pytest.approx(5.0, abs=0.5)  # runs give 4.8-5.1
    assert x.var().item() > 3.0  # target variance 1 + 32/9 ≈ 4.56
    assert (x > 0).float().mean().item() == pytest.approx(2 / 3, abs=0.1)

    def driving_only(theta, score):  # the same φ with ∇k dropped (φ is linear in the score)
        return svgd_direction(theta, score) - svgd_direction(theta, torch.zeros_like(score))

    collapsed = _adagrad_momentum(x0, _mixture_score, 400, 0.1, driving_only)
    assert collapsed.var().item() < 0.3  # all particles pile up in the nearer mode
    assert collapsed.mean().item() == pytest.approx(-2.0, abs=0.3)


def test_svgd_reference_2d_gaussian():
    """DartML SVGD demo (python/multivariate_normal.py): log p = -½(θ-μ)ᵀA(θ-μ)."""
    a = torch.tensor([[0.2260, 0.1652], [0.1652, 0.6779]], dtype=torch.float64)
    mu = torch.tensor([-0.6871, 0.8010], dtype=torch.float64)

    def score(theta):
        return -(theta - mu) @ a

    g = torch.Generator().manual_seed(0)
    demo = _adagrad_momentum(
        torch.randn(10, 2, generator=g, dtype=torch.float64), score, 1000, 0.01
    )
    torch.testing.assert_close(demo.mean(0), mu, atol=0.05, rtol=0)
    many = _adagrad_momentum(
        torch.randn(100, 2, generator=g, dtype=torch.float64), score, 1000, 0.05
    )
    torch.testing.assert_close(many.mean(0), mu, atol=0.05, rtol=0)
    # covariance ≈ A⁻¹ = [[5.38, -1.31], [-1.31, 1.79]]; runs give about 5 % below
    torch.testing.assert_close(torch.cov(many.T), torch.linalg.inv(a), rtol=0.15, atol=0.0)
