"""`lab bench --packing`: proxy packing, the aggregate images/s of N concurrent proxy-size training runs on one device
against one run alone: how far the proxy sweep's `--jobs N` fills a GPU that one small model leaves mostly idle.

`packing` runs N processes (each eager or compiled; with `mps`, under NVIDIA MPS: lab.mps), which the GPU time-slices
unless MPS lets their kernels share it; `packing_streams` (STREAMS) runs N in this one process, each training step one
CUDA graph, replayed on N streams whose kernels can run at once. Each N is a record of mode "packing", which
bench.format_table compares with the N = 1 record of the same session.
"""
import multiprocessing as mp
import queue as queues
import threading
import time

import torch

from .bench import _compiled, _inputs, _model_kwargs, _model_name, _provenance, _step_fn, _sync
from .models import build_model
from .mps import shared_gpu

WARM_S = 600
"""Seconds the packed processes may take to build, compile and warm up (CUDA graphs recorded) before the clock starts."""
STREAMS = "graphed-streams"
"""The packing mode of N runs in one process, each step one CUDA graph, on N streams (packing_streams)."""


def _packed_worker(shape, device, mode, seconds, ready, queue):
    torch.set_num_threads(1)
    device = torch.device(device)
    model, optimizer, images, targets = _erf_run(shape, device)
    step = _step_fn(_compiled(model, mode), optimizer, images, targets, "bf16" if device.type == "cuda" else "fp32")
    for _ in range(3):          # compile, record the CUDA graphs
        step()
    _sync(device)               # the warm-up's queued work is not timed
    ready.wait()                # every worker warm: the clock starts for all at once
    queue.put(_steps_per_s(step, seconds, device) * shape["batch"])


def packing(ns, shape: dict, device: torch.device, seconds: float, mode: str = "eager", mps: bool = False,
            on_row=lambda row: None) -> list[dict]:
    """Aggregate images/s of N concurrent training processes sharing one device, for each N; each runs `mode`;
    on_row(row) after each N. mps: the processes share the GPU through NVIDIA MPS (lab.mps), one daemon for every N,
    where it can be had; each row says whether."""
    ctx, rows = mp.get_context("spawn"), []
    with shared_gpu(mps) as shared:
        for n in ns:
            ready, queue = ctx.Barrier(n + 1), ctx.Queue()
            procs = [ctx.Process(target=_packed_worker, args=(shape, str(device), mode, seconds, ready, queue))
                     for _ in range(n)]
            for p in procs:
                p.start()
            try:
                total = _gather(procs, ready, queue, seconds)
            except BaseException:
                for p in procs:
                    if p.exitcode is None:
                        p.terminate()
                raise
            finally:
                for p in procs:
                    p.join()
            rows.append({**_packing_row(n, mode, total, shape, device), "mps": shared})
            on_row(rows[-1])
    return rows


def _gather(procs, ready, queue, seconds: float) -> float:
    """The workers' images/s, summed, once all have warmed up together and timed `seconds`. A worker that dies (an
    error, a segfault, the OOM killer) is an error at once: a dead process does not break the barrier, which its
    peers would wait at for WARM_S."""
    def dead():
        return [p.exitcode for p in procs if p.exitcode not in (None, 0)]

    def died(when: str):
        return RuntimeError(f"a packed run died {when} (exit codes {dead()}; its error is printed above)")

    done, aborted = threading.Event(), threading.Event()

    def watch():                # break the barrier for the living as soon as one has died
        while not done.wait(0.5):
            if dead():
                aborted.set()
                ready.abort()
                return
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ready.wait(timeout=WARM_S)
    except threading.BrokenBarrierError:
        raise (died("while warming up") if aborted.is_set() else
               RuntimeError(f"the packed runs were not warm within {WARM_S} s")) from None
    finally:
        done.set()
    speeds, end, short = [], time.monotonic() + seconds + 300, False
    while len(speeds) < len(procs):
        try:
            speeds.append(queue.get(timeout=1))
            short = False
        except queues.Empty:    # one that reported and then died (at exit) has still been timed
            if sum(p.exitcode is None for p in procs) + len(speeds) < len(procs):
                if short:       # twice: not a speed sent just before its sender exited
                    raise died("while timed") from None
                short = True
            if time.monotonic() > end:
                raise RuntimeError(f"the packed runs did not report within {seconds + 300:.0f} s") from None
    return sum(speeds)


def packing_streams(ns, shape: dict, device: torch.device, seconds: float) -> list[dict]:
    """Aggregate images/s of N runs in this one process, for each N: each run's whole training step (forward,
    backward, AdamW) captured as one CUDA graph, and the N graphs replayed round-robin on N streams. Unlike N
    processes, whose kernels the GPU time-slices, kernels of one process's streams can run at once: is that the way
    to fill an H100 with the proxy's small models? CUDA only."""
    rows = []
    for n in ns:
        runs = [_graphed_step(shape, device) for _ in range(n)]
        streams = [torch.cuda.Stream(device) for _ in range(n)]

        def replay_all():
            for (graph, _), stream in zip(runs, streams):
                with torch.cuda.stream(stream):
                    graph.replay()

        _sync(device)
        rows.append(_packing_row(n, STREAMS, _steps_per_s(replay_all, seconds, device) * n * shape["batch"], shape,
                                 device))
        del runs
        torch.cuda.empty_cache()
    return rows


def _graphed_step(shape: dict, device: torch.device) -> tuple:
    """One proxy-size run's training step captured whole (PyTorch's whole-network capture: warm-up on a side stream,
    capturable AdamW, autocast without its cast cache), on random images kept in the graph's static inputs. Returns
    the graph and the tensors' owners, which must outlive it: the graph writes to their memory."""
    model, optimizer, images, targets = _erf_run(shape, device, capturable=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):     # the layer's generated kernels compile here, outside the capture
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    return graph, (model, optimizer, images, targets)


def _erf_run(shape: dict, device: torch.device, **adamw):
    """A packed run's erf model, its AdamW (with `adamw` options) and one batch of random images and labels."""
    model = build_model(shape["model"], norm="erf", **_model_kwargs(shape)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **adamw)
    return model, optimizer, *_inputs(shape, model.num_classes, device)


def _packing_row(n: int, run_mode: str, img_per_s: float, shape: dict, device: torch.device) -> dict:
    return {"mode": "packing", "runs": n, "run_mode": run_mode, "img_per_s": img_per_s, "batch": shape["batch"],
            "model": _model_name(shape), **_provenance(device)}


def _steps_per_s(step, seconds: float, device: torch.device) -> float:
    """Steps per second of `step` repeated for `seconds`, over the time until the device has run them all: the CPU
    queues steps ahead of a GPU (with CUDA graphs, far ahead), so dividing by `seconds` would overstate the rate."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    _sync(device)
    return done / (time.perf_counter() - start)
