"""The layer y = γ·f(αx + s) + β that replaces every LayerNorm, and the `norm_layer` registry timm takes.

One autograd function covers the whole layer and saves only its input x (plus the tiny parameters): backward recomputes
f(u) and f'(u) from it. Autograd through the composed expression would keep αx, αx+s, f(u) and every intermediate of
f alive per layer per block; here the memory is that of one activation, which the residual stream keeps anyway.
"""
import functools

import torch
from timm.layers import RmsNorm
from torch import Tensor, nn

from .perturb import Pointwise, canonical, pointwise

NORMALIZATIONS = {
    "layernorm": functools.partial(nn.LayerNorm, eps=1e-6),   # timm ViT's own default
    "rmsnorm": functools.partial(RmsNorm, eps=1e-6),
}


def _per_channel(grad: Tensor) -> Tensor:
    """Sum a gradient over every dimension but the last (the channels of γ and β)."""
    return grad.reshape(-1, grad.shape[-1]).sum(0)


def _argument(x: Tensor, alpha: Tensor, shift: Tensor | None) -> Tensor:
    return alpha * x if shift is None else alpha * x + shift


class _PointwiseAffine(torch.autograd.Function):
    """y = γ·f(αx + s) + β; saves x, α, s, γ and recomputes f, f' in backward."""

    @staticmethod
    def forward(ctx, x, alpha, shift, weight, bias, fn):
        ctx.fn = fn
        ctx.save_for_backward(x, alpha, weight, *([] if shift is None else [shift]))
        return torch.addcmul(bias, weight, fn.value(_argument(x, alpha, shift)))

    @staticmethod
    def backward(ctx, grad):
        x, alpha, weight, *shift = ctx.saved_tensors
        u = _argument(x, alpha, shift[0] if shift else None)
        fu, dfu = ctx.fn.value_and_grad(u)
        grad_u = grad * weight * dfu
        grad_x = grad_u * alpha if ctx.needs_input_grad[0] else None
        grad_alpha = (grad_u * x).sum().reshape(alpha.shape) if ctx.needs_input_grad[1] else None
        grad_shift = grad_u.sum().reshape(shift[0].shape) if shift and ctx.needs_input_grad[2] else None
        grad_weight = _per_channel(grad * fu) if ctx.needs_input_grad[3] else None
        grad_bias = _per_channel(grad) if ctx.needs_input_grad[4] else None
        return grad_x, grad_alpha, grad_shift, grad_weight, grad_bias, None


class PointwiseNorm(nn.Module):
    """y = γ·f(αx + s) + β over the last dimension: α a learnable scalar (init alpha0), γ/β per-channel (init 1/0).

    shift=None: no s, the Section-3 layer. A float: a learnable scalar s initialised to it (Section 4);
    Derf = PointwiseNorm(dim, "erf", shift=0.0), DyT = PointwiseNorm(dim, "tanh").
    """

    def __init__(self, dim: int, spec: str = "erf", alpha0: float = 0.5, shift: float | None = None,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.fn: Pointwise = pointwise(spec)
        self.dim = dim
        self.alpha0 = alpha0
        self.alpha = nn.Parameter(torch.full((), float(alpha0), **factory))
        self.shift = None if shift is None else nn.Parameter(torch.full((), float(shift), **factory))
        self.weight = nn.Parameter(torch.ones(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory))

    @property
    def spec(self) -> str:
        return self.fn.spec

    def forward(self, x: Tensor) -> Tensor:
        return _PointwiseAffine.apply(x, self.alpha, self.shift, self.weight, self.bias, self.fn)

    def extra_repr(self) -> str:
        shift = "None" if self.shift is None else "learnable"
        return f"{self.dim}, spec={self.spec!r}, alpha0={self.alpha0}, shift={shift}"


def canonical_norm(name: str) -> str:
    """Canonical name of a norm choice: "layernorm", "rmsnorm" or a canonical point-wise spec (ValueError if bad)."""
    if isinstance(name, str) and name.strip().lower() in NORMALIZATIONS:
        return name.strip().lower()
    try:
        return canonical(name)
    except ValueError as err:
        raise ValueError(f"{err} (or a normalization baseline: {', '.join(NORMALIZATIONS)})") from None


def is_norm_name(name: str) -> bool:
    """True if `name` is a valid norm choice (see canonical_norm)."""
    try:
        canonical_norm(name)
        return True
    except ValueError:
        return False


def norm_layer(spec: str, alpha0: float = 0.5, shift: float | None = None):
    """A constructor timm accepts as `norm_layer` (called `norm_layer(dim, **factory_kwargs)`).

    "layernorm" and "rmsnorm" give the normalization baselines (alpha0/shift do not apply to them).
    """
    name = canonical_norm(spec)
    if name in NORMALIZATIONS:
        return NORMALIZATIONS[name]
    return functools.partial(PointwiseNorm, spec=name, alpha0=alpha0, shift=shift)
