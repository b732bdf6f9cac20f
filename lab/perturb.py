"""The Section-3 perturbations as composable wrappers, and the spec string that names a point-wise function.

A spec is `BASE` followed by any number of `|TRANSFORM` or `|TRANSFORM=VALUE`, applied left to right, each wrapping the
function built so far: "erf|hshift=0.5|neg" is −erf(x + 0.5). This module is the one place that parses specs.

Canonical form: lower case, numbers as Python's shortest float repr without a trailing ".0" ("0.5", "2", "-1"), and
identity transforms dropped ("erf|hshift=0" is "erf"), so the spellings of one spec share one name across configs,
result files, tables and legends. Specs that are equal as functions but built differently keep their own names
("erf|neg|neg" is not "erf"; "erf|hshift=0.5|hshift=0.5" is not "erf|hshift=1"): the name records the construction.
"""
import difflib
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .functions import BASES, clip_vg

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class Transform(NamedTuple):
    """How a transform rewraps f and (f, f'), which λ it accepts, and which λ leaves f unchanged."""
    wrap_value: Callable[[Callable[[Tensor], Tensor], float], Callable[[Tensor], Tensor]]
    wrap: Callable[[ValueAndGrad, float], ValueAndGrad]
    domain: str                  # human-readable domain of λ ("" for a transform that takes no value)
    valid: Callable[[float], bool]
    identity: float | None       # λ for which the transform is the identity (dropped from canonical names)
    formula: str


def _hshift(vg, lam):                 # Eq. 5, horizontal: f(x + λ)
    return lambda x: vg(x + lam)


def _vshift(vg, lam):                 # Eq. 5, vertical: f(x) + λ
    def shifted(x):
        y, dy = vg(x)
        return y + lam, dy
    return shifted


def _blend(vg, lam):                  # Eq. 7: (1 − λ)·f(x) + λ·x
    def blended(x):
        y, dy = vg(x)
        return (1.0 - lam) * y + lam * x, (1.0 - lam) * dy + lam
    return blended


def _flat(vg, lam):                   # Table 5: 0 on |x| ≤ λ, branches shifted outward: f(x − sign(x)·λ)
    def flattened(x):
        outside = x.abs() > lam
        y, dy = vg(x - torch.sign(x) * lam)
        return y * outside, dy * outside
    return flattened


def _neg(vg, _lam):                   # Table 6a: −f(x)
    def negated(x):
        y, dy = vg(x)
        return -y, -dy
    return negated


TRANSFORMS: dict[str, Transform] = {
    "hshift": Transform(lambda f, lam: lambda x: f(x + lam), _hshift,
                        "λ any real number", lambda v: True, 0.0, "f(x + λ)"),
    "vshift": Transform(lambda f, lam: lambda x: f(x) + lam, _vshift,
                        "λ any real number", lambda v: True, 0.0, "f(x) + λ"),
    "clip": Transform(lambda f, lam: lambda x: f(x).clamp(-lam, lam), clip_vg,
                      "λ > 0", lambda v: v > 0, None, "clip(f(x), −λ, λ)"),
    "blend": Transform(lambda f, lam: lambda x: (1.0 - lam) * f(x) + lam * x, _blend,
                       "0 ≤ λ ≤ 1", lambda v: 0 <= v <= 1, 0.0, "(1 − λ)·f(x) + λ·x"),
    "flat": Transform(lambda f, lam: lambda x: f(x - torch.sign(x) * lam) * (x.abs() > lam), _flat,
                      "λ ≥ 0", lambda v: v >= 0, 0.0, "0 on |x| ≤ λ, else f(x − sign(x)·λ)"),
    "neg": Transform(lambda f, lam: lambda x: -f(x), _neg,
                     "", lambda v: True, None, "−f(x)"),
}


def format_number(value: float) -> str:
    """Canonical number text: shortest round-trip repr, no trailing '.0', no negative zero."""
    text = repr(float(value) + 0.0)
    return text[:-2] if text.endswith(".0") else text


def _choices(names) -> str:
    return ", ".join(names)


def did_you_mean(word, choices) -> str:
    """The suffix " (did you mean 'x'?)" naming the choice closest to a misspelt `word`, or "" when none is close:
    one wording for every error that names a bad word."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _transform_usage() -> str:
    return _choices(f"{n}=λ ({t.domain})" if t.domain else n for n, t in TRANSFORMS.items())


class UnknownBase(ValueError):
    """A spec without a base function, or with one that BASES lacks (`base`: what it gave, "" if nothing); lab.layers
    names the normalization baselines as the other choices then."""

    def __init__(self, message: str, base: str = ""):
        super().__init__(message)
        self.base = base


def parse(spec: str) -> tuple[str, tuple[tuple[str, float | None], ...]]:
    """Split a spec into (base, ((transform, λ or None), ...)) with identity transforms removed; ValueError if bad."""
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownBase(f"empty point-wise spec {spec!r}; start with a base function: {_choices(BASES)}")
    base, *parts = [p.strip() for p in spec.strip().lower().split("|")]
    if base not in BASES:
        raise UnknownBase(f"unknown base function '{base}' in spec '{spec}'{did_you_mean(base, BASES)}; "
                          f"choose one of: {_choices(BASES)}", base)
    transforms = []
    for part in parts:
        name, has_value, text = (p.strip() for p in part.partition("="))
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform '{name}' in spec '{spec}'{did_you_mean(name, TRANSFORMS)}; "
                             f"choose one of: {_transform_usage()}")
        transform = TRANSFORMS[name]
        if not transform.domain:
            if has_value:
                raise ValueError(f"transform '{name}' takes no value, got '{part}' in spec '{spec}'")
            transforms.append((name, None))
            continue
        if not has_value:
            raise ValueError(f"transform '{name}' needs a value ({name}=λ, {transform.domain}) in spec '{spec}'")
        try:
            if "_" in text:      # float() reads Python's 1_0 as 10: not how a spec writes a number
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise ValueError(f"bad number '{text}' for transform '{name}' in spec '{spec}'; "
                             f"expected {name}=λ, {transform.domain}") from None
        if not math.isfinite(value) or not transform.valid(value):
            raise ValueError(f"{name}={text} is outside its domain ({transform.domain}) in spec '{spec}'")
        if value != transform.identity:
            transforms.append((name, value + 0.0))
    return base, tuple(transforms)


def canonical(spec: str) -> str:
    """The one name of the function a spec denotes (see module docstring)."""
    base, transforms = parse(spec)
    return "|".join([base] + [name if lam is None else f"{name}={format_number(lam)}" for name, lam in transforms])


class _Pointwise(torch.autograd.Function):
    """y = f(x) saving only x: backward recomputes f'(x) from it (no chain of intermediates kept alive)."""

    @staticmethod
    def forward(ctx, x, fn):
        ctx.save_for_backward(x)
        ctx.fn = fn
        return fn.value(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.fn.value_and_grad(x)[1], None


@dataclass(frozen=True, eq=False)
class Pointwise:
    """A point-wise function named by its canonical spec; call it on a tensor (autograd through `_Pointwise`).

    `value(x)` is f(x) alone (the forward pass); `value_and_grad(x)` is (f(x), f'(x)) (recomputed in backward).
    """
    spec: str
    value: Callable[[Tensor], Tensor]
    value_and_grad: ValueAndGrad

    def __call__(self, x: Tensor) -> Tensor:
        return _Pointwise.apply(x, self)

    def at(self, x):
        """f at an array of points, as an array (no autograd): for plots and measurements."""
        with torch.no_grad():
            return self.value(torch.from_numpy(x)).numpy()

    def __eq__(self, other):
        return isinstance(other, Pointwise) and other.spec == self.spec

    def __hash__(self):
        return hash(self.spec)

    def __repr__(self):
        return f"pointwise({self.spec!r})"


def pointwise(spec: str) -> Pointwise:
    """Build the point-wise function named by `spec` ("erf", "erf|hshift=0.5", "arcsinh|clip=1", ...)."""
    base, transforms = parse(spec)
    f, vg = BASES[base].value, BASES[base].value_and_grad
    for name, lam in transforms:
        f, vg = TRANSFORMS[name].wrap_value(f, lam), TRANSFORMS[name].wrap(vg, lam)
    return Pointwise(canonical(spec), f, vg)
