"""`lab bench`: LayerNorm against point-wise norms in one process — training-step images/s, peak memory, MFU.

A training step is forward + backward + AdamW on random images (the data path is not measured). FLOPs per image are
torch's FlopCounterMode count of one real step (matmuls and attention; on a GPU also the QKᵀ that fused attention's
backward recomputes, +0.7 % for ViT-B/16: see _countable_attention); MFU is that count times images/s over the
device's dense peak for the dtype (PEAK_TFLOPS, or --peak-tflops), where the device is known. On a GPU the real
ViT-B/16 benchmark runs; on a CPU a small model stands in (for tests and a quick look; CPU numbers are never GPU
results).
--proxy measures the proxy protocol's small model instead (the per-run speed of a calibration cell). Packing measures
the aggregate images/s of N concurrent proxy-size runs on one device (the proxy sweep's `--jobs`), eager or compiled
(lab/packing.py).
--profile DIR writes, per cell, the time of each kernel over a few more steps (torch.profiler): where a norm's step
differs from LayerNorm's. --traffic prints the bytes each norm's compiled kernels move instead (lab/traffic.py).
--rounds K builds every norm of a (mode, dtype) once and times them in K interleaved rounds, each starting one norm
later: the device's drift (clocks, temperature) is then spread over all norms instead of landing on whichever is timed
at that moment, and each round's ratio to LayerNorm shows whether a sub-percent difference exceeds it.
"""
import argparse
import contextlib
import datetime
import functools
import gc
import json
import platform
import re
import statistics
import time
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import config
from .cli import positive_number
from .layers import BASELINE, DERF, plain_kernels, raise_recompile_limit
from .models import build_model
from .results import git_commit, writable_dir, write_json_atomic

SECTION3_VARIANTS = ("erf", "tanh", "arctan", "erf|hshift=0.5", "erf|vshift=0.5", "arcsinh|clip=1",
                     "erf|blend=0.1", "erf|flat=0.5", "erf|neg", "sin", "dampx", "dampexp")
GPU_MODEL = {"model": "vit_base_patch16_224", "img_size": 224, "batch": 256}
CPU_MODEL = {"model": "vit", "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "batch": 16}
COMPILED = {"compiled": "default", "compiled-graphs": "reduce-overhead",
            "compiled-autotune": "max-autotune-no-cudagraphs"}
"""The bench modes that torch.compile the whole model, and their torch.compile mode (reduce-overhead: CUDA graphs;
max-autotune-no-cudagraphs: inductor times its matmul and kernel configurations on the device, minutes per model)."""
MODES = ("eager", "eager-plain", *COMPILED)
"""eager-plain: eager with the point-wise layer as plain torch ops, i.e. without the generated kernels (the before)."""


def protocol_shape(protocol: str) -> dict:
    """The model a protocol's runs train, as a bench shape: its `model` section at the data's resolution and number of
    classes, as models.from_config builds it for training (name and alpha0 included), and the optimizer's batch."""
    cfg = config.load(protocol)
    model = dict(cfg["model"])
    return {"model": model.pop("name"), **model, "img_size": cfg["data"]["img_size"],
            "num_classes": cfg["data"]["num_classes"], "batch": cfg["optim"]["batch_size"]}


def proxy_model() -> dict:
    """configs/protocols/proxy.yaml's model and batch: --proxy's cells and, on a GPU, the packed runs. Read when a
    bench needs it, so that a proxy.yaml being edited fails that bench with its config error, not every `lab` command."""
    return protocol_shape("proxy")
PEAK_TFLOPS = {  # device name (torch.cuda.get_device_name) -> dense peaks from NVIDIA's data sheets (half the sparse
    # figure): bf16 tensor cores, fp32 without TF32 (torch's matmul default). One chip's form factors differ in clocks
    # and power, hence in peak, and a name is matched whole: an unknown variant gets no MFU rather than a wrong one.
    "NVIDIA H100 80GB HBM3": {"bf16": 989.0, "fp32": 67.0},       # H100 SXM5
    "NVIDIA H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "NVIDIA H100 NVL": {"bf16": 835.0, "fp32": 60.0},
    "NVIDIA H200": {"bf16": 989.0, "fp32": 67.0},                 # H200 SXM
    "NVIDIA H200 NVL": {"bf16": 835.0, "fp32": 60.0},
    "NVIDIA A100-SXM4-40GB": {"bf16": 312.0, "fp32": 19.5},       # A100 SXM4 and PCIe: the same peaks
    "NVIDIA A100-SXM4-80GB": {"bf16": 312.0, "fp32": 19.5},
    "NVIDIA A100-PCIE-40GB": {"bf16": 312.0, "fp32": 19.5},
    "NVIDIA A100 80GB PCIe": {"bf16": 312.0, "fp32": 19.5},
}
RESULTS_DIR = Path(__file__).resolve().parent.parent / "ablations" / "results" / "bench"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})"


def peak_tflops(device: torch.device, dtype: str, override: float | None = None) -> float | None:
    """`override`, else the device's dense peak for `dtype` from PEAK_TFLOPS; None for a device not listed."""
    return override or PEAK_TFLOPS.get(device_name(device), {}).get(dtype)


def _step_fn(model, optimizer, images, targets, dtype):
    def step():
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def measure(norm: str, mode: str, dtype: str, shape: dict, device: torch.device, steps: int, warmup: int,
            peak: float | None = None, profile_dir: Path | None = None) -> dict:
    """One side-by-side cell: images/s, peak memory (GPU only) and MFU of training steps with `norm`; with
    profile_dir, also the per-kernel times of a few more steps in profile_dir/<norm>-<mode>-<dtype>.txt. It is
    measure_rounds of `norm` alone in one round: `warmup` untimed steps, `steps` timed ones, and the peak memory of
    the timed steps as torch.cuda.max_memory_allocated reports it."""
    return measure_rounds([norm], mode, dtype, shape, device, steps, warmup, 1, peak, profile_dir)[0]


def measure_rounds(norms, mode: str, dtype: str, shape: dict, device: torch.device, steps: int, warmup: int,
                   rounds: int, peak: float | None = None, profile_dir: Path | None = None,
                   on_round=lambda records: None) -> list[dict]:
    """Every norm of one (mode, dtype) built once and timed in `rounds` interleaved rounds, round r starting at norm
    r mod N: one record per norm, its images/s the median over rounds; with rounds > 1 also its "rounds", each
    round's images/s, and beside LayerNorm its "ratio_rounds", each round's images/s over LayerNorm's of that round.
    A norm's peak memory is what the device held before the group, its own persistent bytes and its own step's
    transient peak: what torch.cuda.max_memory_allocated reports over its timed steps when it is measured alone.
    With rounds > 1, on_round(records) after each round but the last, the records of the rounds so far: a bench cut
    off before its last round (a device call's limit) keeps those."""
    torch._dynamo.reset()       # the group compiles from scratch; its models stay compiled side by side
    cuda = device.type == "cuda"
    allocated = functools.partial(torch.cuda.memory_allocated, device) if cuda else (lambda: 0)
    gc.collect()                # an earlier group's models, freed: not counted as held
    held = allocated()          # before the group (nothing, or what earlier cells left): a standalone peak counts it
    cells, inputs = [], None
    # the N compiled models share their code objects, each with as many cache entries as one model alone: at dynamo's
    # default limit (8) the 9th model of a group would run eager
    raise_recompile_limit(8 * len(norms))
    for norm in norms:
        before = allocated() - sum(t.nbytes for t in inputs or ())   # the shared inputs count for each norm
        step, flops_per_image, inputs = _setup(norm, mode, dtype, shape, device, inputs)
        _seconds(step, warmup, device)
        # its own persistent bytes: parameters and AdamW state (the gradients are set to None after each step)
        cells.append({"norm": norm, "step": step, "flops": flops_per_image, "bytes": allocated() - before,
                      "rounds": []})
    for r in range(rounds):
        for cell in cells[r % len(cells):] + cells[:r % len(cells)]:
            if cuda and r == 0:
                torch.cuda.reset_peak_memory_stats(device)
                idle = allocated()
            cell["rounds"].append(steps * shape["batch"] / _seconds(cell["step"], steps, device))
            if cuda and r == 0:
                cell["bytes"] += torch.cuda.max_memory_allocated(device) - idle     # its step's transient peak
        if r < rounds - 1:
            on_round(_round_records(cells, mode, dtype, shape, device, steps, warmup, held, peak))
    if profile_dir is not None:
        for cell in cells:
            _profile_cell(cell["step"], cell["norm"], mode, dtype, device, profile_dir)
    return _round_records(cells, mode, dtype, shape, device, steps, warmup, held, peak, rounds > 1)


def _round_records(cells, mode, dtype, shape, device, steps, warmup, held, peak, each_round=True) -> list[dict]:
    """measure_rounds' records of its cells' rounds so far."""
    cuda = device.type == "cuda"
    ln = next((c["rounds"] for c in cells if c["norm"] == BASELINE), None)
    records = []
    for c in cells:
        records.append(_record(c["norm"], mode, dtype, shape, device, steps, warmup, statistics.median(c["rounds"]),
                               held + c["bytes"] if cuda else None, c["flops"], peak))
        if each_round:
            records[-1]["rounds"] = list(c["rounds"])
            if ln:
                records[-1]["ratio_rounds"] = [v / b for v, b in zip(c["rounds"], ln)]
    return records


def _setup(norm: str, mode: str, dtype: str, shape: dict, device: torch.device, inputs=None):
    """A norm's training step (model, fused AdamW on a GPU, `mode`'s compilation), its FLOPs per image (counted on one
    eager step) and its (images, targets): `inputs`, else new ones drawn after the model."""
    kw = _model_kwargs(shape)
    torch.manual_seed(0)
    model = build_model(shape["model"], norm=norm, **kw).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    images, targets = inputs or _inputs(shape, model.num_classes, device)
    with _countable_attention(device), FlopCounterMode(display=False) as counter:
        _step_fn(model, optimizer, images, targets, dtype)()
    step = _step_fn(_compiled(model, mode), optimizer, images, targets, dtype)
    return step, counter.get_total_flops() / shape["batch"], (images, targets)


def _countable_attention(device: torch.device):
    """FlopCounterMode has formulas for the GPU's fused attention kernels, not for the CPU's, so a CPU count would leave
    attention out (the proxy at patch 4: 2.07 instead of 2.19 GFLOP an image); the math kernel runs attention as
    matmuls, which it counts. A GPU count is one QKᵀ a layer higher: torch's formula for the fused kernels' backward
    counts their recompute of the scores (ViT-B/16: 105.87 GFLOP an image, the GPU records' MFU, against 105.15 here;
    the proxy: 2.21 against 2.19 at patch 4, 0.554 against 0.553 at patch 8)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else contextlib.nullcontext()


def _model_kwargs(shape: dict) -> dict:
    return {k: v for k, v in shape.items() if k not in ("model", "batch")}


def _inputs(shape: dict, num_classes: int, device: torch.device):
    """Random images and labels of one batch."""
    images = torch.randn(shape["batch"], 3, shape["img_size"], shape["img_size"], device=device)
    return images, torch.randint(0, num_classes, (shape["batch"],), device=device)


def _seconds(step, steps: int, device: torch.device) -> float:
    """Wall time of `steps` training steps, the device idle before and after."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _record(norm, mode, dtype, shape, device, steps, warmup, img_per_s, mem_bytes, flops_per_image, peak) -> dict:
    """A bench record: `steps` timed after `warmup` untimed ones, `mem_bytes` the peak allocated memory (None on a
    CPU), MFU against the dtype's peak."""
    peak = peak_tflops(device, dtype, peak)
    return {
        "model": _model_name(shape),
        "norm": norm, "mode": mode, "dtype": dtype, "batch": shape["batch"], "steps": steps, "warmup": warmup,
        "pointwise_kernels": _kernels(norm, mode, device),
        "img_per_s": img_per_s,
        "peak_mem_gib": mem_bytes / 2**30 if mem_bytes is not None else None,
        "gflop_per_img": flops_per_image / 1e9,
        "mfu": flops_per_image * img_per_s / (peak * 1e12) if peak else None,
        "peak_tflops": peak, **_provenance(device), "commit": git_commit(),
    }


def _model_name(shape: dict) -> str:
    """A record's model: timm's name, or for "vit" its depth, width and resolution, then its patch, classes and drop
    path where the shape sets them (the committed records' "vit-d12-w192-32px" was the proxy's patch-4 shape without
    the last two, with timm's 1000-way head; a calibration round may change the patch)."""
    if shape["model"] != "vit":
        return shape["model"]
    extra = "".join(f"-{prefix}{shape[key]}{suffix}" for key, prefix, suffix in
                    (("patch_size", "p", ""), ("num_classes", "", "cls"), ("drop_path_rate", "dp", ""))
                    if shape.get(key))
    return f"vit-d{shape['depth']}-w{shape['embed_dim']}-{shape['img_size']}px{extra}"


def _profile_cell(step, norm: str, mode: str, dtype: str, device: torch.device, profile_dir: Path) -> None:
    name = re.sub(r"[^\w.-]+", "_", f"{norm}-{mode}-{dtype}")     # "erf|flat=0.5" -> "erf_flat_0.5"
    _profile(step, device, Path(profile_dir) / f"{name}.txt")


def _profile(step, device: torch.device, path: Path, steps: int = 3) -> None:
    """Every kernel of `steps` training steps, by its own time on the device (the CPU's ops on a CPU)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                      row_limit=-1, max_name_column_width=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {path.stem}: {steps} training steps on {device_name(device)}\n{table}\n")


def _kernels(norm: str, mode: str, device: torch.device) -> str | None:
    """How the point-wise layer ran: traced into the compiled model, inductor's per-spec eager kernels, or plain ops."""
    from .layers import NORMALIZATIONS, fuses_on
    if norm in NORMALIZATIONS:
        return None
    if mode in COMPILED:
        return "compiled-model"
    return "generated" if fuses_on(device.type) else "plain"


def _compiled(model, mode: str):
    """The model as `mode` runs it: torch.compile'd in its COMPILED mode, or as it is."""
    return torch.compile(model, mode=COMPILED[mode]) if mode in COMPILED else model


def _provenance(device: torch.device) -> dict:
    return {"device": device_name(device), "torch": torch.__version__, "timm": timm.__version__,
            "date": datetime.date.today().isoformat()}


def format_table(rows: list[dict]) -> str:
    """Markdown table; each cell's speed and memory relative to LayerNorm of the same mode and dtype, measured in the
    same `lab bench` run where it has one (side by side), else on the same day, device and torch (records of another
    session are not compared with each other)."""
    by_run, by_session = {}, {}       # LayerNorm by (record file, session), and by session alone
    for r in rows:
        if r.get("norm") == BASELINE:
            by_run[r.get("record"), _session(r, r["mode"])] = r
            by_session[_session(r, r["mode"])] = r
    lines = ["| norm | mode | dtype | img/s | × LN | peak GiB | × LN | MFU | date |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["mode"] == "packing":
            continue
        session = _session(r, "eager" if r["mode"] == "eager-plain" else r["mode"])
        ln = by_run.get((r.get("record"), session)) or by_session.get(session)
        speed = f"{r['img_per_s'] / ln['img_per_s']:.3f}" if ln else "–"
        if "ratio_rounds" in r:     # interleaved rounds: the median of each round's ratio, and its spread
            ratios = r["ratio_rounds"]
            speed = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
        mem, mfu = r["peak_mem_gib"], r["mfu"]
        mem_rel = f"{mem / ln['peak_mem_gib']:.3f}" if ln and mem and ln["peak_mem_gib"] else "–"
        mem_text = "–" if mem is None else f"{mem:.2f}"
        mfu_text = "–" if mfu is None else f"{100 * mfu:.1f}%"
        name = r["norm"].replace("|", r"\|")       # a bare | would split the markdown cell
        lines.append(f"| `{name}` | {r['mode']} | {r['dtype']} | {r['img_per_s']:.1f} | {speed} | "
                     f"{mem_text} | {mem_rel} | {mfu_text} | {r.get('date', '–')} |")
    packed = [r for r in rows if r["mode"] == "packing"]
    if packed:
        one = {}      # the "× one run" base: the N = 1 row of the same run mode and session
        for r in packed:
            if r["runs"] == 1:
                one.setdefault(_session(r, _run_mode(r)), r)
        lines += ["", "| concurrent runs | each run | aggregate img/s | × one run |", "|---|---|---|---|"]
        for r in packed:
            alone = one.get(_session(r, _run_mode(r)))
            times = f"{r['img_per_s'] / alone['img_per_s']:.2f}" if alone else "–"
            lines.append(f"| {r['runs']} | {_run_mode(r)} | {r['img_per_s']:.0f} | {times} |")
    return "\n".join(lines)


def _session(row: dict, mode: str) -> tuple:
    """Which LayerNorm (or N = 1 packing) row a row is compared with: same day, device, torch, dtype, and `mode`."""
    return row.get("date"), row.get("device"), row.get("torch"), mode, row.get("dtype")


def _run_mode(row: dict) -> str:
    """How each packed run ran: records before run modes existed ran eager, before MPS without it."""
    return row.get("run_mode", "eager") + (" + MPS" if row.get("mps") else "")


def recorded(results_dir=RESULTS_DIR, device_type: str = "cuda") -> list[dict]:
    """The committed records of one device type, in the README's order (`lab bench --report` prints them): by mode,
    dtype, then record file (one `lab bench` run each, in time order) with its LayerNorm first; packing last. Each row
    names its file as "record"."""
    rows = [{**r, "record": path.name} for path in sorted(Path(results_dir).glob(f"bench-{device_type}-*.json"))
            for r in json.loads(path.read_text())]
    modes = [*MODES, "packing"]
    return sorted(rows, key=lambda r: (modes.index(r["mode"]), r.get("dtype") or "", r["record"],
                                       r.get("norm") != BASELINE))


def run(norms, modes, dtypes, device, steps, warmup, shape, packing_ns=(), packing_seconds=10.0,
        peak=None, progress=True, on_row=lambda rows: None, profile_dir=None, packing_mode="eager",
        rounds=1, mps=False, packing_batch=None) -> list[dict]:
    """Every (mode, dtype, norm) cell, LayerNorm first in each mode, then packing (its processes under NVIDIA MPS with
    `mps`); on_row(rows) after each cell or N, or with rounds > 1 after each round of each (mode, dtype), whose norms
    are timed in interleaved rounds (measure_rounds). The packed runs are the proxy's model on a GPU, `shape`
    elsewhere, at `packing_batch` where given (--batch), else at that model's batch."""
    rows = []
    for mode in modes:
        for dtype in dtypes:
            baseline = () if mode == "eager-plain" else (BASELINE,)   # LayerNorm has no point-wise kernels
            group = [*baseline, *[n for n in norms if n != BASELINE]]
            for cell in ([group] if rounds > 1 else [[norm] for norm in group]):
                with plain_kernels() if mode == "eager-plain" else contextlib.nullcontext():
                    new = measure_rounds(cell, mode, dtype, shape, device, steps, warmup, rounds, peak, profile_dir,
                                         on_round=lambda done: on_row(rows + done))
                rows += new
                for r in new if progress else ():
                    ratios = r.get("ratio_rounds")
                    spread = f"  × LN {min(ratios):.3f}–{max(ratios):.3f}" if ratios else ""
                    print(f"{r['norm']:<18} {mode:<11} {dtype:<4} {r['img_per_s']:9.1f} img/s{spread}", flush=True)
                on_row(rows)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if packing_ns:
        from .packing import STREAMS, packing, packing_streams   # here: lab.packing imports this module's helpers

        def packed(row):
            rows.append(row)
            on_row(rows)
        shape = dict(proxy_model() if device.type == "cuda" else shape)
        if packing_batch:
            shape["batch"] = packing_batch
        if packing_mode == STREAMS:
            for n in packing_ns:
                packed(*packing_streams([n], shape, device, packing_seconds))
        else:
            packing(packing_ns, shape, device, packing_seconds, packing_mode, mps, on_row=packed)
    return rows


def main(args: argparse.Namespace) -> int:
    from .layers import canonical_norm
    from .packing import STREAMS
    from .train import resolve_device
    if args.report:
        rows = recorded(args.out)
        if not rows:
            raise ValueError(f"--report: no GPU records (bench-cuda-*.json) in {args.out} (--out)")
        print(format_table(rows))
        return 0
    try:
        device = resolve_device(args.device or "auto")
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    names = args.norms.split(",") if args.norms else SECTION3_VARIANTS + (DERF,)
    norms = [canonical_norm(n) for n in names]
    shape = dict(proxy_model() if args.proxy else GPU_MODEL if device.type == "cuda" else CPU_MODEL)
    if args.batch:
        shape["batch"] = args.batch
    modes = [m for m in args.modes.split(",") if m]      # --modes "": packing only
    dtypes = args.dtypes.split(",")
    for name, values, choices in (("--modes", modes, MODES), ("--dtypes", dtypes, ("bf16", "fp32")),
                                  ("--packing-mode", [args.packing_mode], ("eager", *COMPILED, STREAMS))):
        bad = [v for v in values if v not in choices]
        if bad:
            raise ValueError(f"{name}: unknown value {bad[0]!r}; choose from {', '.join(choices)}")
    if args.mps and (not args.packing or args.packing_mode == STREAMS):
        raise ValueError(f"--mps: applies to --packing with processes (--packing-mode eager or {', '.join(COMPILED)}), "
                         f"not {'no --packing' if not args.packing else STREAMS + ' (one process)'}")
    if args.packing and args.packing_mode == STREAMS and device.type != "cuda":
        raise ValueError(f"--packing-mode {STREAMS}: CUDA graphs and streams need a CUDA device, not {device.type}")
    if args.traffic:
        from . import traffic
        print(traffic.format_table([traffic.traffic(norm, dtype) for dtype in dtypes
                                    for norm in (BASELINE, *[n for n in norms if n != BASELINE])]))
        return 0
    out = writable_dir(args.out, "--out")       # before the first measurement, not after it (minutes on a GPU)
    path = out / f"bench-{device.type}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    save = functools.partial(write_json_atomic, path)     # after every cell: a killed bench keeps what it measured
    rows = run(norms, modes, dtypes, device, args.steps, args.warmup, shape, args.packing, args.packing_seconds,
               args.peak_tflops, on_row=save, profile_dir=args.profile, packing_mode=args.packing_mode,
               rounds=args.rounds, mps=args.mps, packing_batch=args.batch)
    print(format_table(rows))
    print(f"records: {path}")
    return 0


def _integer(low: int):
    """An argparse type: an integer >= low, checked before anything is measured, in an error naming the option
    (--steps 0 divided by zero after the warm-up, --packing -1 hung)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def _run_counts(text: str) -> list[int]:
    """An argparse type: --packing's comma-separated numbers of concurrent runs ("": none)."""
    try:
        return [_integer(1)(n) for n in text.split(",")] if text else []
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected numbers of runs >= 1 such as 1,2,4,8, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .packing import STREAMS
    p.add_argument("--norms", default=None, help="comma-separated specs or 'derf' (default: Section-3 variants, Derf)")
    p.add_argument("--modes", default="eager,compiled",
                   help='eager,eager-plain,compiled,compiled-graphs,compiled-autotune '
                        '("" with --packing: packing only)')
    p.add_argument("--dtypes", default="bf16,fp32", help="bf16,fp32")
    p.add_argument("--steps", type=_integer(1), default=20)
    p.add_argument("--warmup", type=_integer(0), default=5)
    p.add_argument("--rounds", type=_integer(1), default=1, metavar="K",
                   help="build each (mode, dtype)'s norms once and time them in K interleaved rounds, one norm later "
                        "each round: records each round's images/s and ratio to LayerNorm, apart from the drift")
    p.add_argument("--batch", type=_integer(1), default=None,
                   help="the batch of the cells and of the packed runs alike (default: each model's own: 256 for "
                        "ViT-B/16 on a GPU, 16 for the CPU's model, proxy.yaml's optim.batch_size for the proxy's, "
                        "which --proxy measures and the packed runs train on a GPU)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--packing", type=_run_counts, default="",
                   help="e.g. 1,2,4,8: concurrent small-model runs on one device")
    p.add_argument("--packing-seconds", type=positive_number, default=10.0)
    p.add_argument("--packing-mode", default="eager",
                   help=f"each packed run's step: {', '.join(('eager', *COMPILED))} (N processes), or {STREAMS} "
                        "(N runs in one process, each step one CUDA graph, on N streams; CUDA only)")
    p.add_argument("--mps", action="store_true",
                   help="the packed processes share the GPU through NVIDIA MPS (lab.mps; where it cannot be had, a "
                        "message and the processes time-slice): each packing row says which")
    p.add_argument("--proxy", action="store_true",
                   help="the proxy protocol's model as its runs train it (configs/protocols/proxy.yaml's model, "
                        "data.img_size, data.num_classes and optim.batch_size), not ViT-B/16 or the CPU one")
    p.add_argument("--peak-tflops", type=positive_number, default=None, help="dense peak for MFU (default: by device name)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also write each cell's per-kernel times (torch.profiler, 3 steps) into DIR")
    p.add_argument("--report", action="store_true",
                   help="print the table of the GPU records in --out (the README's performance section) and measure "
                        "nothing")
    p.add_argument("--traffic", action="store_true",
                   help="print inductor's count of the bytes each norm's compiled forward and backward move on an "
                        "H100 (ViT-B/16 shape; needs no GPU, times nothing, writes no records)")
