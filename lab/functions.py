"""Base point-wise functions f, each as a value map and a joint (value, derivative) map.

Every base carries its analytic derivative so that the layer can recompute f'(u) in backward from the one saved input
instead of keeping autograd's chain of intermediates alive, and so that the functions with an infinite slope at 0
(power23 = sign(x)|x|^(2/3), exproot = sign(x)(1 - e^(-sqrt|x|))) get a finite, documented gradient there: their
derivative is evaluated at max(|x|, SINGULAR_EPS). A training failure in the lab then reflects the function's growth,
never an autograd artefact (inf * 0 = NaN at x = 0).

Formulas: arXiv 2512.10938, Section 3 (the bases the tables perturb) and Section 4 (the search candidates).
"""
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

SINGULAR_EPS = 1e-4
"""|x| below which power23/exproot use the derivative at |x| = SINGULAR_EPS (finite slope at 0)."""

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_TWO_OVER_PI = 2.0 / math.pi


class Base(NamedTuple):
    """A base function: `value(x)` and `value_and_grad(x) -> (f(x), f'(x))`."""
    value: Callable[[Tensor], Tensor]
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]]
    formula: str


def clip_vg(vg, lam: float = 1.0):
    """clip(g(x), −λ, λ) of a joint value-and-derivative map (Eq. 6; the clipped Section-4 bases at λ = 1): the
    derivative vanishes where the clip is active."""
    def clipped(x):
        y, dy = vg(x)
        return y.clamp(-lam, lam), dy * (y.abs() < lam)
    return clipped


def _from_vg(vg, formula):
    """A base whose value is the first half of its joint map (torch.compile drops the unused derivative)."""
    return Base(lambda x: vg(x)[0], vg, formula)


# --- bounded, monotonic (Section 3) --------------------------------------------------------------------------------

def _erf_vg(x):
    return torch.erf(x), _TWO_OVER_SQRT_PI * torch.exp(-x * x)


def _tanh_vg(x):
    y = torch.tanh(x)
    return y, 1.0 - y * y


def _arctan_vg(x):
    return _TWO_OVER_PI * torch.atan(x), _TWO_OVER_PI / (1.0 + x * x)


def _isru_vg(x):
    r = torch.rsqrt(1.0 + x * x)
    return x * r, r * r * r


# --- unbounded (Tables 2 and 4) --------------------------------------------------------------------------------------

def _arcsinh_vg(x):
    return torch.asinh(x), torch.rsqrt(1.0 + x * x)


def _logsign_vg(x):
    a = x.abs()
    return torch.sign(x) * torch.log1p(a), 1.0 / (1.0 + a)


def _logquad_vg(x):
    a = x.abs()
    return torch.sign(x) * torch.log1p(x * x), 2.0 * a / (1.0 + x * x)


def _power23_vg(x):
    a = x.abs()
    return torch.sign(x) * a.pow(2.0 / 3.0), (2.0 / 3.0) * a.clamp_min(SINGULAR_EPS).pow(-1.0 / 3.0)


def _linear_vg(x):
    return x, torch.ones_like(x)


# --- non-monotonic (Table 6b), rescaled to [-1, 1] --------------------------------------------------------------------

def _sin_vg(x):
    return torch.sin(x), torch.cos(x)


def _dampx_vg(x):
    d = 1.0 + x * x
    return 2.0 * x / d, 2.0 * (1.0 - x * x) / (d * d)


def _dampexp_vg(x):
    a = x.abs()
    e = math.e * torch.exp(-a)
    return x * e, e * (1.0 - a)


# --- Section 4 search candidates -------------------------------------------------------------------------------------

def _satursin_vg(x):
    inside = x.abs() < math.pi / 2
    return torch.sin(x.clamp(-math.pi / 2, math.pi / 2)), torch.cos(x) * inside


def _exproot_vg(x):
    r = x.abs().sqrt()
    e = torch.exp(-r)
    r_safe = x.abs().clamp_min(SINGULAR_EPS).sqrt()
    return torch.sign(x) * (1.0 - e), torch.exp(-r_safe) / (2.0 * r_safe)


def _linearclip_vg(x):
    return x.clamp(-1.0, 1.0), (x.abs() < 1.0).to(x.dtype)


def _expsign_vg(x):
    e = torch.exp(-x.abs())
    return torch.sign(x) * (1.0 - e), e


def _relsign_vg(x):
    r = torch.sqrt(1.0 + x * x)
    return x / (r + 1.0), 1.0 / (r * (r + 1.0))


def _smoothsign_vg(x):
    d = 1.0 + x.abs()
    return x / d, 1.0 / (d * d)


def _saturlog_vg(x):
    a = x.abs()
    lg = torch.log1p(a)
    d = lg + 1.0
    return torch.sign(x) * lg / d, 1.0 / (d * d * (1.0 + a))


def _cubsign_vg(x):
    x2 = x * x
    d = x2 * x.abs() + 1.0
    return x2 * x / d, 3.0 * x2 / (d * d)


BASES: dict[str, Base] = {
    "erf": Base(torch.erf, _erf_vg, "erf(x)"),
    "tanh": Base(torch.tanh, _tanh_vg, "tanh(x)"),
    "arctan": Base(lambda x: _TWO_OVER_PI * torch.atan(x), _arctan_vg, "(2/π)·atan(x)"),
    "isru": _from_vg(_isru_vg, "x/√(1+x²)"),
    "arcsinh": Base(torch.asinh, _arcsinh_vg, "arcsinh(x)"),
    "logsign": _from_vg(_logsign_vg, "sign(x)·ln(|x|+1)"),
    "logquad": _from_vg(_logquad_vg, "sign(x)·ln(x²+1)"),
    "power23": _from_vg(_power23_vg, "sign(x)·|x|^(2/3)"),
    "linear": Base(lambda x: x, _linear_vg, "x"),
    "sin": Base(torch.sin, _sin_vg, "sin(x)"),
    "dampx": _from_vg(_dampx_vg, "2x/(1+x²)"),
    "dampexp": _from_vg(_dampexp_vg, "e·x·e^(−|x|)"),
    "satursin": _from_vg(_satursin_vg, "sin(clip(x, −π/2, π/2))"),
    "arcsinhclip": _from_vg(clip_vg(_arcsinh_vg), "clip(arcsinh(x), −1, 1)"),
    "exproot": _from_vg(_exproot_vg, "sign(x)·(1 − e^(−√|x|))"),
    "linearclip": _from_vg(_linearclip_vg, "clip(x, −1, 1)"),
    "expsign": _from_vg(_expsign_vg, "−sign(x)·(e^(−|x|) − 1)"),
    "logsignclip": _from_vg(clip_vg(_logsign_vg), "clip(sign(x)·ln(|x|+1), −1, 1)"),
    "relsign": _from_vg(_relsign_vg, "x/(√(x²+1) + 1)"),
    "smoothsign": _from_vg(_smoothsign_vg, "x/(1+|x|)"),
    "logquadclip": _from_vg(clip_vg(_logquad_vg), "clip(sign(x)·ln(x²+1), −1, 1)"),
    "power23clip": _from_vg(clip_vg(_power23_vg), "clip(sign(x)·|x|^(2/3), −1, 1)"),
    "saturlog": _from_vg(_saturlog_vg, "sign(x)·ln(|x|+1)/(ln(|x|+1)+1)"),
    "cubsign": _from_vg(_cubsign_vg, "x³/(|x|³+1)"),
}
