"""Run a table's grid: (spec × seed) cells, each one `lab.train.run`, skipping cells whose record already exists.

Launchers: in this process (jobs=1), a spawn-context process pool (jobs=N: each worker imports torch once and runs many
cells; with a GPU the workers share it, which is how small proxy models fill an H100, and with NVIDIA MPS (lab.mps)
their kernels run at once), or a SLURM array through submitit.
Records are written atomically by lab.results, so a kill at any moment leaves only complete files and a re-run finishes
the rest. A divergence is a "failed" record; an unexpected exception in one cell is collected and raised at the end
(`CellErrors`) after every other cell has run. A worker that dies, or whose GPU faults, is replaced (see _run_pool).
"""
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import typing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
import multiprocessing

from tqdm import tqdm

from .mps import shared_gpu

ALL = "all"
"""`lab sweep all`: the LayerNorm baseline plus every paper table's cells as one grid (one pool, shared cells once)."""
LAUNCHERS = ("local", "slurm")
MAX_STRIKES = 2
"""A cell whose worker process dies (segfault, OOM kill) or whose GPU faults this many times is reported instead of
retried."""
DEVICE_FAULTS = ("CUDA error", "Triton Error [CUDA]")
"""How CUDA's sticky errors read (an illegal address, a device-side assert) where torch raises them as RuntimeError."""
STOP_S = 10
"""How long a stopped pool's workers get to unwind (log where their runs stopped) before they are killed."""
MAX_TIMEOUTS = 30
"""How many times submitit requeues a cell's job at a SLURM time limit, each time to resume it (a 300-epoch paper cell
can outlast several limits); a preemption counts only late in a job, where submitit takes it for the time limit."""
OTHER_GPU_SETTINGS = {"gpus_per_task", "gres", "num_gpus"}
"""submitit's settings that ask for GPUs other than gpus_per_node: given one, the job's GPUs are the user's to say."""
REQUEUE_WAIT_S = 120
"""How long a SLURM task other than rank 0 waits, once it has saved, for the requeue to end it: a task that exited
first could end the job step, rank 0 with it, before rank 0 has requeued."""


@dataclass(frozen=True)
class Cell:
    """One run: a norm spec under one resolved config (protocol, overrides, seed), and where its record goes."""
    table: str | None
    spec: str
    seed: int
    cfg: dict
    path: Path

    def __hash__(self):
        return hash(self.path)


class CellErrors(RuntimeError):
    """Cells that raised instead of producing a record; `records` holds every record the sweep did produce."""

    def __init__(self, errors: dict, records: list):
        self.errors, self.records = errors, records
        lines = [f"{count(len(errors), 'cell')} raised (every other cell ran):"]
        lines += [f"--- {cell.spec} seed={cell.seed}\n{tb.rstrip()}" for cell, tb in errors.items()]
        super().__init__("\n".join(lines))


def plan(specs, protocol: str, results_dir, *, table: str | None = None, seeds=None, overrides=None,
         device: str | None = None, source=None) -> list[Cell]:
    """The cells for `specs` × `seeds` (seeds=None: the config's own seed), each at its lab.results.record_path.
    source: the protocol's settings from this file (see config.load)."""
    from . import config, results
    base = override_items(overrides, device)
    seeds = [None] if seeds is None else [int(s) for s in seeds]
    cells = []
    for seed in seeds:
        cfg = config.load(protocol, base + ([] if seed is None else [f"seed={seed}"]), source=source)
        for spec in dict.fromkeys(specs):
            cells.append(Cell(table, spec, int(cfg["seed"]), cfg, Path(results.record_path(results_dir, spec, cfg))))
    return cells


def table_cells(table: str, protocol: str, results_dir, *, seeds=None, overrides=None, device=None,
                limit: int | None = None, specs=None) -> list[Cell]:
    """The LayerNorm baseline plus the table's unique canonical specs, × seeds ("all": every paper table's; see
    union_cells for `limit` and `specs`)."""
    from . import ablations
    if table != ALL:
        try:
            ablations.load(table)
        except ValueError as err:
            raise ValueError(f"{err}; or {ALL!r} for every table of the paper") from None
    return union_cells(ablations.TABLES if table == ALL else [table], protocol, results_dir, seeds=seeds,
                       overrides=overrides, device=device, limit=limit, specs=specs)


def trained_specs(ablation) -> list[str]:
    """What a sweep of this table (an ablations.Ablation) trains: the LayerNorm baseline, then its unique specs."""
    from .layers import BASELINE
    return list(dict.fromkeys([BASELINE, *ablation.specs()]))


def union_cells(tables, protocol: str, results_dir, *, seeds=None, overrides=None, device=None,
                limit: int | None = None, specs=None) -> list[Cell]:
    """The cells of several tables (see ablations.load: the paper's, or paths of your own) as one grid: a spec they
    share is one cell, recorded under the first table's name.

    Each table brings the LayerNorm baseline and its unique canonical specs; `specs` keeps only these (canonicalised;
    ValueError naming one the tables lack), then `limit` the first N of each table.
    """
    from . import ablations
    from .layers import canonical_norm
    per_table = {ab.name: trained_specs(ab) for ab in map(ablations.load, tables)}
    if specs is not None:
        wanted = [canonical_norm(s) for s in specs]
        known = list(dict.fromkeys(s for table_specs in per_table.values() for s in table_specs))
        unknown = [s for s in wanted if s not in known]
        if unknown or not wanted:
            why = f"{unknown[0]!r} is not in {', '.join(per_table)}" if unknown else "none given"
            raise ValueError(f"specs: {why}; its specs: {', '.join(known)}")
        per_table = {t: [s for s in table_specs if s in wanted] for t, table_specs in per_table.items()}
    cells = {}
    for table, table_specs in per_table.items():
        if limit is not None:
            table_specs = table_specs[:max(int(limit), 0)]
        for cell in plan(table_specs, protocol, results_dir, table=table, seeds=seeds, overrides=overrides,
                         device=device):
            cells.setdefault(cell.path, cell)
    return list(cells.values())


def sweep(table: str, protocol: str, results_dir="results", *, jobs: int = 1, launcher: str = "local", seeds=None,
          overrides=None, device: str | None = None, dry_run: bool = False, progress: bool = True,
          limit: int | None = None, slurm: dict | None = None, specs=None,
          deadline: float | None = None, mps: bool = False, reuse=()) -> list[dict]:
    """Train every missing cell of `table` (a paper table's name, the path of one of your own, or "all": of every
    paper table) plus the LayerNorm baseline, or only of `specs`, and return the records of all its cells.

    dry_run: local → only report what would run; slurm → write the sbatch script and pickles, submit nothing.
    `slurm`: submitit SlurmExecutor parameters (partition, time, nodes, ntasks_per_node, gpus_per_node, ...) as a dict
    or "key=value" strings; an unknown one is submitit's ValueError listing the valid ones.
    deadline (local launcher): seconds from now within which started cells should finish (see run_cells).
    mps (local launcher, jobs > 1): the packed runs share the GPU through NVIDIA MPS (see run_cells).
    reuse: a folder, or folders, whose records of the same cells are copied in instead of trained (see reusable).
    """
    slurm = _check_launcher(launcher, jobs=jobs, deadline=deadline, mps=mps, slurm=slurm)
    check_jobs(jobs)
    from . import results
    cells = table_cells(table, protocol, results_dir, seeds=seeds, overrides=overrides, device=device, limit=limit,
                        specs=specs)
    missing = [c for c in cells if results.finished(c.path) is None]
    reuse = [reuse] if isinstance(reuse, (str, Path)) else list(reuse)
    found = reusable(missing, reuse)
    missing = [c for c in missing if c not in found]
    say(f"{table} [{protocol}]: {count(len(cells), 'unique cell')}, {len(cells) - len(missing) - len(found)} done, "
        + (f"{len(found)} to copy from {', '.join(map(str, reuse))}, " if found else "")
        + f"{len(missing)} to run" + (" (dry run)" if dry_run else ""), progress)
    job = prepare_slurm(missing, results_dir, dry_run=dry_run, params=slurm) if launcher == "slurm" else None
    for cell, source in found.items():
        if dry_run:
            listed(f"  would copy {cell.spec} seed={cell.seed} <- {source}", progress)
        else:
            _copy_record(source, cell.path)
    if launcher == "slurm":
        submit_slurm(missing, results_dir, job, dry_run=dry_run)
    elif dry_run:
        for cell in missing:
            listed(f"  would run {cell.spec} seed={cell.seed} -> {cell.path}", progress)
    else:
        run_cells(missing, jobs=jobs, progress=progress, desc=table, deadline=deadline, mps=mps)
    return [results.read_record(c.path) for c in cells if c.path.exists()]


def _check_launcher(launcher: str, *, jobs, deadline, mps, slurm):
    """An option the launcher does not take is one clear error, before anything is written. Returns `slurm`, parsed
    for the slurm launcher (see _slurm_params)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if deadline is not None and launcher != "local":
        raise ValueError(f"deadline applies to the local launcher only, not {launcher!r} (SLURM jobs have their own "
                         "time limit)")
    if mps and launcher != "local":
        raise ValueError(f"mps applies to the local launcher only, not {launcher!r} (one GPU shared by a pool)")
    if slurm and launcher != "slurm":
        raise ValueError(f"slurm parameters apply to the slurm launcher only, not {launcher!r}")
    if launcher == "slurm":
        slurm = _slurm_params(slurm)
    if int(jobs) != 1 and launcher != "local":
        raise ValueError(f"jobs applies to the local launcher only, not {launcher!r} (each cell is an array task; "
                         "--slurm array_parallelism=N caps how many run at once)")
    return slurm


def check_jobs(jobs: int):
    """`lab sweep`, `lab calibrate` and `lab reproduce`'s runs at once, checked before anything is written."""
    if int(jobs) < 1:
        raise ValueError(f"jobs {jobs}: at least 1")


def reusable(cells, folders) -> dict:
    """cell -> a record of it under `folders` (searched recursively): the same file name and config hash, so the same
    experiment trained elsewhere, e.g. by a calibration round whose variant the protocol then adopts."""
    from . import results
    from .config import config_hash
    absent = [f for f in folders if not Path(f).is_dir()]
    if absent:
        raise ValueError(f"reuse {absent[0]}: no such directory (a folder of records, such as `lab calibrate` writes)")
    names = {c.path.name: c for c in cells}
    found = {}
    for folder in folders:
        for record in results.load_records(folder):
            cell = names.get(Path(record["path"]).name)
            if cell is not None and cell not in found and record.get("config_hash") == config_hash(cell.cfg):
                found[cell] = Path(record["path"])
    return found


def _copy_record(source: Path, target: Path):
    """The record as written, its log and the weights it names (a hard link where it can be) first: the record marks
    the cell done, so a kill between leaves it to train."""
    from . import results
    text, log, weights = source.read_text(encoding="utf-8"), results.log_path(source), results.weights_path(source)
    if log.exists():
        results.write_text_atomic(results.log_path(target), log.read_text(encoding="utf-8"))
    if json.loads(text).get("weights") and weights.exists():
        results.link_atomic(weights, results.weights_path(target))
    results.write_text_atomic(target, text)


_now = time.monotonic     # the deadline's clock (tests replace it)


class Deadline:
    """Whether a cell can start and still finish within `seconds` of now, judged by the slowest of the cells finished
    so far, in seconds per training image (the first ones always start): a run on a machine lent for a fixed time
    leaves for the next run the cells it could only half train, and frees the machine sooner. Per image, so a round
    whose variants train for 80 and 160 epochs judges each by its own length. A cell resumed from a checkpoint is
    judged by its record's wall_s, the training time of all its runs. seconds=None: no deadline."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else _now() + float(seconds)
        self.rate = 0.0

    def observe(self, cell: Cell, started: float, record: dict | None = None):
        seconds = max(_now() - started, float((record or {}).get("wall_s") or 0))
        self.rate = max(self.rate, seconds / _images(cell))

    def estimate(self, cell: Cell) -> float:
        return self.rate * _images(cell)

    def allows(self, cell: Cell) -> bool:
        return self.end is None or _now() + self.estimate(cell) <= self.end


def _images(cell: Cell) -> float:
    """What a cell's time grows with: epochs × training images (per epoch where the dataset's size is not set)."""
    return float(cell.cfg["schedule"]["epochs"]) * float(cell.cfg["data"].get("train_size") or 1)


def run_cells(cells, *, jobs: int = 1, progress: bool = True, desc: str = "cells",
              deadline: float | None = None, mps: bool = False):
    """Run `cells` (skipping those whose record exists) in this process or a pool; raise CellErrors at the end.
    deadline: seconds from now; a cell starts only if it should finish by then (see Deadline), the rest wait for the
    next run. mps: the pool's workers share the GPU through NVIDIA MPS (lab.mps.shared_gpu); each record's "pool"
    says how its cell ran ({"workers": N, "mps": bool}; null: alone in its process)."""
    from . import results
    cells = [c for c in dict.fromkeys(cells) if results.finished(c.path) is None]
    from .models import check_model
    from .train import resolve_device
    for device in {c.cfg["device"] for c in cells}:
        resolve_device(device)          # one ValueError before any cell starts, not one traceback per cell
    for cfg in _configs(cells):
        check_model(cfg)
    for folder in {c.path.parent for c in cells}:
        results.writable_dir(folder, "results")
    clock = Deadline(deadline)
    tally = _Tally(tqdm(total=len(cells), desc=desc, unit="cell", disable=not progress or not cells,
                        dynamic_ncols=True))
    log = lambda line: say(f"{desc}: {line}", progress)
    try:
        if jobs <= 1 or len(cells) <= 1:
            left = _run_here(cells, tally.done, clock, log)
        else:
            workers = min(jobs, len(cells))
            with shared_gpu(mps, say=lambda line: say(line, progress)) as shared:
                left = _run_pool(cells, workers, tally.done, clock, {"workers": workers, "mps": shared}, log=log)
    except (KeyboardInterrupt, SystemExit):
        raised = f" ({len(tally.errors)} raised: {', '.join(map(_name, tally.errors))})" if tally.errors else ""
        log(f"stopped with {count(len(cells) - len(tally.records), 'cell')} unfinished{raised}: run the same command "
            "again to train them (finished cells are kept; a stopped run resumes from its last checkpoint, if it wrote "
            "one)")
        raise
    finally:
        tally.bar.close()
    if left:
        estimates = ", ".join(f"{s} s" for s in sorted({round(clock.estimate(c)) for c in left}))
        log(f"{count(len(left), 'cell')} left for the next run, they would not finish within the deadline "
            f"({estimates} a cell at the slowest rate so far): run again to train them")
    if tally.errors:
        raise CellErrors(tally.errors, tally.records)


class _Tally:
    """run_cells' records and errors, each shown on its progress bar as its cell finishes."""

    def __init__(self, bar: tqdm):
        self.bar, self.records, self.errors = bar, [], {}

    def done(self, cell: Cell, kind: str, value):
        if kind == "ok":
            self.records.append(value)
            self.bar.set_postfix_str(f"{cell.spec}: {_verdict(value)}", refresh=False)
        else:
            self.errors[cell] = value
            self.bar.set_postfix_str(f"{cell.spec}: ERROR", refresh=False)
        self.bar.update()


def _run_here(cells, done, clock: Deadline, log) -> list:
    """One cell after another in this process, until a GPU fault: this process's CUDA context is then unusable.
    Returns the cells left because `clock` said they would not finish in time."""
    left = []
    for i, cell in enumerate(cells):
        if not clock.allows(cell):
            left.append(cell)
            continue
        started = _now()
        kind, value = _run_cell(cell)
        done(cell, "error" if kind == "fault" else kind, value)
        clock.observe(cell, started, value if kind == "ok" else None)
        if kind == "fault" and cells[i + 1:]:
            log(f"the GPU faulted, and this process cannot use it again: run again to train the "
                f"{count(len(cells) - i - 1, 'cell')} left")
            break
    return left


def _run_pool(cells, jobs, done, clock: Deadline, pool: dict, log=print) -> list:
    """At most `jobs` cells in flight. A dead worker (segfault, OOM kill) breaks the pool, which stops the others: its
    cell is retried, the others start again unblamed (see _died_alone).
    A GPU fault (see _run_cell) implicates its own cell; the pool is replaced by a new one (new CUDA contexts: under
    MPS one client's fault breaks every client's) and the other cells in flight start again from their checkpoints.
    Returns the cells left because `clock` said they would not finish in time. `pool` goes into each record."""
    state = _PoolState(list(cells), done, clock, log)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    while state.queue:
        with tempfile.TemporaryDirectory(prefix="lab-pool-") as taken, \
                ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_init_worker, initargs=(threads, os.getpid())) as executor:
            state.running = {}          # this pool's futures only
            try:
                while state.queue or state.running:
                    _submit_ready(executor, jobs, pool, taken, state)
                    if not state.running:
                        break
                    finished, _ = wait(state.running, return_when=FIRST_COMPLETED)
                    if _collect(finished, state):      # a GPU fault: the cells beside it go to a new pool
                        state.queue[:0] = state.in_flight()
                        _stop_now(executor)
                        break
            except BrokenProcessPool:
                _charge_dead_worker(executor, taken, state)
            except BaseException:
                _stop_now(executor)
                raise
    return state.left


@dataclass
class _PoolState:
    """What _run_pool's steps share across the pools it starts: the cells waiting, those in flight in this pool
    (future -> (cell, start time)), the workers each cell has cost (deaths, GPU faults), and the cells left."""
    queue: list
    done: typing.Callable
    clock: Deadline
    log: typing.Callable
    running: dict = field(default_factory=dict)
    strikes: dict = field(default_factory=dict)
    left: list = field(default_factory=list)

    def in_flight(self) -> list:
        return [cell for cell, _ in self.running.values()]


def _submit_ready(executor: ProcessPoolExecutor, jobs: int, pool: dict, taken, state: _PoolState):
    """Fill the pool's free slots from the queue; a cell that `clock` says would not finish in time goes to `left`."""
    while state.queue and len(state.running) < jobs:
        cell = state.queue.pop(0)
        if not state.clock.allows(cell):
            state.left.append(cell)
            continue
        try:
            state.running[executor.submit(_run_in_worker, cell, pool, taken)] = cell, _now()
        except BrokenProcessPool:   # a worker died since the last wait: this cell never ran
            state.queue.insert(0, cell)
            raise


def _collect(finished, state: _PoolState) -> bool:
    """Hands each finished cell's result to `done`, or the cell to _retry if its GPU faulted; whether one did."""
    faulted = False
    for future in finished:
        cell, started = state.running[future]
        kind, value = future.result()      # a dead worker raises here, its cell still in `running`
        del state.running[future]
        state.clock.observe(cell, started, value if kind == "ok" else None)
        if kind == "fault":
            faulted = True
            state.log(f"the GPU faulted running {cell.spec} seed={cell.seed}; the pool restarts "
                      f"({value.rstrip().splitlines()[-1]})")
            _retry(state, cell, f"{value.rstrip()}\nthe GPU faulted")
        else:
            state.done(cell, kind, value)
    return faulted


def _retry(state: _PoolState, cell: Cell, why: str):
    """The cell goes first in the queue, or is reported once it has cost MAX_STRIKES workers: a cell that kills its
    worker must not be retried forever."""
    from . import results
    state.strikes[cell] = state.strikes.get(cell, 0) + 1
    if state.strikes[cell] >= MAX_STRIKES:
        state.done(cell, "error", f"{why} {state.strikes[cell]} times running this cell; how far it got: "
                                  f"{results.log_path(cell.path)}")
    else:
        state.queue.insert(0, cell)


def _charge_dead_worker(executor: ProcessPoolExecutor, taken, state: _PoolState):
    """A dead worker broke the pool: the cell it ran costs a try (see _died_alone), the others in flight go back to
    the queue unblamed."""
    processes = dict(getattr(executor, "_processes", None) or {})     # no public way (see _stop_now)
    executor.shutdown(wait=True)        # the others are stopped: every exit code is in
    in_flight = state.in_flight()
    culprits = _died_alone(processes, taken, in_flight)
    for cell in in_flight:
        if not culprits or cell in culprits:
            _retry(state, cell, "worker process died")
        else:
            state.queue.insert(0, cell)


def _died_alone(processes: dict, taken, cells) -> set:
    """Those of `cells` whose worker ended on its own rather than by the SIGTERM with which the broken pool stopped
    the rest (-15, or 143 once lab.cli.unwind handles it), found by the pid each worker notes in folder `taken` as it
    takes a cell. Empty when none is found (a SIGTERM to one worker alone reads like the pool's): the caller then
    charges every cell, as a cell that kills its worker must not be retried forever. The kernel's OOM killer ends the
    process with the most memory, which need not be the one whose allocation failed: such a death is charged to the
    cell its victim was running."""
    stopped = (-signal.SIGTERM, 128 + signal.SIGTERM)
    notes = [Path(taken, str(pid)) for pid, p in processes.items() if p.exitcode not in (None, *stopped)]
    paths = {note.read_text() for note in notes if note.exists()}
    return {cell for cell in cells if str(cell.path) in paths}


def _stop_now(executor: ProcessPoolExecutor):
    """End the pool's workers now (Ctrl-C, SIGTERM, a GPU fault): shutdown() alone waits for every running cell to
    finish. SIGTERM makes each run log where it stopped (lab.cli.unwind) and unwind; one still there STOP_S later is
    killed. Records are atomic and checkpoints resume, so a stopped cell loses at most its last checkpoint interval."""
    processes = list((executor._processes or {}).values())     # no public way before Python 3.14's terminate_workers
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    end = time.monotonic() + STOP_S
    for process in processes:
        process.join(max(0.0, end - time.monotonic()))
        if process.is_alive():
            process.kill()


def _init_worker(threads: int, parent: int):
    """Each worker gets its share of the CPU so N workers don't oversubscribe it, unwinds on SIGTERM as the sweep
    does, and dies with the sweep."""
    from .cli import unwind_on_sigterm
    unwind_on_sigterm()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    tqdm.set_lock(threading.RLock())     # its default, a named semaphore, would outlive a worker stopped by os._exit
    import torch
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int):
    """A killed (-9) sweep cannot stop its pool; the workers notice the new parent and exit (records are atomic)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run_in_worker(cell: Cell, pool: dict, taken):
    """_run_cell in a pool's worker, which first notes its pid against the cell in folder `taken` (see _died_alone).
    A SIGTERM (lab.cli.unwind) ends the worker once its run has logged where it stopped: the pool then sees a dead
    worker, as after a kill, rather than the SystemExit that would end the sweep."""
    try:
        Path(taken, str(os.getpid())).write_text(str(cell.path))
        return _run_cell(cell, pool)
    except SystemExit as stop:
        os._exit(stop.code if isinstance(stop.code, int) else 1)


def _run_cell(cell: Cell, pool: dict | None = None):
    """("ok", record), ("error", traceback), or ("fault", traceback) for a CUDA error that leaves this process's
    context unusable: never raises, so one cell cannot stop the others."""
    from . import train
    try:
        return "ok", train.run(cell.cfg, cell.spec, cell.path.parent, table=cell.table, progress=False, pool=pool)
    except train.CellBusy as err:      # another process trains it: its message says all
        return "error", str(err)
    except Exception as err:
        return "fault" if _device_fault(err) else "error", traceback.format_exc()


def _device_fault(err: Exception) -> bool:
    """A CUDA error, except running out of memory, which leaves the context usable (the cell is an error)."""
    import torch
    if "out of memory" in str(err):
        return False
    return isinstance(err, getattr(torch, "AcceleratorError", ())) or any(f in str(err) for f in DEVICE_FAULTS)


class SlurmCell:
    """One SLURM array task, as submitit pickles it: torch.distributed set up for multi-task jobs; a cell done (a
    requeue, a resubmission) is train.run's finished record.

    A job nearing its time limit, or preempted, gets submitit's signal (USR2, 90 s ahead): every rank then saves a
    checkpoint at the same update (train.STOP), and rank 0 has submitit requeue the task, which resumes from it
    (`checkpoint`; see MAX_TIMEOUTS)."""

    def __call__(self, cell: Cell) -> dict:
        import submitit

        from . import train
        ranks = submitit.JobEnvironment().num_tasks
        if ranks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        usr = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        requeue = signal.signal(usr, lambda *_: train.STOP.set())     # submitit's handler, called once saved
        try:
            record = train.run(cell.cfg, cell.spec, cell.path.parent, table=cell.table, progress=False)
        except train.Stopped:   # the signals that follow only set STOP again: one requeue, however many they are
            if callable(requeue):       # rank 0: checkpoint() below, the task requeued, SystemExit; others return
                requeue(usr, None)
            if ranks > 1:
                time.sleep(REQUEUE_WAIT_S)      # SLURM ends them with the job: exiting first could end rank 0
                sys.exit(-1)                    # then an end, as submitit's rank 0 exits, not an error to record
            raise
        signal.signal(usr, requeue)
        return record

    def checkpoint(self, cell: Cell):
        """What submitit requeues: the same cell, which train.run resumes from its checkpoint."""
        import submitit
        return submitit.helpers.DelayedSubmission(self, cell)


def prepare_slurm(cells, results_dir, *, dry_run: bool = False, params=None) -> dict | None:
    """The sbatch parameters for `cells` (see _slurm_job), once everything that would fail in the queue is checked,
    before anything is written (None: no cells). Raises ValueError naming what is wrong."""
    if not cells:
        return None
    missing = [command for command in ("sbatch", "srun") if not shutil.which(command)]
    if missing and not dry_run:
        raise ValueError(f"launcher slurm: no SLURM on this machine ({' and '.join(missing)} not found): run it where "
                         "SLURM is, or add --dry-run to write the job files here")
    job = _slurm_job(cells, _slurm_params(params))
    _check_slurm_cells(cells, results_dir)
    return job


def submit_slurm(cells, results_dir, job: dict | None, *, dry_run: bool = False):
    """One submitit array job over `cells` with `job`'s sbatch parameters (prepare_slurm); dry_run writes the sbatch
    script and pickles under RESULTS/slurm/."""
    import submitit

    from . import results
    if not cells:
        return []
    cells = [dataclasses.replace(c, path=c.path.absolute()) for c in cells]    # wherever the job starts
    with _dry_run_sbatch() if dry_run else contextlib.nullcontext():
        executor = submitit.SlurmExecutor(folder=Path(results_dir) / "slurm" / "%j", max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(**job)
        jobs = executor.map_array(SlurmCell(), cells)
    array = jobs[0].job_id.split("_")[0]
    what = "wrote (dry run, not submitted) a SLURM array" if dry_run else f"submitted SLURM array {array}"
    say(f"{what} of {count(len(cells), 'cell')}: {Path(results_dir) / 'slurm'}", True)
    started = [c for c in cells if results.checkpoint_path(c.path).exists()]
    if started:
        say(f"resuming from a checkpoint: {len(started)} of them (a job of an earlier submission that still trains "
            "one keeps it; the new job's task for it then stops at once, saying so)", True)
    return jobs


def _configs(cells) -> list[dict]:
    """Each distinct config of `cells` once (by config hash): what a check before any cell starts looks at."""
    from .config import config_hash
    return list({config_hash(c.cfg): c.cfg for c in cells}.values())


def _check_slurm_cells(cells, results_dir):
    """Before the jobs wait in the queue: each config's model (as run_cells checks it), an image folder's layout, and
    the results folder. An image folder this machine cannot see (a login node may not mount it) is left to the nodes,
    with a word."""
    from . import data, results
    from .models import check_model
    for cfg in _configs(cells):
        check_model(cfg)
        path = cfg["data"].get("path")
        if cfg["data"]["kind"] != "imagefolder":
            continue
        if not path or Path(path).exists():
            data.check_folder(path)
        else:
            say(f"data.path {path} is not visible here: the jobs will read it on their nodes", True)
    results.writable_dir(results_dir, "results")


def _slurm_job(cells, given: dict) -> dict:
    """The job's sbatch parameters: `given` over the defaults, one GPU a process (gpus_per_node follows
    ntasks_per_node unless given, or unless another GPU setting says it), a CPU for each data worker and one more
    (unless CPUs are given per GPU)."""
    workers = max(int(c.cfg["data"].get("workers") or 0) for c in cells)
    job = {"job_name": "lab-sweep", "time": 60 * 24, "ntasks_per_node": 1, **given}
    if "cpus_per_gpu" not in given:
        job.setdefault("cpus_per_task", workers + 1)
    if not {"gpus_per_node", *OTHER_GPU_SETTINGS} & set(given):
        job["gpus_per_node"] = job["ntasks_per_node"]
    tasks, gpus = job["ntasks_per_node"], job.get("gpus_per_node")
    if gpus is not None and gpus != tasks and not OTHER_GPU_SETTINGS & set(given):
        raise ValueError(f"--slurm gpus_per_node={gpus} with ntasks_per_node={tasks}"
                         f"{'' if 'ntasks_per_node' in given else ' (the default)'}: a run takes one GPU a process, so "
                         f"{'GPUs would idle' if gpus > tasks else 'processes would find no GPU'}; give them the same "
                         "number (or ntasks_per_node alone)")
    return job


@contextlib.contextmanager
def _dry_run_sbatch():
    """submitit with no cluster: every file sbatch would get is written, and "sbatch" is an echo (job id 0)."""
    from unittest import mock
    import submitit
    echo = lambda self, path: ["echo", f"Submitted batch job 0 (dry run: sbatch {path})"]
    with mock.patch.object(submitit.SlurmExecutor, "_make_submission_command", echo), \
            mock.patch.object(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1)):
        yield


def _slurm_params(params) -> dict:
    """A dict, or "key=value" strings (values parsed as YAML: "nodes=4" is an int) as given on the command line.
    A value submitit takes as a whole number (nodes, ...) given as text is named here, not a TypeError deep inside
    map_array; time is minutes or any of sbatch's formats (3-00:00:00)."""
    import yaml
    from submitit.slurm.slurm import _make_sbatch_string     # whose annotations submitit's parameters follow
    if isinstance(params, dict) or not params:
        params = dict(params or {})
    else:
        bad = [p for p in params if "=" not in p]
        if bad:
            raise ValueError(f"--slurm {bad[0]!r}: write key=value (e.g. partition=gpu, nodes=4, time=4320)")
        pairs = [(k.strip(), v) for k, v in (p.split("=", 1) for p in params)]
        params = {k: v if k == "time" else yaml.safe_load(v) for k, v in pairs}     # time: sbatch's formats
    if isinstance(params.get("time"), str):
        params["time"] = _slurm_minutes(params["time"])
    hints = typing.get_type_hints(_make_sbatch_string)
    for key, value in params.items():
        whole = int in (typing.get_args(hints.get(key)) or (hints.get(key),))
        if whole and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"--slurm {key}={value!r}: {key} is a whole number (e.g. {key}=4)")
    return params


def _slurm_minutes(text: str) -> int:
    """A --slurm time in any of sbatch's formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as the whole
    minutes submitit takes, rounded up. YAML would read 72:00:00 as a base-60 number: 259200 minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"--slurm time={text!r}: write minutes or sbatch's D-HH:MM:SS (e.g. time=4320, "
                         "time=3-00:00:00)")
    days, first, second, third = match.groups()
    if days is None and third is None:       # minutes or MM:SS
        hours, minutes, seconds = 0, first, second or 0
    else:                                    # HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS
        hours, minutes, seconds = first, second or 0, third or 0
    total = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
    return -(-total // 60)


def override_items(overrides, device) -> list[str]:
    """Overrides given as a dict, one string or a list, plus the device, as "key=value" strings, which config.load
    parses as YAML: a dict's values written as JSON (a YAML subset), so None is null rather than the text 'None', and a
    string stays text to parse, as config.load treats a dict."""
    if overrides is None:
        items = []
    elif isinstance(overrides, dict):
        items = [f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in overrides.items()]
    elif isinstance(overrides, str):
        items = [overrides]
    else:
        items = list(overrides)
    return items + ([f"device={device}"] if device else [])


def _verdict(record: dict) -> str:
    if record.get("status") == "ok":
        return f"{record['top1']:.1f}%"
    return f"failed ({(record.get('failure') or {}).get('kind', '?')})"


def _name(cell: Cell) -> str:
    """A cell as a person tells it from the others of a sweep or calibration round: folder, spec and seed."""
    return f"{cell.path.parent.name}/{cell.spec} s{cell.seed}"


def say(line: str, progress: bool):
    """A progress line: on stderr, above tqdm's bars, and only when the command shows progress."""
    if progress:
        tqdm.write(line, file=sys.stderr)


def count(n: int, noun: str) -> str:
    """"1 cell", "2 cells": the messages' counts."""
    return f"{n} {noun}{'s' * (n != 1)}"


def listed(line: str, progress: bool):
    """A line of a dry run's list: the command's output, so stdout (a pipe, > file), beside say's stderr."""
    if progress:
        print(line, flush=True)
