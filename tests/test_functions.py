"""Every base and transform against its formula (float64, written out independently here), and its gradient."""
import math

import numpy as np
import pytest
import torch

import lab
from lab.functions import SINGULAR_EPS

X = np.concatenate([np.linspace(-6, 6, 241), [-1e-7, 1e-7, -0.3333, 2.5001]])
sgn = np.sign
erf = np.vectorize(math.erf)

FORMULAS = {
    "erf": erf,
    "tanh": np.tanh,
    "arctan": lambda x: 2 / np.pi * np.arctan(x),
    "isru": lambda x: x / np.sqrt(1 + x**2),
    "arcsinh": np.arcsinh,
    "logsign": lambda x: sgn(x) * np.log(np.abs(x) + 1),
    "logquad": lambda x: sgn(x) * np.log(x**2 + 1),
    "power23": lambda x: sgn(x) * np.abs(x) ** (2 / 3),
    "linear": lambda x: x,
    "sin": np.sin,
    "dampx": lambda x: 2 * x / (1 + x**2),
    "dampexp": lambda x: np.e * x * np.exp(-np.abs(x)),
    "satursin": lambda x: np.sin(np.clip(x, -np.pi / 2, np.pi / 2)),
    "arcsinhclip": lambda x: np.clip(np.arcsinh(x), -1, 1),
    "exproot": lambda x: sgn(x) * (1 - np.exp(-np.sqrt(np.abs(x)))),
    "linearclip": lambda x: np.clip(x, -1, 1),
    "expsign": lambda x: -sgn(x) * (np.exp(-np.abs(x)) - 1),
    "logsignclip": lambda x: np.clip(sgn(x) * np.log(np.abs(x) + 1), -1, 1),
    "relsign": lambda x: x / (np.sqrt(x**2 + 1) + 1),
    "smoothsign": lambda x: x / (1 + np.abs(x)),
    "logquadclip": lambda x: np.clip(sgn(x) * np.log(x**2 + 1), -1, 1),
    "power23clip": lambda x: np.clip(sgn(x) * np.abs(x) ** (2 / 3), -1, 1),
    "saturlog": lambda x: sgn(x) * np.log(np.abs(x) + 1) / (np.log(np.abs(x) + 1) + 1),
    "cubsign": lambda x: x**3 / (np.abs(x) ** 3 + 1),
}


def values(spec, x=X):
    return lab.pointwise(spec)(torch.from_numpy(x)).numpy()


def derivative(spec, x):
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lab.pointwise(spec)(t).sum().backward()
    return t.grad.numpy()


def numeric_derivative(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_every_listed_base_is_implemented():
    assert set(lab.BASES) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_base_matches_formula(name):
    np.testing.assert_allclose(values(name), FORMULAS[name](X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_base_gradient_matches_formula_away_from_kinks(name):
    # Skip points within 1e-3 of a kink (0, clip corners, π/2) where a central difference straddles it.
    x = X[np.abs(X) > 1e-3]
    kinks = [np.pi / 2, 1.0, np.sinh(1.0), np.e - 1, np.sqrt(np.e - 1)]
    x = x[np.min(np.abs(np.abs(x)[:, None] - np.array(kinks)[None]), axis=1) > 1e-3]
    np.testing.assert_allclose(derivative(name, x), numeric_derivative(FORMULAS[name], x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_gradient_finite_at_and_near_zero(name):
    x = np.array([0.0, 1e-30, -1e-30, 1e-12, -1e-8, 1e-5, -1e-3])
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        t = torch.tensor(x, dtype=dtype, requires_grad=True)
        lab.pointwise(name)(t).sum().backward()
        assert torch.isfinite(t.grad).all(), (name, dtype, t.grad)


def test_singular_slopes_are_capped_at_the_documented_value():
    for spec, slope in [("power23", 2 / 3 * SINGULAR_EPS ** (-1 / 3)),
                        ("exproot", np.exp(-np.sqrt(SINGULAR_EPS)) / (2 * np.sqrt(SINGULAR_EPS)))]:
        np.testing.assert_allclose(derivative(spec, np.array([0.0, 1e-9, -SINGULAR_EPS / 2])), slope, rtol=1e-12)


TRANSFORM_CASES = [  # spec, reference f, λ from the paper's grids
    ("erf|hshift=0.5", lambda x: erf(x + 0.5)),
    ("tanh|hshift=-2", lambda x: np.tanh(x - 2)),
    ("erf|vshift=-1", lambda x: erf(x) - 1),
    ("arctan|vshift=0.1", lambda x: 2 / np.pi * np.arctan(x) + 0.1),
    ("arcsinh|clip=0.8", lambda x: np.clip(np.arcsinh(x), -0.8, 0.8)),
    ("linear|clip=3", lambda x: np.clip(x, -3, 3)),
    ("isru|blend=0.1", lambda x: 0.9 * x / np.sqrt(1 + x**2) + 0.1 * x),
    ("erf|blend=0.5", lambda x: 0.5 * erf(x) + 0.5 * x),
    ("erf|flat=1", lambda x: np.where(np.abs(x) <= 1, 0, erf(x - sgn(x) * 1))),
    ("arctan|flat=0.1", lambda x: np.where(np.abs(x) <= 0.1, 0, 2 / np.pi * np.arctan(x - sgn(x) * 0.1))),
    ("erf|neg", lambda x: -erf(x)),
    # composition applies left to right: each transform wraps the function built so far
    ("erf|hshift=1|vshift=0.5", lambda x: erf(x + 1) + 0.5),
    ("erf|vshift=0.5|hshift=1", lambda x: erf(x + 1) + 0.5),
    ("erf|vshift=0.5|clip=1", lambda x: np.clip(erf(x) + 0.5, -1, 1)),
    ("erf|clip=0.5|vshift=0.5", lambda x: np.clip(erf(x), -0.5, 0.5) + 0.5),
    ("tanh|neg|blend=0.5", lambda x: -0.5 * np.tanh(x) + 0.5 * x),
    ("tanh|blend=0.5|neg", lambda x: -0.5 * np.tanh(x) - 0.5 * x),
    ("erf|flat=1|hshift=1", lambda x: np.where(np.abs(x + 1) <= 1, 0, erf(x + 1 - sgn(x + 1)))),
]


@pytest.mark.parametrize("spec,reference", TRANSFORM_CASES, ids=[c[0] for c in TRANSFORM_CASES])
def test_transform_matches_formula(spec, reference):
    np.testing.assert_allclose(values(spec), reference(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec,reference", TRANSFORM_CASES, ids=[c[0] for c in TRANSFORM_CASES])
def test_transform_gradient(spec, reference):
    x = np.linspace(-5.013, 5.017, 97)     # avoids the kinks of the cases above
    np.testing.assert_allclose(derivative(spec, x), numeric_derivative(reference, x), rtol=1e-5, atol=1e-6)


def test_every_transform_has_a_case():
    assert {name for spec, _ in TRANSFORM_CASES for name, _ in lab.perturb.parse(spec)[1]} == set(lab.TRANSFORMS)


@pytest.mark.parametrize("spec", [c[0] for c in TRANSFORM_CASES] + list(FORMULAS))
def test_the_backward_pass_value_is_the_forward_pass_value(spec):
    """Each transform is written twice (the forward's f, the backward's (f, f')): a later transform's f' reads the
    f of the (f, f') pair (clip masks where it binds), so the two must agree."""
    f = lab.pointwise(spec)
    x = torch.from_numpy(X)
    np.testing.assert_allclose(f.value_and_grad(x)[0].numpy(), f.value(x).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n, t in lab.perturb.TRANSFORMS.items() if t.identity is not None])
def test_a_transform_at_its_identity_is_f(name):
    """canonical() drops a transform at its identity λ, so that cell shares f's record: it must then be f (and f',
    but at x = 0 itself, where flat=0 takes the zone's side of the kink)."""
    transform, base = lab.perturb.TRANSFORMS[name], lab.functions.BASES["tanh"]
    x = torch.from_numpy(X[X != 0])
    y, dy = transform.wrap(base.value_and_grad, transform.identity)(x)
    for a, b in ((transform.wrap_value(base.value, transform.identity)(x), base.value(x)), (y, base.value(x)),
                 (dy, base.value_and_grad(x)[1])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=0)


def test_flat_zone_is_continuous_for_a_centered_function():
    for lam in (0.1, 0.5, 1.0, 2.0, 3.0):
        edge = np.array([lam - 1e-9, lam, lam + 1e-9])
        assert np.abs(values(f"erf|flat={lam}", edge)).max() < 1e-8


def test_pointwise_runs_on_float32_and_keeps_dtype():
    x = torch.randn(4, 8)
    y = lab.pointwise("tanh|hshift=0.5")(x)
    assert y.dtype == torch.float32 and y.shape == x.shape


def test_a_flat_zone_is_0_up_to_its_edges_for_a_function_not_0_at_0():
    """Table 5: f_λ is 0 on |x| ≤ λ, the edges included; erf's f(0) = 0 would hide an edge given f(0) instead."""
    f = lab.pointwise("erf|vshift=0.5|flat=1")
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert f.value(x).tolist() == [0.0, 0.0] and f.value_and_grad(x)[0].tolist() == [0.0, 0.0]


def test_an_infinite_slope_at_0_is_taken_at_the_documented_1e_4():
    """The README's number, written out: power23's derivative at 0 is (2/3)·(1e-4)^(-1/3) ≈ 30.9."""
    t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    lab.pointwise("power23")(t).sum().backward()
    assert t.grad.item() == pytest.approx(2 / 3 * 1e-4 ** (-1 / 3))
