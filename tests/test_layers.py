"""PointwiseNorm: initialisation, output, gradients against plain autograd, memory frugality, timm's norm_layer."""
import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lab
from lab.layers import PointwiseNorm

SPECS = ["erf", "tanh|hshift=0.5", "arctan|vshift=-1", "arcsinh|clip=1", "isru|blend=0.1", "erf|flat=0.5",
         "erf|neg", "sin", "dampx", "dampexp", "power23", "logquad", "linear"]


def reference_forward(layer: PointwiseNorm, x):
    """The layer written as plain autograd ops (the reference the fused function must match)."""
    u = layer.alpha * x + (layer.shift if layer.shift is not None else 0.0)
    return layer.weight * layer.fn.value(u) + layer.bias


def test_initialisation():
    layer = PointwiseNorm(6, "erf", alpha0=0.7, shift=0.25)
    assert layer.alpha.item() == pytest.approx(0.7) and layer.alpha.dim() == 0
    assert layer.shift.item() == 0.25 and layer.shift.dim() == 0
    assert torch.equal(layer.weight, torch.ones(6)) and torch.equal(layer.bias, torch.zeros(6))
    assert PointwiseNorm(6, "tanh").shift is None      # Section 3: no s
    assert "spec='tanh'" in repr(PointwiseNorm(6, "tanh"))


def test_output_is_gamma_f_alpha_x_plus_s_plus_beta():
    layer = PointwiseNorm(3, "tanh", alpha0=0.5, shift=0.2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        layer.bias.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 2.0, -1.0]]) * torch.tanh(0.5 * torch.tensor([[1.0, -2.0, 0.0]]) + 0.2) \
        + torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(layer(x), expected.double())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shift", [None, 0.1])
def test_fused_gradients_match_plain_autograd(spec, shift):
    torch.manual_seed(0)
    layer = PointwiseNorm(5, spec, alpha0=0.8, shift=shift).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 7, 5, dtype=torch.float64) * 2 + 0.013).requires_grad_()
    g = torch.randn(2, 7, 5, dtype=torch.float64)
    params = [x] + list(layer.parameters())
    fused = torch.autograd.grad((layer(x) * g).sum(), params)
    plain = torch.autograd.grad((reference_forward(layer, x) * g).sum(), params)
    torch.testing.assert_close(layer(x), reference_forward(layer, x))
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not (torch.cuda.is_available() and lab.layers.fuses_on("cuda")),
                                                     reason="needs a GPU with Triton (run on the accelerator)"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("spec, shift", [("erf", 0.0), ("erf|flat=0.5|neg", None), ("sin|hshift=0.5", None)])
def test_generated_kernels_match_the_reference(spec, shift, device, monkeypatch):
    """The eager kernels inductor generates (Triton on a GPU; forced on the CPU here) give the reference's numbers."""
    monkeypatch.setattr(lab.layers, "FUSED_DEVICE_TYPES", {device})
    torch.manual_seed(0)
    layer = PointwiseNorm(16, spec, shift=shift, device=device)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(3, 9, 16, device=device) * 3).requires_grad_()
    params = [x] + list(layer.parameters())
    calls = []
    kernels = lab.layers._fused(layer.spec)
    monkeypatch.setattr(lab.layers, "_fused", lambda s: calls.append(s) or kernels)
    y = layer(x)
    g = torch.linspace(-1, 1, 16, device=device)
    generated = torch.autograd.grad((y * g).sum(), params)
    plain = torch.autograd.grad((reference_forward(layer, x) * g).sum(), params)
    assert calls == [layer.spec] * 2             # forward and backward both ran the generated kernels
    torch.testing.assert_close(y, reference_forward(layer, x))
    for a, b in zip(generated, plain):
        torch.testing.assert_close(a, b)


EVERY_TRANSFORM = "|".join(["erf", *(f"{n}=0.5" if t.domain else n for n, t in lab.perturb.TRANSFORMS.items())])
"""erf under every transform in turn (0.5 is in every domain)."""


@pytest.mark.parametrize("spec", [*lab.BASES, EVERY_TRANSFORM])
def test_every_base_and_transform_traces_as_one_graph(spec):
    """The GPU's generated kernels compile f (forward) and (f, f') (backward) with fullgraph=True: a base with Python
    control flow on tensor values would fail there at its first step, so it fails here, on the CPU (tracing only)."""
    lab.layers.raise_recompile_limit(256)       # one code object (the lambda) for every spec in this process
    fn = lab.pointwise(spec)
    both = torch.compile(lambda x: (fn.value(x), *fn.value_and_grad(x)), fullgraph=True, backend="eager")
    both(torch.randn(3, 8))


def test_dispatch_modes_get_the_plain_expression(monkeypatch):
    """FlopCounterMode (lab bench counts FLOPs first) cannot run compiled code: plain ops there, kernels after."""
    from torch.utils.flop_counter import FlopCounterMode
    monkeypatch.setattr(lab.layers, "FUSED_DEVICE_TYPES", {"cpu"})
    layer = PointwiseNorm(8, "erf|hshift=0.5")
    x = torch.randn(2, 8, requires_grad=True)
    with FlopCounterMode(display=False):
        assert not lab.layers._use_fused(x)
        layer(x).sum().backward()
    assert lab.layers._use_fused(x)


def test_plain_kernels_turns_the_generated_kernels_off_meanwhile(monkeypatch):
    """bench's eager-plain measures what the generated kernels save: the plain expression inside, kernels after."""
    monkeypatch.setattr(lab.layers, "FUSED_DEVICE_TYPES", {"cpu"})
    x = torch.randn(2, 8)
    with lab.layers.plain_kernels():
        assert not lab.layers._use_fused(x)
    assert lab.layers._use_fused(x)


def test_a_compiled_model_traces_the_plain_expression(monkeypatch):
    """Inside torch.compile the layer is traced as plain ops (inductor fuses them with their neighbours)."""
    monkeypatch.setattr(lab.layers, "FUSED_DEVICE_TYPES", {"cpu"})
    monkeypatch.setattr(lab.layers, "_fused", lambda s: pytest.fail("per-spec kernel called inside torch.compile"))
    layer = PointwiseNorm(8, "tanh|hshift=0.5")
    x = torch.randn(2, 8, requires_grad=True)
    torch.compile(layer)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()



def test_a_compiled_model_is_one_graph_where_kernels_are_generated(monkeypatch):
    """On a GPU the device probe cannot be traced (dynamo breaks the graph there, as torch 2.11 did in every layer,
    which broke CUDA graphs): inside torch.compile the layer must not reach it."""
    def untraceable_probe(device_type):
        torch._dynamo.graph_break()
        return True
    monkeypatch.setattr(lab.layers, "fuses_on", untraceable_probe)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), PointwiseNorm(8, "erf"), torch.nn.Linear(8, 8))
    x = torch.randn(2, 8, requires_grad=True)
    torch.compile(model, fullgraph=True, backend="aot_eager")(x).sum().backward()   # fullgraph: a break raises
    assert x.grad is not None

def test_gradcheck():
    layer = PointwiseNorm(4, "erf|hshift=0.3|clip=0.9", shift=0.1).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda x, a, s, w, b: torch.ops.aten.add(  # noqa: E731
        torch.zeros(()), lab.layers._PointwiseAffine.apply(x, a, s, w, b, layer.fn))
    assert torch.autograd.gradcheck(fn, (x, layer.alpha, layer.shift, layer.weight, layer.bias))


def test_saves_only_the_input_for_backward():
    layer = PointwiseNorm(8, "erf|hshift=0.5|flat=0.1|blend=0.1")
    x = torch.randn(4, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x)
    big = [t for t in saved if t.numel() > 8]
    assert len(big) == 1 and big[0] is x


def test_norm_layer_is_a_timm_constructor():
    ctor = lab.norm_layer("erf|vshift=0.5", alpha0=0.3)
    layer = ctor(16, device="cpu", dtype=torch.float64)
    assert isinstance(layer, PointwiseNorm) and layer.spec == "erf|vshift=0.5"
    assert layer.alpha.item() == pytest.approx(0.3) and layer.weight.dtype == torch.float64
    assert isinstance(lab.norm_layer("layernorm")(16), nn.LayerNorm)
    assert type(lab.norm_layer("rmsnorm")(16)).__name__ == "RmsNorm"
    assert lab.norm_layer("layernorm")(16).eps == 1e-6 and lab.norm_layer("layernorm", eps=1e-5)(16).eps == 1e-5
    assert lab.norm_layer("rmsnorm")(16).eps == 1e-6            # timm ViT's, as LayerNorm's
    assert lab.norm_layer("erf")(16).alpha.item() == 0.5         # the paper's α0
    assert lab.norm_layer("erf", dtype=torch.float64)(16).weight.dtype == torch.float64
    with pytest.raises(ValueError, match="unknown base function"):
        lab.norm_layer("erff")


def test_derf_is_a_norm_name_for_erf_with_a_learnable_shift():
    layer = lab.norm_layer("Derf")(16)
    assert isinstance(layer, PointwiseNorm) and layer.spec == "erf" and layer.shift.item() == 0.0
    assert lab.norm_layer("derf", shift=0.25)(16).shift.item() == 0.25 and lab.canonical_norm(" DERF ") == "derf"
    model = lab.build_model("vit", norm="derf", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    assert [type(m).__name__ for m in model.modules() if m.__class__.__name__.endswith("Norm")] == ["PointwiseNorm"] * 5
    assert all(m.shift is not None for m in model.modules() if isinstance(m, PointwiseNorm))
    with pytest.raises(ValueError, match="or derf"):
        lab.norm_layer("derff")


def test_derf_and_dyt():
    derf, dyt = PointwiseNorm(4, "erf", shift=0.0), PointwiseNorm(4, "tanh")
    assert derf.shift is not None and derf.shift.requires_grad and dyt.shift is None
    x = torch.randn(2, 4)
    torch.testing.assert_close(dyt(x), torch.tanh(0.5 * x))
    torch.testing.assert_close(derf(x), torch.erf(0.5 * x))


def test_bf16_autocast_runs():
    layer = PointwiseNorm(8, "erf")
    x = torch.randn(2, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = nn.Linear(8, 8)(x)
        out = layer(y)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("spec", ["isru", "logquad", "dampx", "relsign", "cubsign", "erf|flat=0.5"])
def test_a_half_precision_layer_computes_in_fp32_and_returns_its_dtype(spec):
    """A .half() layer at |x| up to 1000: u² would overflow fp16 (65504) at |u| ≈ 256, giving inf or NaN."""
    x = torch.linspace(-1000, 1000, 201).reshape(1, -1, 1).repeat(1, 1, 4)
    half, full = PointwiseNorm(4, spec, shift=0.1).half(), PointwiseNorm(4, spec, shift=0.1)
    xh, xf = x.half().requires_grad_(), x.clone().requires_grad_()
    y = half(xh)
    y.sum().backward()
    full(xf).sum().backward()
    assert y.dtype == xh.grad.dtype == half.alpha.grad.dtype == torch.float16
    torch.testing.assert_close(y.float(), full(x), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(xh.grad.float(), xf.grad, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(half.alpha.grad.float(), full.alpha.grad, rtol=2e-3, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_low_precision_layer_rounds_once_at_its_output(dtype):
    """Computed in fp32 from its low-precision input and parameters: exactly the fp32 layer's output, rounded."""
    low = PointwiseNorm(4, "erf|hshift=0.3", shift=0.1).to(dtype)
    full = copy.deepcopy(low).float()
    x = (10 * torch.randn(256, 4)).to(dtype)
    assert torch.equal(low(x), full(x.float()).to(dtype))


def test_the_recompile_limit_falls_back_to_older_torchs_name(monkeypatch):
    """torch without `recompile_limit` (pyproject allows torch>=2.4) calls the limit `cache_size_limit`: a spec's
    kernels raise that one to 64 (they raised an AttributeError), and a raise never lowers it."""
    older = SimpleNamespace(cache_size_limit=8)
    monkeypatch.setattr(torch._dynamo, "config", older)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    lab.layers._fused.__wrapped__("erf")          # uncached: the spec's kernels built anew
    assert older.cache_size_limit == 64
    lab.layers.raise_recompile_limit(16)
    assert older.cache_size_limit == 64
    lab.layers.raise_recompile_limit(80)
    assert older.cache_size_limit == 80 and not hasattr(older, "recompile_limit")


def test_the_output_dtype_is_the_promotion_of_the_input_and_the_parameters():
    """As nn.LayerNorm's: fp32 parameters lift a bf16 input to fp32, a float64 layer gives float64."""
    x = torch.randn(2, 8)
    assert PointwiseNorm(8, "erf")(x.bfloat16()).dtype == torch.float32
    assert PointwiseNorm(8, "erf").double()(x).dtype == torch.float64


def test_a_gpu_without_triton_runs_the_layer_unfused(monkeypatch):
    """The generated kernels need Triton: a CUDA machine without it falls back to the reference ops."""
    monkeypatch.setattr(lab.layers, "FUSED_DEVICE_TYPES", {"cuda"})
    monkeypatch.setattr(lab.layers, "_has_triton", lambda: False)
    assert not lab.layers.fuses_on("cuda")
