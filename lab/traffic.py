"""`lab bench --traffic`: the memory traffic of one norm layer's compiled training step, by inductor's own count,
for an H100 target, on any machine (no GPU is used).

A norm layer is memory-bound: its speed is the bytes its kernels move. Here the layer sits as in a ViT block (its input
a residual sum; under bf16 autocast its output is cast for the next matmul), AOTAutograd splits forward and backward
as training does, and inductor generates their Triton kernels for an H100: its scheduler makes the real fusion
decisions and counts the bytes each kernel reads and writes. Nothing is compiled by Triton or run. Traffic is given
in activations (one fp32 tensor of the layer's input shape). LayerNorm's backward fuses into one kernel; a point-wise
norm should move no more than it does. Bytes are not times: `lab bench` on a GPU times the kernels.
It stands in for the GPU through inductor's private functions (checked on torch 2.11 and 2.14): a torch that renames
one makes this fail loudly (mock's AttributeError).
"""
import contextlib
from types import SimpleNamespace
from unittest import mock

import torch
from torch._functorch.aot_autograd import aot_function, make_boxed_func

from .layers import BASELINE, norm_layer

SHAPE = (256, 197, 768)     # ViT-B/16 at 224 px, batch 256: the shape `lab bench` times on a GPU
H100 = {"name": "NVIDIA H100 80GB HBM3", "major": 9, "minor": 0, "multi_processor_count": 132, "warp_size": 32,
        "regs_per_multiprocessor": 65536, "max_threads_per_multi_processor": 2048, "total_memory": 80 * 2**30,
        "shared_memory_per_block_optin": 232448, "L2_cache_size": 50 * 2**20, "gcnArchName": ""}


@contextlib.contextmanager
def _generating_for_h100():
    """Inductor generates Triton code for cuda:0 as if an H100 were there; the kernels' sources are not compiled."""
    import torch._inductor.async_compile as async_compile
    import torch._inductor.compile_fx as compile_fx
    import torch._inductor.scheduler as scheduler
    import torch.utils._triton as triton_utils
    from torch._inductor.runtime.hints import DeviceProperties

    if torch.cuda.is_available():
        torch.cuda.init()           # a real GPU's runtime is up before its functions are stood in for
    props = SimpleNamespace(**H100)
    hints = DeviceProperties(type="cuda", index=0, multi_processor_count=props.multi_processor_count, cc=90,
                             major=props.major, regs_per_multiprocessor=props.regs_per_multiprocessor,
                             max_threads_per_multi_processor=props.max_threads_per_multi_processor,
                             warp_size=props.warp_size)
    patches = [
        (torch.cuda, "_lazy_init", lambda: None), (torch.cuda, "current_device", lambda: 0),
        (torch.cuda, "set_device", lambda device: None), (torch.cuda, "device_count", lambda: 1),
        (torch.cuda, "get_device_properties", lambda device=None: props),
        (torch.cuda, "get_device_capability", lambda device=None: (props.major, props.minor)),
        (DeviceProperties, "create", classmethod(lambda cls, device: hints)),
        (scheduler, "has_triton", lambda: True),
        (triton_utils, "triton_hash_with_backend", lambda: "h100-codegen-only"),
        (compile_fx, "_check_triton_bf16_support", lambda graph: None),
        (compile_fx.inductor_metrics_log, "isEnabledFor", lambda level: True),   # makes inductor count the bytes
        (compile_fx.inductor_metrics_log, "info", lambda *args, **kwargs: None),
        (async_compile.AsyncCompile, "triton", lambda self, name, source, *args, **kwargs: None),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, value in patches:
            stack.enter_context(mock.patch.object(owner, name, value))
        stack.enter_context(torch._inductor.config.patch(fx_graph_cache=False))
        yield


def _training_graphs(norm: str, dtype: str, shape) -> dict:
    """The layer's forward and backward graphs as AOTAutograd partitions them for training (traced on meta)."""
    from torch._inductor.decomposition import select_decomp_table
    layer = norm_layer(norm)(shape[-1])
    names = [name for name, _ in layer.named_parameters()]

    def block_norm(x, residual, *params):
        y = torch.func.functional_call(layer, dict(zip(names, params)), (x + residual,))
        return y.to(torch.bfloat16) if dtype == "bf16" else y

    graphs = {}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = gm
            return make_boxed_func(gm)
        return compiler

    x = torch.empty(shape, device="meta", requires_grad=True)
    params = [torch.empty(p.shape, device="meta", requires_grad=True) for p in layer.parameters()]
    traced = aot_function(block_norm, fw_compiler=keep("forward"), bw_compiler=keep("backward"),
                          decompositions=select_decomp_table())
    traced(x, torch.empty(shape, device="meta"), *params).sum().backward()
    return graphs


def _inductor_traffic(gm: torch.fx.GraphModule, backward: bool) -> dict:
    """Bytes read and written by the Triton kernels inductor generates for `gm` on cuda:0, and their number."""
    from torch._inductor import metrics
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._subclasses.fake_tensor import FakeTensorMode
    for node in gm.graph.nodes:                       # factory ops traced on meta now make their tensors on the GPU
        if "device" in node.kwargs:
            node.kwargs = {**node.kwargs, "device": torch.device("cuda", 0)}
    gm.recompile()
    with FakeTensorMode(allow_non_fake_inputs=True):
        inputs = [torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="cuda:0")
                  for v in (n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder")]
    metrics.reset()
    compile_fx_inner(gm, inputs, is_backward=backward)
    return {"bytes": metrics.num_bytes_accessed, "kernels": metrics.generated_kernel_count}


def traffic(norm: str, dtype: str = "bf16", shape=SHAPE) -> dict:
    """One norm's compiled forward and backward traffic on an H100 target, in bytes and in activations."""
    activation = 4 * torch.Size(shape).numel()
    with _generating_for_h100():
        graphs = _training_graphs(norm, dtype, shape)
        row = {"norm": norm, "dtype": dtype, "shape": list(shape), "torch": torch.__version__}
        for kind, gm in graphs.items():
            counted = _inductor_traffic(gm, backward=kind == "backward")
            row[f"{kind}_bytes"] = counted["bytes"]
            row[f"{kind}_kernels"] = counted["kernels"]
            row[f"{kind}_activations"] = counted["bytes"] / activation
    return row


def format_table(rows: list[dict]) -> str:
    """Markdown table; each norm's traffic relative to LayerNorm's of the same dtype."""
    base = {r["dtype"]: r for r in rows if r["norm"] == BASELINE}
    lines = ["| norm | dtype | forward (activations) | kernels | backward (activations) | kernels | "
             "fwd+bwd × LN |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ln = base.get(r["dtype"])
        total = r["forward_bytes"] + r["backward_bytes"]
        rel = f"{total / (ln['forward_bytes'] + ln['backward_bytes']):.3f}" if ln else "–"
        name = r["norm"].replace("|", r"\|")
        lines.append(f"| `{name}` | {r['dtype']} | {r['forward_activations']:.2f} | {r['forward_kernels']} | "
                     f"{r['backward_activations']:.2f} | {r['backward_kernels']} | {rel} |")
    return "\n".join(lines)
