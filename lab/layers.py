"""The layer y = γ·f(αx + s) + β that replaces every LayerNorm, and the `norm_layer` registry timm takes.

One autograd function covers the whole layer and saves only its input x (plus the tiny parameters): backward recomputes
f(u) and f'(u) from it. Autograd through the composed expression would keep αx, αx+s, f(u) and every intermediate of
f alive per layer per block; here the memory is that of one activation, which the residual stream keeps anyway.
On a GPU in eager mode the forward and backward bodies run as kernels that inductor generates once per spec (one
elementwise pass forward; one pass plus its reductions backward), instead of a dozen separate elementwise ops.
"""
import contextlib
import functools

import torch
from timm.layers import RmsNorm
from torch import Tensor, nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from .functions import BASES
from .perturb import Pointwise, UnknownBase, canonical, did_you_mean, pointwise

NORMALIZATIONS = {
    "layernorm": functools.partial(nn.LayerNorm, eps=1e-6),   # timm ViT's own default
    "rmsnorm": functools.partial(RmsNorm, eps=1e-6),
}
BASELINE = "layernorm"
"""The normalization every table is read against: a cell of every sweep, the row below every rendered table."""
DERF = "derf"
"""Section 4's Derf, γ·erf(αx + s) + β with s learnable from 0: a norm name beside the baselines, since a spec names
f alone and s is the layer's."""
NORM_NAMES = (*NORMALIZATIONS, DERF)
"""The norm choices that are names rather than point-wise specs."""


def _per_channel(grad: Tensor) -> Tensor:
    """Sum a gradient over every dimension but the last (the channels of γ and β)."""
    return grad.reshape(-1, grad.shape[-1]).sum(0)


def _argument(x: Tensor, alpha: Tensor, shift: Tensor | None) -> Tensor:
    """u = αx + s, in fp32 for a half-precision x, as LayerNorm computes its statistics: in fp16, u² overflows at
    |u| ≈ 256 (isru, logquad, dampx, relsign, cubsign). The fused kernels compute in fp32 anyway; now the plain path
    agrees with them."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return alpha * x if shift is None else alpha * x + shift


def _forward(x, alpha, shift, weight, bias, fn: Pointwise) -> Tensor:
    """y in the promotion of x's and the parameters' dtypes, as nn.LayerNorm's. A cast to the dtype y already has is
    left out: torch 2.11's compiled backward of the layer on a CPU gave zero gradients for every input then."""
    y = torch.addcmul(bias, weight, fn.value(_argument(x, alpha, shift)))
    dtype = torch.promote_types(x.dtype, weight.dtype)
    return y if y.dtype == dtype else y.to(dtype)


def _backward(grad, x, alpha, shift, weight, fn: Pointwise):
    """Every input's gradient from the output's: f(u) and f'(u) are recomputed from x, nothing else was kept.

    Written for inductor, which then fuses the whole backward into one kernel that reads grad and x once, as it does
    LayerNorm's (row and column reductions together; `lab bench --traffic` counts it): the scalar gradients of α and s
    are row sums and then a sum, γ enters each after grad·f'(u), and grad_x comes after them. Each of the three
    matters: a full sum, γ inside the shared grad·f'(u) (with s), or grad_x first makes inductor store an
    intermediate and read it back.
    """
    u = _argument(x, alpha, shift)
    fu, dfu = fn.value_and_grad(u)
    grad_fu = grad * dfu                                  # ∂loss/∂u without γ

    def total(t: Tensor) -> Tensor:
        return (t * weight).sum(-1).sum()

    grad_shift = None if shift is None else total(grad_fu).reshape(shift.shape)
    grad_alpha = total(grad_fu * x).reshape(alpha.shape)
    grad_x = grad_fu * (weight * alpha)
    return grad_x, grad_alpha, grad_shift, _per_channel(grad * fu), _per_channel(grad)


FUSED_DEVICE_TYPES = {"cuda"}
"""Devices where eager mode runs _forward/_backward as inductor-generated kernels (Triton on a GPU): one fused
elementwise pass forward, one pass plus its reductions backward, for any spec. Elsewhere (CPU, or inside a model that
torch.compile already traces, which fuses the plain expression itself) the plain torch expression runs."""


@functools.cache
def _fused(spec: str):
    """(forward, backward) of `spec`, compiled on first use per dtype. Shapes are torch's automatic dynamic: the first
    shape (training's) gets kernels specialised to it, a second shape (evaluation's) one kernel for all others. The
    specialised backward is one pass over the activations; the dynamic one splits its row sums off into a second."""
    fn = pointwise(spec)
    # entries per spec × dtype × (with/without s) × (first shape, any other) share two code objects: let them coexist
    raise_recompile_limit(64)
    compile = functools.partial(torch.compile, fullgraph=True)
    return (compile(functools.partial(_forward, fn=fn)), compile(functools.partial(_backward, fn=fn)))


def raise_recompile_limit(at_least: int) -> None:
    """Raise dynamo's limit of cache entries per code object to at least `at_least`, for the rest of the process (never
    lowering it: a higher limit only lets more variants compile instead of running eager). The limit is
    `recompile_limit`, called `cache_size_limit` in the older torch that pyproject's torch>=2.4 still allows."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), at_least))


@contextlib.contextmanager
def plain_kernels():
    """Eager mode runs the plain torch expression on every device meanwhile (bench's eager-plain: what fusing saves)."""
    global FUSED_DEVICE_TYPES
    saved, FUSED_DEVICE_TYPES = FUSED_DEVICE_TYPES, set()
    try:
        yield
    finally:
        FUSED_DEVICE_TYPES = saved


def fuses_on(device_type: str) -> bool:
    """Whether eager mode on this device type runs the generated kernels (a listed device, and Triton for CUDA)."""
    return device_type in FUSED_DEVICE_TYPES and (device_type != "cuda" or _has_triton())


@functools.cache
def _has_triton() -> bool:
    from torch.utils._triton import has_triton
    return has_triton()


def _use_fused(x: Tensor) -> bool:
    """On a fusing device, outside torch.compile's tracing and outside dispatch modes (FlopCounterMode, fake tensors),
    in which compiled code cannot run. Tracing is asked first: dynamo cannot trace `fuses_on`'s Triton probe, and a
    graph break in every layer splits a compiled model (and its CUDA graphs) into pieces."""
    return not torch.compiler.is_compiling() and fuses_on(x.device.type) and not is_in_torch_dispatch_mode()


class _PointwiseAffine(torch.autograd.Function):
    """y = γ·f(αx + s) + β; saves x, α, s, γ and recomputes f, f' in backward."""

    @staticmethod
    def forward(ctx, x, alpha, shift, weight, bias, fn):
        ctx.fn = fn
        ctx.save_for_backward(x, alpha, weight, *([] if shift is None else [shift]))
        forward = _fused(fn.spec)[0] if _use_fused(x) else functools.partial(_forward, fn=fn)
        return forward(x, alpha, shift, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, alpha, weight, *shift = ctx.saved_tensors
        backward = _fused(ctx.fn.spec)[1] if _use_fused(x) else functools.partial(_backward, fn=ctx.fn)
        grads = backward(grad, x, alpha, shift[0] if shift else None, weight)
        return *(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None


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
    """Canonical name of a norm choice: "layernorm", "rmsnorm", "derf" or a canonical point-wise spec (ValueError if
    bad)."""
    if isinstance(name, str) and name.strip().lower() in NORM_NAMES:
        return name.strip().lower()
    try:
        return canonical(name)
    except UnknownBase as err:      # (a bad transform of a known function has no baseline for an alternative)
        closer = "" if not err.base or did_you_mean(err.base, BASES) else did_you_mean(err.base, NORM_NAMES)
        raise ValueError(f"{err} (or a normalization baseline: {', '.join(NORMALIZATIONS)}; or {DERF}){closer}") \
            from None


def is_norm_name(name: str) -> bool:
    """True if `name` is a valid norm choice (see canonical_norm)."""
    try:
        canonical_norm(name)
        return True
    except ValueError:
        return False


def norm_layer(spec: str, alpha0: float = 0.5, shift: float | None = None, **kw):
    """A constructor timm accepts as `norm_layer` (called `norm_layer(dim, **factory_kwargs)`); `kw` are the layer's
    own options (`eps` of a baseline, say).

    "layernorm" and "rmsnorm" give the normalization baselines (alpha0/shift do not apply to them); "derf" is erf with
    the shift s learnable, from `shift` or 0.
    """
    name = canonical_norm(spec)
    if name in NORMALIZATIONS:
        return functools.partial(NORMALIZATIONS[name], **kw)
    if name == DERF:
        name, shift = "erf", 0.0 if shift is None else shift
    return functools.partial(PointwiseNorm, spec=name, alpha0=alpha0, shift=shift, **kw)
