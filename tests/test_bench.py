"""`lab bench` on the CPU stand-in model, and the layer under torch.compile (what the GPU benchmark relies on)."""
import contextlib
import json
import os
import queue as queues
import re
import statistics
from types import SimpleNamespace

import pytest
import timm
import torch

from lab import bench, packing
from lab.cli import main
from lab.layers import PointwiseNorm

TINY = {"model": "vit", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "batch": 4}


def test_measure_records_the_fields_of_a_bench_record():
    row = bench.measure("erf|flat=0.5", "eager", "fp32", TINY, torch.device("cpu"), steps=2, warmup=1, peak=1.0)
    assert {"model", "norm", "mode", "dtype", "batch", "img_per_s", "peak_mem_gib", "mfu", "device", "torch",
            "timm", "date"} <= set(row)
    assert row["img_per_s"] > 0 and row["gflop_per_img"] > 0 and row["peak_mem_gib"] is None
    assert row["mfu"] == pytest.approx(row["gflop_per_img"] * 1e9 * row["img_per_s"] / 1e12)


def test_a_cpu_count_includes_attention_as_matmuls(monkeypatch):
    """The CPU's fused attention kernel has no FLOP formula; the count must equal that of timm's explicit attention
    (q @ kᵀ and attn @ v as matmuls)."""
    shape = {**TINY, "img_size": 32, "patch_size": 4, "embed_dim": 32}      # 65 tokens: attention is a visible share
    _, counted, _ = bench._setup("erf", "eager", "fp32", shape, torch.device("cpu"))
    monkeypatch.setattr(timm.layers.config, "_USE_FUSED_ATTN", 0)
    assert not timm.layers.use_fused_attn()
    _, explicit, _ = bench._setup("erf", "eager", "fp32", shape, torch.device("cpu"))
    assert counted == explicit


def test_a_gpu_count_adds_fused_attentions_backward_recompute(monkeypatch):
    """torch's formulas for a GPU's fused attention (forward, and a backward that recomputes QKᵀ) on this model's
    attention shapes, added to its count without attention, give the CPU's count plus one QKᵀ a layer."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count
    shape, cpu = {**TINY, "img_size": 32, "patch_size": 4, "embed_dim": 32}, torch.device("cpu")
    _, counted, _ = bench._setup("erf", "eager", "fp32", shape, cpu)
    sdpa, shapes = torch.nn.functional.scaled_dot_product_attention, []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: shapes.append((q.shape, k.shape, v.shape)) or sdpa(q, k, v, **kw))
    monkeypatch.setattr(bench, "_countable_attention", lambda device: contextlib.nullcontext())
    _, without, _ = bench._setup("erf", "eager", "fp32", shape, cpu)     # the CPU's fused kernel: not counted
    attention = sum(sdpa_flop_count(q, k, v) + sdpa_backward_flop_count(q, q, k, v) for q, k, v in shapes)
    recompute = sum(2 * q.numel() * k[2] for q, k, _ in shapes)      # (b·h, s, d) @ (b·h, d, s) a layer
    gpu = without + attention / shape["batch"]
    assert len(shapes) == shape["depth"] and without < counted
    assert gpu == pytest.approx(counted + recompute / shape["batch"])


@pytest.mark.parametrize("name, bf16, fp32", [
    ("NVIDIA H100 80GB HBM3", 989.0, 67.0),         # SXM5: the committed records' device
    ("NVIDIA H100 PCIe", 756.0, 51.0),
    ("NVIDIA H100 NVL", 835.0, 60.0),
    ("NVIDIA H200", 989.0, 67.0),
    ("NVIDIA H200 NVL", 835.0, 60.0),
    ("NVIDIA A100 80GB PCIe", 312.0, 19.5),
    ("NVIDIA RTX A1000", None, None),               # not an A100
    ("NVIDIA H100 SXM5 64GB", None, None),          # a variant not listed: no MFU rather than a wrong one
])
def test_the_peak_is_the_named_devices_own(monkeypatch, name, bf16, fp32):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: name)
    cuda = torch.device("cuda")
    assert (bench.peak_tflops(cuda, "bf16"), bench.peak_tflops(cuda, "fp32")) == (bf16, fp32)
    assert bench.peak_tflops(cuda, "bf16", override=500.0) == 500.0


def test_table_is_relative_to_layernorm():
    rows = [{"norm": n, "mode": "eager", "dtype": "fp32", "img_per_s": v, "peak_mem_gib": m, "mfu": None}
            for n, v, m in [("layernorm", 100.0, 2.0), ("erf", 95.0, 1.5)]]
    table = bench.format_table(rows)
    assert "| `erf` | eager | fp32 | 95.0 | 0.950 | 1.50 | 0.750 | – |" in table


def test_each_session_is_relative_to_its_own_layernorm():
    """A later GPU session's records sit beside the earlier ones: each row against LayerNorm of its own session."""
    rows = [{"norm": n, "mode": "compiled", "dtype": "bf16", "img_per_s": v, "peak_mem_gib": 1.0, "mfu": None,
             "date": day, "device": "H100", "torch": "2.11"}
            for n, v, day in [("layernorm", 100.0, "d1"), ("erf", 95.0, "d1"), ("layernorm", 200.0, "d2"),
                              ("erf", 210.0, "d2")]]
    speeds = [line.split(" | ")[4] for line in bench.format_table(rows).splitlines() if line.startswith("| `erf`")]
    assert speeds == ["0.950", "1.050"]


def test_rows_of_one_run_are_relative_to_that_runs_layernorm(tmp_path):
    """Two `lab bench` runs of one session each measured LayerNorm beside their norms: each row against its own run's
    (side by side); eager-plain, whose run has no LayerNorm, against the session's eager LayerNorm."""
    row = lambda n, v, mode="compiled": {"norm": n, "mode": mode, "dtype": "bf16", "img_per_s": v,  # noqa: E731
                                         "peak_mem_gib": 1.0, "mfu": None, "date": "d", "device": "H100",
                                         "torch": "2.11"}
    runs = {"bench-cuda-1.json": [row("layernorm", 100.0), row("erf", 99.0), row("layernorm", 50.0, "eager")],
            "bench-cuda-2.json": [row("layernorm", 120.0), row("sin", 126.0)],
            "bench-cuda-3.json": [row("tanh", 40.0, "eager-plain")]}
    for name, rows in runs.items():
        (tmp_path / name).write_text(json.dumps(rows))
    table = bench.format_table(bench.recorded(tmp_path))
    speeds = {line.split(" | ")[0][3:-1]: line.split(" | ")[4] for line in table.splitlines()
              if line.startswith("| `") and "layernorm" not in line}
    assert speeds == {"erf": "0.990", "sin": "1.050", "tanh": "0.800"}


def test_cli_writes_records(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CPU_MODEL", TINY)
    assert main(["bench", "--norms", "derf", "--modes", "eager,eager-plain", "--dtypes", "bf16", "--steps", "1",
                 "--warmup", "0", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("bench-cpu-*.json")
    rows = json.loads(path.read_text())
    assert [(r["norm"], r["mode"]) for r in rows] == [("layernorm", "eager"), ("derf", "eager"),
                                                     ("derf", "eager-plain")]
    assert rows[0]["device"].startswith("cpu") and rows[0]["pointwise_kernels"] is None
    assert {r["pointwise_kernels"] for r in rows[1:]} == {"plain"}       # no generated kernels on a CPU
    assert main(["bench", "--modes", "jit", "--out", str(tmp_path)]) == 2


def test_compiled_modes_and_the_proxy_model(tmp_path, monkeypatch):
    """compiled-graphs is torch.compile's reduce-overhead (CUDA graphs), compiled-autotune its max-autotune without
    them; --proxy benchmarks the proxy's model."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, mode: seen.append(mode) or model)
    monkeypatch.setattr(bench, "proxy_model", lambda: {**TINY, "depth": 2})
    assert main(["bench", "--proxy", "--norms", "erf", "--modes", "compiled,compiled-graphs,compiled-autotune",
                 "--dtypes", "fp32", "--steps", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    rows = json.loads(next(tmp_path.glob("bench-cpu-*.json")).read_text())
    assert seen == ["default", "default", "reduce-overhead", "reduce-overhead",     # LayerNorm, then erf, per mode
                    "max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"]
    assert {r["model"] for r in rows} == {"vit-d2-w16-16px-p8"}
    assert [r["pointwise_kernels"] for r in rows if r["norm"] == "erf"] == ["compiled-model"] * 3
    assert main(["bench", "--packing", "1", "--packing-mode", "jit", "--out", str(tmp_path)]) == 2


def test_rounds_record_each_rounds_speed_and_ratio_to_layernorm():
    """--rounds K: every norm of a (mode, dtype) timed K times; img/s the median, each round's ratio to LayerNorm."""
    rows = bench.run(["erf", "derf"], ["eager"], ["fp32"], torch.device("cpu"), steps=1, warmup=1, shape=TINY,
                     progress=False, rounds=3)
    ln, erf, derf = rows
    assert [r["norm"] for r in rows] == ["layernorm", "erf", "derf"]
    assert all(len(r["rounds"]) == 3 and r["img_per_s"] == statistics.median(r["rounds"]) for r in rows)
    assert erf["ratio_rounds"] == [e / b for e, b in zip(erf["rounds"], ln["rounds"])]
    assert (derf["steps"], derf["warmup"]) == (1, 1) and derf["peak_mem_gib"] is None and derf["gflop_per_img"] > 0


def test_a_bench_cut_off_before_its_last_round_has_saved_the_rounds_before(tmp_path, monkeypatch):
    """The records are written after every round: a device call's limit that ends the bench in its last round (six
    ViT-B/16 models compile before the first) leaves the rounds timed so far, not nothing."""
    saved, seconds = [], bench._seconds

    def cut_off(step, steps, device):
        if steps == 1 and len(saved) == 2:      # round 3's first timing: the device's limit
            raise KeyboardInterrupt
        return seconds(step, steps, device)
    monkeypatch.setattr(bench, "_seconds", cut_off)
    with pytest.raises(KeyboardInterrupt):
        bench.run(["erf"], ["eager"], ["fp32"], torch.device("cpu"), steps=1, warmup=2, shape=TINY, progress=False,
                  rounds=3, on_row=lambda rows: saved.append([dict(r) for r in rows]))
    assert [[(r["norm"], len(r["rounds"])) for r in rows] for rows in saved] == [
        [("layernorm", 1), ("erf", 1)], [("layernorm", 2), ("erf", 2)]]
    erf = saved[-1][1]
    assert erf["img_per_s"] == statistics.median(erf["rounds"]) and len(erf["ratio_rounds"]) == 2


def test_each_round_starts_one_norm_later(monkeypatch):
    """Round r times the norms from index r mod N on: no norm is always timed first or last."""
    setup, seconds, timed = bench._setup, bench._seconds, []

    def tagged_setup(norm, *args, **kwargs):
        step, *rest = setup(norm, *args, **kwargs)
        step.norm = norm
        return step, *rest

    def logged_seconds(step, steps, device):
        if steps == 2:          # the timed steps, not the warm-up
            timed.append(step.norm)
        return seconds(step, steps, device)

    monkeypatch.setattr(bench, "_setup", tagged_setup)
    monkeypatch.setattr(bench, "_seconds", logged_seconds)
    bench.run(["erf", "derf", "tanh"], ["eager"], ["fp32"], torch.device("cpu"), steps=2, warmup=1, shape=TINY,
              progress=False, rounds=5)
    group = ["layernorm", "erf", "derf", "tanh"]
    assert [timed[4 * r:4 * r + 4] for r in range(5)] == [group[r % 4:] + group[:r % 4] for r in range(5)]


def test_rounds_build_each_model_once_per_group(monkeypatch):
    """The models of a (mode, dtype) are built once and kept for all rounds; eager-plain has no LayerNorm to divide
    by."""
    built, saves = [], []
    build = bench.build_model
    monkeypatch.setattr(bench, "build_model", lambda *a, **kw: built.append(kw["norm"]) or build(*a, **kw))
    rows = bench.run(["derf"], ["eager", "eager-plain"], ["fp32"], torch.device("cpu"), steps=1, warmup=0,
                     shape=TINY, progress=False, rounds=3, on_row=lambda rows: saves.append(len(rows)))
    assert built == ["layernorm", "derf", "derf"]
    assert saves == [2, 2, 2, 3, 3, 3]                   # after each round of each (mode, dtype)
    assert [(r["mode"], len(r["rounds"]), "ratio_rounds" in r) for r in rows] == [
        ("eager", 3, True), ("eager", 3, True), ("eager-plain", 3, False)]


@pytest.mark.parametrize("option, value, says", [
    ("--steps", "0", "an integer >= 1"), ("--steps", "-1", "an integer >= 1"), ("--warmup", "-1", "an integer >= 0"),
    ("--rounds", "0", "an integer >= 1"), ("--batch", "-4", "an integer >= 1"), ("--batch", "0", "an integer >= 1"),
    *[("--packing", runs, "numbers of runs >= 1 such as 1,2,4,8") for runs in ("-1", "2,0", "a")],
    ("--packing-seconds", "0", "a positive number"),
    ("--peak-tflops", "-1", "a positive number"), ("--peak-tflops", "nan", "a positive number"),
    ("--peak-tflops", "inf", "a positive number"),
])
def test_a_bad_number_is_one_error_naming_the_option_before_anything_is_measured(tmp_path, capsys, monkeypatch,
                                                                                 option, value, says):
    """--steps 0 divided by zero, --steps -1 recorded negative images/s, --batch 0 was the default, --packing -1 hung,
    --packing a was an error naming no option, --peak-tflops -1 recorded a negative MFU."""
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: pytest.fail("measured despite a bad argument"))
    out = tmp_path / "records"
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--modes", "eager", option, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"lab bench: error: argument {option}: expected {says}, got '{value}'" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("device, says", [("bogus", "device 'bogus': use auto, cpu, cuda or cuda:N"),
                                          ("cuda", "no CUDA GPU is visible")])
def test_a_device_this_machine_lacks_is_one_error(tmp_path, capsys, monkeypatch, device, says):
    """torch's RuntimeError tracebacks before (an unknown name; 'Found no NVIDIA driver' at the first cell)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # a machine without a GPU
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: pytest.fail("measured on a device it does not have"))
    out = tmp_path / "records"
    assert main(["bench", "--modes", "eager", "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab bench: error: --device: ") and says in err and err.count("\n") == 1
    assert not out.exists()


def test_an_out_folder_it_cannot_write_is_an_error_before_anything_is_measured(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: pytest.fail("measured, then could not save"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)       # read-only (root would write anyway)
    assert main(["bench", "--modes", "eager", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: not writable" in capsys.readouterr().err


def test_table_shows_the_median_ratio_of_the_rounds_and_its_spread():
    rows = [{"norm": n, "mode": "eager", "dtype": "fp32", "img_per_s": v, "peak_mem_gib": None, "mfu": None,
             "rounds": [v] * 3, "ratio_rounds": ratios}
            for n, v, ratios in [("layernorm", 100.0, [1.0] * 3), ("erf", 100.5, [1.009, 0.998, 1.004])]]
    table = bench.format_table(rows)
    assert "| `erf` | eager | fp32 | 100.5 | 1.004 (0.998–1.009) | – | – | – |" in table
    assert "| `layernorm` | eager | fp32 | 100.0 | 1.000 (1.000–1.000) |" in table


def test_packing_times_concurrent_runs_together():
    """N spawned runs warm up, start at one barrier, and their images/s add up; the table compares with one run."""
    rows = packing.packing([1, 2], TINY, torch.device("cpu"), seconds=1.0)
    assert [(r["runs"], r["run_mode"]) for r in rows] == [(1, "eager"), (2, "eager")]
    assert all(r["img_per_s"] > 0 for r in rows)
    table = bench.format_table(rows)
    assert "| 1 | eager |" in table and f"| {rows[1]['img_per_s'] / rows[0]['img_per_s']:.2f} |" in table


def test_a_packed_runs_speed_is_over_the_time_the_gpu_took(monkeypatch):
    """The CPU queues a step in 1/8 s, the GPU runs it in 1/2 s: in a 1 s window 8 steps are queued, which the GPU
    finishes 4 s after the start (after the warm-up's queued work). The run's speed is 2 steps/s, not 8."""
    class FakeGpu:
        cpu = gpu = 0.0

        def step(self):
            self.gpu = max(self.gpu, self.cpu) + 0.5
            self.cpu += 0.125

        def synchronize(self, *device):
            self.cpu = max(self.cpu, self.gpu)

    fake, speeds = FakeGpu(), []
    monkeypatch.setattr(packing, "time", SimpleNamespace(perf_counter=lambda: fake.cpu))
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(packing, "_erf_run", lambda shape, device: (None,) * 4)
    monkeypatch.setattr(packing, "_step_fn", lambda *args: fake.step)
    packing._packed_worker(TINY, "cuda", "eager", 1.0, SimpleNamespace(wait=lambda: None),
                           SimpleNamespace(put=speeds.append))
    assert speeds == [pytest.approx(2 * TINY["batch"])]


def test_mps_packing_rows_are_compared_with_one_run_under_mps(tmp_path, capsys):
    """--mps applies to packed processes; its rows say so and have their own N = 1 base (lab.mps: no GPU here)."""
    for extra in ([], ["--packing", "1", "--packing-mode", "graphed-streams"]):
        assert main(["bench", "--modes", "", "--mps", *extra, "--out", str(tmp_path / "no")]) == 2
        assert "--mps" in capsys.readouterr().err and not (tmp_path / "no").exists()
    rows = [{"mode": "packing", "runs": n, "run_mode": "compiled-graphs", "img_per_s": speed, "mps": mps}
            for n, speed, mps in [(1, 100.0, False), (8, 300.0, False), (1, 110.0, True), (8, 660.0, True)]]
    table = bench.format_table(rows)
    assert "| 8 | compiled-graphs | 300 | 3.00 |" in table and "| 8 | compiled-graphs + MPS | 660 | 6.00 |" in table
    later = [{"mode": "packing", "runs": 8, "run_mode": "eager", "img_per_s": 400.0, "date": "2026-12-01"},
             {"mode": "packing", "runs": 1, "run_mode": "eager", "img_per_s": 100.0, "date": "2026-11-22"},
             {"mode": "packing", "runs": 4, "run_mode": "eager", "img_per_s": 300.0, "date": "2026-11-22"}]
    table = bench.format_table(later)       # a later session's N = 8 alone: no base of its own, not another day's
    assert "| 8 | eager | 400 | – |" in table and "| 4 | eager | 300 | 3.00 |" in table


def test_graphed_streams_packing_needs_cuda_and_says_so(tmp_path, capsys):
    out = tmp_path / "records"
    assert main(["bench", "--modes", "", "--packing", "1,2", "--packing-mode", "graphed-streams", "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "graphed-streams" in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_graphed_streams_replay_whole_training_steps():
    shape = {**bench.proxy_model(), "depth": 2, "batch": 64}
    rows = packing.packing_streams([1, 2], shape, torch.device("cuda"), seconds=1.0)
    assert [(r["runs"], r["run_mode"]) for r in rows] == [(1, "graphed-streams"), (2, "graphed-streams")]
    assert all(r["img_per_s"] > 0 for r in rows)


def test_profile_names_each_cells_kernels(tmp_path, monkeypatch):
    """--profile: one kernel table per cell; erf's step runs aten::erf (plain ops on a CPU), LayerNorm's does not."""
    monkeypatch.setattr(bench, "CPU_MODEL", TINY)
    assert main(["bench", "--norms", "erf|flat=0.5", "--modes", "eager", "--dtypes", "fp32", "--steps", "1",
                 "--warmup", "0", "--out", str(tmp_path), "--profile", str(tmp_path / "profiles")]) == 0
    tables = {p.name: p.read_text() for p in (tmp_path / "profiles").iterdir()}
    assert set(tables) == {"layernorm-eager-fp32.txt", "erf_flat_0.5-eager-fp32.txt"}
    assert "aten::erf" in tables["erf_flat_0.5-eager-fp32.txt"] and "aten::erf" not in tables["layernorm-eager-fp32.txt"]
    assert "aten::native_layer_norm" in tables["layernorm-eager-fp32.txt"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", id="gpu", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="on the gpu only"))])
def test_compiled_layer_matches_eager(device):
    """Values and every gradient (torch 2.11 compiled the CPU backward to zeros while the layer cast y to the dtype it
    had); the cuda case runs in gpu-session.sh's check stage."""
    torch.manual_seed(0)
    layer = PointwiseNorm(8, "erf|hshift=0.5|flat=0.1", shift=0.0, device=device)
    x = torch.randn(4, 8, requires_grad=True, device=device)
    eager_y = layer(x)
    eager = torch.autograd.grad(eager_y.sum(), [x, *layer.parameters()])
    compiled_y = torch.compile(layer)(x)
    compiled = torch.autograd.grad(compiled_y.sum(), [x, *layer.parameters()])
    torch.testing.assert_close(compiled_y, eager_y)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


def test_readme_performance_tables_are_the_committed_gpu_records(capsys):
    """Every row of the README's performance section is `lab bench --report`'s rendering of a committed record, and
    back."""
    from lab.cli import main
    readme = (bench.RESULTS_DIR.parents[2] / "README.md").read_text()
    section = readme[readme.index("## Performance"):readme.index("### What the kernels move")]
    is_row = lambda line: re.match(r"\| (`|\d+ \|)", line) is not None  # noqa: E731   a norm or a packing row
    assert main(["bench", "--report", "--out", str(bench.RESULTS_DIR.parent)]) == 2        # no records there
    assert "--report: no GPU records (bench-cuda-*.json) in" in capsys.readouterr().err
    assert main(["bench", "--report"]) == 0
    rendered = [line for line in capsys.readouterr().out.splitlines() if is_row(line)]
    assert rendered and [line for line in section.splitlines() if is_row(line)] == rendered


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device on the CPU: an H100's name, a no-op synchronize, and an allocator whose memory the tests' steps
    allocate (`allocate`) and whose peak they raise (`run`)."""
    gpu = SimpleNamespace(allocated=0, peak=0)

    def allocate(nbytes):
        gpu.allocated += nbytes
        gpu.peak = max(gpu.peak, gpu.allocated)

    gpu.allocate, gpu.run = allocate, lambda transient: setattr(gpu, "peak", max(gpu.peak, gpu.allocated + transient))
    for name, fn in [("get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3"),
                     ("synchronize", lambda device=None: None), ("empty_cache", lambda: None),
                     ("reset_peak_memory_stats", lambda device=None: setattr(gpu, "peak", gpu.allocated)),
                     ("memory_allocated", lambda device=None: gpu.allocated),
                     ("max_memory_allocated", lambda device=None: gpu.peak)]:
        monkeypatch.setattr(torch.cuda, name, fn)
    return gpu


def test_images_per_second_are_the_timed_steps_only(monkeypatch):
    """The warm-up (compilation) runs untimed first; images/s is the timed steps' images over their seconds, and the
    record says which norm, mode, dtype and batch it timed (Derf's name, not its spec; the bench mode, not torch's)."""
    timed = []
    monkeypatch.setattr(bench, "_setup", lambda *args, **kwargs: (lambda: None, 1e9, None))
    monkeypatch.setattr(bench, "_seconds", lambda step, steps, device: timed.append(steps) or 2.0)
    row = bench.measure(bench.DERF, "compiled", "fp32", TINY, torch.device("cpu"), steps=5, warmup=3)
    assert timed == [3, 5] and row["img_per_s"] == 5 * TINY["batch"] / 2.0
    assert [row[k] for k in ("norm", "mode", "dtype", "batch", "steps", "warmup")] == [
        "derf", "compiled", "fp32", TINY["batch"], 5, 3]


def test_gpu_record_has_its_own_peak_memory_and_the_dtypes_mfu(fake_gpu, monkeypatch):
    """Peak memory is the timed steps' own: not the previous norm's, not the warm-up's (compilation); in GiB. MFU is
    against the device's peak for the dtype (H100 fp32: 67 TFLOPS), and the record names the device."""
    fake_gpu.allocate(20 * 2**30)          # the previous norm's peak
    fake_gpu.allocated = 2**30             # its model freed; this one's parameters
    calls = []

    def step():
        calls.append(1)
        fake_gpu.run((9 if len(calls) <= 2 else 2) * 2**30)     # the two warm-up steps compile: a higher peak

    monkeypatch.setattr(bench, "_setup", lambda *args, **kwargs: (step, 2e9, None))
    row = bench.measure("erf", "eager", "fp32", TINY, torch.device("cuda"), steps=3, warmup=2)
    assert len(calls) == 5 and row["peak_mem_gib"] == 3.0 and row["device"] == "NVIDIA H100 80GB HBM3"
    assert row["peak_tflops"] == 67.0 and row["mfu"] == pytest.approx(2e9 * row["img_per_s"] / 67e12)


def test_gpu_rounds_record_each_norms_own_memory(fake_gpu, monkeypatch):
    """With --rounds the models stay side by side: each norm's memory is its own parameters, the shared inputs, and
    its own step's transient peak (not the previous norm's, which was higher)."""
    own = {"layernorm": (1, 5), "erf": (2, 3)}           # GiB: parameters, step's transient

    def setup(norm, mode, dtype, shape, device, inputs=None):
        if inputs is None:
            fake_gpu.allocate(2**30)                      # the shared images and targets
            inputs = (SimpleNamespace(nbytes=2**30 - 64), SimpleNamespace(nbytes=64))
        fake_gpu.allocate(own[norm][0] * 2**30)
        return lambda: fake_gpu.run(own[norm][1] * 2**30), 1e9, inputs

    monkeypatch.setattr(bench, "_setup", setup)
    rows = bench.measure_rounds(["layernorm", "erf"], "eager", "bf16", TINY, torch.device("cuda"), steps=1, warmup=1,
                                rounds=2)
    assert [r["peak_mem_gib"] for r in rows] == [1 + 1 + 5, 1 + 2 + 3]


def test_flops_per_image_do_not_depend_on_the_batch():
    """The step's count is for the batch: divided by it, an image's FLOPs (hence MFU) are the same at any batch."""
    cpu = torch.device("cpu")
    _, four, _ = bench._setup("erf", "eager", "fp32", TINY, cpu)
    _, eight, _ = bench._setup("erf", "eager", "fp32", {**TINY, "batch": 8}, cpu)
    assert four == pytest.approx(eight, rel=1e-6) and 0 < four < 1e8


@pytest.mark.parametrize("key, values", [("dtype", ("bf16", "fp32")), ("torch", ("2.11", "2.14")),
                                         ("device", ("H100", "H200"))])
def test_a_row_is_not_compared_with_layernorm_of_another_dtype_torch_or_device(key, values):
    rows = [{"norm": n, "mode": "eager", "dtype": "bf16", "img_per_s": v * s, "peak_mem_gib": None, "mfu": None,
             "date": "d", "device": "H100", "torch": "2.11", key: value}
            for value, s in zip(values, (1.0, 3.0)) for n, v in [("layernorm", 100.0), ("erf", 90.0)]]
    speeds = [line.split(" | ")[4] for line in bench.format_table(rows).splitlines() if line.startswith("| `erf`")]
    assert speeds == ["0.900", "0.900"]


def test_recorded_reads_only_the_device_types_records(tmp_path):
    row = {"norm": "layernorm", "mode": "eager", "dtype": "bf16", "img_per_s": 1.0, "peak_mem_gib": None, "mfu": None}
    for device in ("cpu", "cuda"):
        (tmp_path / f"bench-{device}-1.json").write_text(json.dumps([{**row, "device": device}]))
    assert [r["device"] for r in bench.recorded(tmp_path, "cuda")] == ["cuda"]


def test_packing_rows_add_up_every_runs_images_per_second(monkeypatch):
    """The aggregate of N processes is the sum of what each reports, not one run's."""
    queue = []
    ctx = SimpleNamespace(Barrier=lambda n: SimpleNamespace(wait=lambda timeout=None: None),
                          Queue=lambda: SimpleNamespace(get=lambda timeout=None: queue.pop()),
                          Process=lambda target, args: SimpleNamespace(start=lambda: queue.append(100.0),
                                                                       join=lambda: None, exitcode=None))
    monkeypatch.setattr(packing.mp, "get_context", lambda method: ctx)
    rows = packing.packing([1, 3], TINY, torch.device("cpu"), seconds=1.0)
    assert [(r["runs"], r["img_per_s"]) for r in rows] == [(1, 100.0), (3, 300.0)]


def test_graphed_streams_rows_are_the_aggregate_of_n_runs(fake_gpu, monkeypatch):
    """Each replay steps every run once: N runs' images a replay, each run replayed."""
    replayed = []
    monkeypatch.setattr(packing, "_graphed_step", lambda shape, device: (
        SimpleNamespace(replay=lambda: replayed.append(1)), None))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(packing, "_steps_per_s", lambda step, seconds, device: step() or 10.0)
    rows = packing.packing_streams([1, 3], TINY, torch.device("cuda"), seconds=1.0)
    assert [(r["runs"], r["img_per_s"]) for r in rows] == [(1, 10.0 * TINY["batch"]), (3, 30.0 * TINY["batch"])]
    assert len(replayed) == 4


def test_gpu_packing_runs_the_proxys_model(monkeypatch):
    """The packed runs are proxy-size on a GPU (its sweep's --jobs), whatever model the cells measure."""
    shapes = []
    monkeypatch.setattr(packing, "packing", lambda ns, shape, *args, **kwargs: shapes.append(shape))
    for device in ("cuda", "cpu"):
        bench.run([], [], ["bf16"], torch.device(device), 1, 0, bench.GPU_MODEL, packing_ns=[2], progress=False)
    assert shapes == [bench.proxy_model(), bench.GPU_MODEL]


def test_cli_passes_its_numbers_to_the_measurement(tmp_path, monkeypatch):
    """--steps, --warmup, --batch and --peak-tflops reach the cells (the defaults' model left as it was)."""
    seen = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: seen.append((args, kwargs)) or [])
    default = dict(bench.CPU_MODEL)
    assert main(["bench", "--norms", "erf", "--modes", "eager", "--dtypes", "fp32", "--steps", "3", "--warmup", "2",
                 "--batch", "8", "--peak-tflops", "5", "--device", "cpu", "--out", str(tmp_path)]) == 0
    ((args, kwargs),) = seen
    norms, modes, dtypes, device, steps, warmup, shape, *_ = args
    assert (steps, warmup, shape, args[9]) == (3, 2, {**default, "batch": 8}, 5.0)
    assert bench.CPU_MODEL == default


def test_the_proxy_shape_is_the_model_proxy_runs_train(monkeypatch):
    """--proxy and GPU packing build the model that lab train builds from configs/protocols/proxy.yaml (models.
    from_config): its drop path and its data's 100 classes too (a hand copy had drifted: no drop path, timm's
    1000-way head), at its optimizer's batch; the records name what differs from that copy's "vit-d12-w192-32px"."""
    from lab import config
    from lab.models import from_config
    cfg, built, build = config.load("proxy"), [], bench.build_model
    monkeypatch.setattr(bench, "build_model", lambda *args, **kwargs: built.append(build(*args, **kwargs)) or built[0])
    monkeypatch.setattr(bench, "_step_fn", lambda *args: lambda: None)       # the model as built, no step taken
    bench._setup("erf", "eager", "fp32", bench.proxy_model(), torch.device("cpu"))
    torch.manual_seed(0)
    trained = from_config(cfg, "erf", cfg["data"]["num_classes"])
    assert repr(built[0]) == repr(trained) and built[0].num_classes == 100
    initial, expected = built[0].state_dict(), trained.state_dict()
    assert initial.keys() == expected.keys() and all(torch.equal(initial[k], v) for k, v in expected.items())
    assert bench.proxy_model()["batch"] == cfg["optim"]["batch_size"]
    m, d = cfg["model"], cfg["data"]
    assert bench._model_name(bench.proxy_model()) == (f"vit-d{m['depth']}-w{m['embed_dim']}-{d['img_size']}px-"
                                                      f"p{m['patch_size']}-{d['num_classes']}cls-dp{m['drop_path_rate']}")
    assert bench._model_name({"model": "vit", "depth": 12, "embed_dim": 192, "img_size": 32}) == "vit-d12-w192-32px"
    changed, before = {**cfg, "model": {**cfg["model"], "depth": 3, "qkv_bias": False}}, bench.proxy_model()
    monkeypatch.setattr(config, "load", lambda protocol: changed)     # any setting the section gains reaches it
    assert bench.proxy_model() == {**before, "depth": 3, "qkv_bias": False}


def test_a_norms_peak_memory_is_the_same_alone_or_in_rounds(fake_gpu, monkeypatch):
    """What the device held before (cuBLAS workspaces, what earlier cells left) is in a standalone peak
    (max_memory_allocated); a norm measured in rounds reports the same peak, not its own bytes without it."""
    own = {"layernorm": (1, 5), "erf": (2, 3)}           # GiB: parameters, step's transient

    def setup(norm, mode, dtype, shape, device, inputs=None):
        if inputs is None:
            fake_gpu.allocate(2**30)                      # the images and targets
            inputs = (SimpleNamespace(nbytes=2**30),)
        fake_gpu.allocate(own[norm][0] * 2**30)
        return lambda: fake_gpu.run(own[norm][1] * 2**30), 1e9, inputs

    monkeypatch.setattr(bench, "_setup", setup)
    held, alone = 3 * 2**30, []
    for norm in own:
        fake_gpu.allocated = held                         # the previous norm's model freed
        alone.append(bench.measure(norm, "eager", "bf16", TINY, torch.device("cuda"), steps=1, warmup=1)
                     ["peak_mem_gib"])
    fake_gpu.allocated = held
    rows = bench.measure_rounds(list(own), "eager", "bf16", TINY, torch.device("cuda"), steps=1, warmup=1, rounds=2)
    assert alone == [3 + 1 + 1 + 5, 3 + 1 + 2 + 3] and [r["peak_mem_gib"] for r in rows] == alone


def test_one_round_is_measure_and_records_no_rounds():
    """Without --rounds each norm is measured alone, and its record has no per-round fields."""
    rows = bench.run(["erf"], ["eager"], ["fp32"], torch.device("cpu"), steps=1, warmup=0, shape=TINY,
                     progress=False)
    assert [r["norm"] for r in rows] == ["layernorm", "erf"]
    assert not any("rounds" in r or "ratio_rounds" in r for r in rows)


def test_a_group_raises_dynamos_limit_under_either_name(monkeypatch):
    """N models of a group share their code objects: the limit is raised to 8 N, under older torch's name too."""
    older = SimpleNamespace(cache_size_limit=8)
    monkeypatch.setattr(torch._dynamo, "config", older)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    monkeypatch.setattr(bench, "_setup", lambda *args, **kwargs: (lambda: None, 1e9, None))
    norms = ["layernorm", *bench.SECTION3_VARIANTS]
    bench.measure_rounds(norms, "compiled", "fp32", TINY, torch.device("cpu"), steps=1, warmup=0, rounds=1)
    assert older.cache_size_limit == 8 * len(norms)


@pytest.mark.parametrize("batch", [None, 64])
def test_gpu_packing_runs_at_the_batch_given(tmp_path, monkeypatch, batch):
    """--batch sets the packed runs' batch too (it was the proxy's 256 on a GPU whatever --batch said)."""
    import lab.train
    shapes = []
    monkeypatch.setattr(lab.train, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(packing, "packing", lambda ns, shape, *args, **kwargs: shapes.append(shape))
    assert main(["bench", "--modes", "", "--packing", "2", *(["--batch", str(batch)] if batch else []),
                 "--out", str(tmp_path)]) == 0
    assert shapes == [{**bench.proxy_model(), "batch": batch or bench.proxy_model()["batch"]}]


def test_a_packed_run_that_reported_before_it_died_still_counts():
    """A worker may exit non-zero after its speed is sent (a crash at exit): it was timed. One that died without
    sending is the error."""
    exits, sent = [None, None], []

    class Worker:
        def __init__(self, i):
            self.i = i

        @property
        def exitcode(self):
            return exits[self.i]

    def get(timeout):
        if not sent:
            raise queues.Empty
        speed = sent.pop(0)
        if speed is None:               # nothing yet: meanwhile the first to report has died
            exits[0] = 139
            raise queues.Empty
        return speed

    workers, ready = [Worker(0), Worker(1)], SimpleNamespace(wait=lambda timeout: None, abort=lambda: None)
    sent[:] = [100.0, None, 50.0]
    assert packing._gather(workers, ready, SimpleNamespace(get=get), seconds=1.0) == 150.0
    exits[:], sent[:] = [139, None], []           # the first died before it sent anything
    with pytest.raises(RuntimeError, match=r"a packed run died while timed \(exit codes \[139\]"):
        packing._gather(workers, ready, SimpleNamespace(get=get), seconds=1.0)


def test_a_packed_run_that_dies_is_an_error_at_once_not_a_wait_at_the_barrier(monkeypatch):
    """A dead process does not break a multiprocessing barrier: its peers waited there for WARM_S (600 s of a device
    call). A run that cannot build its model is reported as soon as it has died, with its exit code."""
    monkeypatch.setattr(packing, "WARM_S", 120)     # should the watch fail, the test still ends
    with pytest.raises(RuntimeError, match=r"a packed run died while warming up \(exit codes \[1\]; its error "
                                           r"is printed above\)"):
        packing.packing([1], {**TINY, "depth": "x"}, torch.device("cpu"), seconds=1.0)


def test_cli_passes_its_norms_rounds_and_packing_options_to_the_run(tmp_path, monkeypatch):
    """--norms (canonical names), --rounds, --packing, --packing-mode, --packing-seconds and --mps reach bench.run, not
    their defaults."""
    seen = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: seen.append((args, kwargs)) or [])
    assert main(["bench", "--norms", "LayerNorm,ERF|HSHIFT=.5", "--modes", "eager", "--dtypes", "bf16,fp32",
                 "--rounds", "3", "--packing", "1,2", "--packing-mode", "compiled", "--packing-seconds", "2.5",
                 "--mps", "--device", "cpu", "--out", str(tmp_path)]) == 0
    ((args, kwargs),) = seen
    norms, modes, dtypes, device, steps, warmup, shape, packing_ns, packing_seconds, *_ = args
    assert (norms, modes, dtypes, packing_ns, packing_seconds) == (
        ["layernorm", "erf|hshift=0.5"], ["eager"], ["bf16", "fp32"], [1, 2], 2.5)
    assert (kwargs["rounds"], kwargs["mps"], kwargs["packing_mode"]) == (3, True, "compiled")


def test_an_unknown_dtype_is_one_error_naming_the_choices(tmp_path, capsys, monkeypatch):
    """fp16 would be timed without autocast (fp32) and recorded as fp16."""
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: pytest.fail("measured despite a bad --dtypes"))
    out = tmp_path / "records"
    assert main(["bench", "--modes", "eager", "--dtypes", "bf16,fp16", "--out", str(out)]) == 2
    assert "lab bench: error: --dtypes: unknown value 'fp16'; choose from bf16, fp32" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("rounds", [1, 2])
def test_layernorm_among_the_norms_is_measured_once(monkeypatch, rounds):
    """--norms layernorm,erf: LayerNorm is each (mode, dtype)'s baseline already, not a second row."""
    monkeypatch.setattr(bench, "_setup", lambda *args, **kwargs: (lambda: None, 1e9, None))
    monkeypatch.setattr(bench, "_seconds", lambda step, steps, device: 1.0)
    rows = bench.run(["layernorm", "erf"], ["eager"], ["fp32"], torch.device("cpu"), steps=1, warmup=0, shape=TINY,
                     progress=False, rounds=rounds)
    assert [r["norm"] for r in rows] == ["layernorm", "erf"]


def test_table_shows_the_median_of_the_round_ratios_not_their_mean():
    rows = [{"norm": n, "mode": "eager", "dtype": "fp32", "img_per_s": 100.0, "peak_mem_gib": None, "mfu": None,
             "rounds": [100.0] * 3, "ratio_rounds": ratios}
            for n, ratios in [("layernorm", [1.0] * 3), ("erf", [0.90, 1.00, 1.01])]]     # mean 0.970
    assert "| `erf` | eager | fp32 | 100.0 | 1.000 (0.900–1.010) |" in bench.format_table(rows)


def _fake_processes(monkeypatch, started):
    """multiprocessing stood in for: each started process reports 100 img/s; `started` gets each one's args."""
    queue = []
    ctx = SimpleNamespace(Barrier=lambda n: SimpleNamespace(wait=lambda timeout=None: None),
                          Queue=lambda: SimpleNamespace(get=lambda timeout=None: queue.pop()),
                          Process=lambda target, args: SimpleNamespace(
                              start=lambda: started.append(args) or queue.append(100.0), join=lambda: None,
                              exitcode=None))
    monkeypatch.setattr(packing.mp, "get_context", lambda method: ctx)


def test_packing_rows_name_the_run_mode_the_processes_ran(monkeypatch):
    started = []
    _fake_processes(monkeypatch, started)
    rows = packing.packing([2], TINY, torch.device("cpu"), seconds=1.0, mode="compiled-graphs")
    assert [r["run_mode"] for r in rows] == ["compiled-graphs"] and [a[2] for a in started] == ["compiled-graphs"] * 2


def test_a_packing_row_says_mps_only_where_the_runs_had_it(monkeypatch, capsys):
    """--mps on a machine without a GPU: the runs time-slice (lab.mps says why), and the row must not claim MPS."""
    _fake_processes(monkeypatch, [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = packing.packing([1], TINY, torch.device("cpu"), seconds=1.0, mps=True)
    assert [r["mps"] for r in rows] == [False] and "MPS: no CUDA GPU" in capsys.readouterr().out


@pytest.mark.parametrize("device, dtype", [("cuda", "bf16"), ("cpu", "fp32")])
def test_a_packed_run_trains_in_bf16_on_a_gpu(monkeypatch, device, dtype):
    """The packed runs' step is the proxy's: bf16 autocast on a GPU (fp32 on the CPU), in the mode asked for."""
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(packing, "_sync", lambda device: None)
    monkeypatch.setattr(packing, "_erf_run", lambda shape, device: (None,) * 4)
    monkeypatch.setattr(packing, "_compiled", lambda model, mode: seen.append(mode))
    monkeypatch.setattr(packing, "_step_fn", lambda *args: seen.append(args[-1]) or (lambda: None))
    monkeypatch.setattr(packing, "_steps_per_s", lambda step, seconds, device: 1.0)
    packing._packed_worker(TINY, device, "compiled", 1.0, SimpleNamespace(wait=lambda: None),
                           SimpleNamespace(put=lambda speed: None))
    assert seen == ["compiled", dtype]
