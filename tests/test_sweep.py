"""lab.sweep: grid expansion and keys, skipping finished cells, crash isolation, GPU faults, kill -9 + resume, SLURM
dry run."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import types

import pytest

import lab.train
from lab import ablations, results, sweep

TINY = ["epochs=2", "data.train_size=128", "data.val_size=64"]  # a second or two per cell


def test_cells_are_the_baseline_plus_the_table_times_seeds(tmp_path):
    cells = sweep.table_cells("table1", "smoke", tmp_path, seeds=(0, 1))
    specs = ["layernorm", *ablations.load("table1").specs()]
    assert [c.spec for c in cells] == specs * 2
    assert [c.seed for c in cells] == [0] * len(specs) + [1] * len(specs)
    assert len({c.path for c in cells}) == len(cells)
    assert all(c.path == results.record_path(tmp_path, c.spec, c.cfg) for c in cells)
    # an identical canonical spec is one run whichever table asks for it; a budget override is another run
    erf = {t: next(c.path for c in sweep.table_cells(t, "smoke", tmp_path) if c.spec == "erf")
           for t in ("table1", "table3", "table6")}
    assert len(set(erf.values())) == 1
    assert sweep.table_cells("table1", "smoke", tmp_path, overrides=["epochs=3"])[0].path != cells[0].path
    assert len(sweep.table_cells("table1", "smoke", tmp_path, limit=3)) == 3


def test_a_stopped_sweep_counts_the_cells_a_rerun_will_train(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the third of five cells: the cell that raised has no record either, so the rerun trains four."""
    outcomes = [("ok", {"spec": "layernorm", "status": "ok", "top1": 50.0}), ("error", "Traceback: boom")]

    def run_cell(cell):
        if not outcomes:
            raise KeyboardInterrupt
        return outcomes.pop(0)

    monkeypatch.setattr(sweep, "_run_cell", run_cell)
    cells = sweep.table_cells("table6", "smoke", tmp_path)[:5]
    with pytest.raises(KeyboardInterrupt):
        sweep.run_cells(cells, jobs=1)
    assert (f"stopped with 4 cells unfinished (1 raised: {tmp_path.name}/{cells[1].spec} s{cells[1].seed}): run the "
            "same command again") in capsys.readouterr().err


@pytest.mark.parametrize("given, minutes", [("4320", 4320), ("90:30", 91), ("72:00:00", 4320), ("3-00", 4320),
                                            ("3-00:00:00", 4320), ("1-02:03", 1563), ("0-00:00:01", 1)])
def test_slurm_time_takes_sbatchs_formats_as_whole_minutes(given, minutes):
    """sbatch's time formats, rounded up to submitit's minutes; as YAML, 72:00:00 was 259200 minutes (180 days)."""
    assert sweep._slurm_params([f"time={given}", "nodes=4"]) == {"time": minutes, "nodes": 4}
    assert sweep._slurm_params({"time": given}) == {"time": minutes}


@pytest.mark.parametrize("kwargs, word", [({"table": "table9"}, "table9.*; or .all. for every table of the paper"),
                                          ({"protocol": "smok"}, "smok"),
                                          ({"launcher": "pbs"}, "pbs"), ({"overrides": ["epochz=1"]}, "epochz"),
                                          ({"launcher": "slurm", "deadline": 60}, "deadline"),
                                          ({"launcher": "slurm", "jobs": 2}, "jobs applies to the local"),
                                          ({"jobs": 0, "dry_run": True}, "jobs 0: at least 1"),
                                          ({"slurm": {"nodes": 2}}, "slurm parameters apply to the slurm"),
                                          ({"launcher": "slurm", "slurm": ["nodes=two"]},
                                           "--slurm nodes='two': nodes is a whole number"),
                                          ({"launcher": "slurm", "slurm": ["time=3 days"]},
                                           "--slurm time='3 days': write minutes or sbatch's D-HH:MM:SS"),
                                          ({"specs": []}, "specs: none given; its specs: layernorm, erf"),
                                          ({"overrides": ["device=cuda:99"]}, "device 'cuda:99': "),
                                          ({"overrides": ["device=gpu"]}, "use auto, cpu, cuda or cuda:N"),
                                          ({"launcher": "slurm", "dry_run": True, "protocol": "paper"},
                                           r"data.path is not set: .*--set data_path=DIR"),
                                          ({"launcher": "slurm", "dry_run": True, "overrides": ["data.img_size=22"]},
                                           "data.img_size"),
                                          ({"launcher": "slurm", "dry_run": True, "slurm": ["gpus_per_node=8"]},
                                           r"gpus_per_node=8 with ntasks_per_node=1 \(the default\): .*GPUs would idle"),
                                          ({"launcher": "slurm", "dry_run": True,
                                            "slurm": ["ntasks_per_node=8", "gpus_per_node=4"]},
                                           "processes would find no GPU")])
def test_bad_input_is_one_clear_error(tmp_path, kwargs, word):
    args = {"table": "table1", "protocol": "smoke", **kwargs}
    with pytest.raises(ValueError, match=word):
        sweep.sweep(args.pop("table"), args.pop("protocol"), tmp_path, progress=False, **args)
    assert not any(tmp_path.iterdir())


def test_finished_cells_are_skipped_and_a_crashing_cell_does_not_stop_the_others(tmp_path, monkeypatch):
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=5)
    done, crash = cells[1], cells[3]
    results.write_json_atomic(done.path, {"spec": done.spec, "status": "ok", "top1": 1.0})
    calls = []

    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        calls.append(norm)
        if norm == crash.spec:
            raise RuntimeError("boom in the middle")
        record = {"spec": norm, "table": table, "status": "ok", "top1": 42.0, "seed": cfg["seed"]}
        results.write_json_atomic(results.record_path(out_dir, norm, cfg), record)
        return record

    monkeypatch.setattr(lab.train, "run", fake_run)
    with pytest.raises(sweep.CellErrors, match="boom in the middle") as err:
        sweep.sweep("table1", "smoke", tmp_path, limit=5, progress=False)
    assert calls == [c.spec for c in cells if c is not done]
    assert [c.spec for c in err.value.errors] == [crash.spec]
    assert [c.path.exists() for c in cells] == [c is not crash for c in cells]



FAULTING_WORKERS = """
import os
if os.environ.get("LAB_TEST_FAULT_SPEC"):
    import pathlib, signal, time, torch, lab.sweep, lab.train
    train = lab.train.run

    def faults():
        path = os.environ["LAB_TEST_FAULT_LOG"]
        return len(open(path).read().split()) if os.path.exists(path) else 0

    def run(cfg, norm, out_dir, **kw):
        if norm == os.environ.get("LAB_TEST_HOLD_SPEC") and faults() < lab.sweep.MAX_STRIKES:
            time.sleep(60)                                # in flight at each fault, until its pool stops it
        if norm != os.environ["LAB_TEST_FAULT_SPEC"]:
            return train(cfg, norm, out_dir, **kw)
        wait = os.environ.get("LAB_TEST_FAULT_AFTER")   # a record to wait for: the cell beside it finishes first
        while wait and not os.path.exists(wait):
            time.sleep(0.05)
        # one more record of another cell per fault: its pool has had a result since its last worker was spawned
        # (CPython 3.11 may watch for that worker's death only from the next result on)
        while os.environ.get("LAB_TEST_FAULT_PACED") and len(list(pathlib.Path(out_dir).glob("*.json"))) <= faults():
            time.sleep(0.05)
        with open(os.environ["LAB_TEST_FAULT_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        how = os.environ.get("LAB_TEST_FAULT_HOW", "cuda")
        if how == "cuda":
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        if how == "exit":
            os._exit(9)                                   # as a segfault or the OOM killer ends a process
        os.kill(os.getpid(), signal.SIGTERM)              # someone stops this worker alone

    lab.train.run = run
"""


def test_a_gpu_fault_restarts_the_pool_and_implicates_only_its_own_cell(tmp_path, monkeypatch):
    """A worker whose CUDA context faults cannot train again (under MPS nor can its neighbours): the cell is retried
    once in a new pool, then reported; the cell beside it, restarted with the pool, trains and is not blamed."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULTING_WORKERS)      # every spawned worker imports it
    innocent, faulty = sweep.table_cells("table1", "smoke", tmp_path, overrides=TINY, limit=2)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LAB_TEST_FAULT_SPEC", faulty.spec)
    monkeypatch.setenv("LAB_TEST_FAULT_LOG", str(tmp_path / "faults"))
    with pytest.raises(sweep.CellErrors) as err:
        sweep.sweep("table1", "smoke", tmp_path, overrides=TINY, limit=2, jobs=2, progress=False)
    assert list(err.value.errors) == [faulty]
    assert "illegal memory access" in err.value.errors[faulty] and "GPU faulted 2 times" in err.value.errors[faulty]
    assert [r["spec"] for r in err.value.records] == [innocent.spec] and innocent.path.exists()
    assert len(set((tmp_path / "faults").read_text().split())) == sweep.MAX_STRIKES   # a new process each time


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_a_dead_worker_is_replaced_and_its_cell_retried_then_reported(tmp_path, monkeypatch, how):
    """A worker that dies (segfault, OOM kill) or is stopped alone with SIGTERM costs its cell one try, not the sweep:
    the cell is retried in a new pool, then reported, and the sweep goes on (no exit 143)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULTING_WORKERS)
    innocent, dying = sweep.table_cells("table1", "smoke", tmp_path, overrides=TINY, limit=2)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LAB_TEST_FAULT_SPEC", dying.spec)
    monkeypatch.setenv("LAB_TEST_FAULT_LOG", str(tmp_path / "deaths"))
    monkeypatch.setenv("LAB_TEST_FAULT_HOW", how)
    monkeypatch.setenv("LAB_TEST_FAULT_AFTER", str(innocent.path))
    with pytest.raises(sweep.CellErrors) as err:
        sweep.sweep("table1", "smoke", tmp_path, overrides=TINY, limit=2, jobs=2, progress=False)
    assert list(err.value.errors) == [dying]
    assert f"worker process died {sweep.MAX_STRIKES} times" in err.value.errors[dying]
    assert [r["spec"] for r in err.value.records] == [innocent.spec]
    assert len(set((tmp_path / "deaths").read_text().split())) == sweep.MAX_STRIKES


def test_a_dead_worker_does_not_cost_the_cells_beside_it_a_try(tmp_path, monkeypatch):
    """A dead worker breaks the whole pool, which then stops the others: the cells in flight beside it start again
    unblamed, so one held in flight while the pool breaks under it twice still trains."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULTING_WORKERS)
    held, dying, *quick = cells = sweep.table_cells("table1", "smoke", tmp_path, overrides=TINY, limit=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LAB_TEST_FAULT_SPEC", dying.spec)
    monkeypatch.setenv("LAB_TEST_FAULT_LOG", str(tmp_path / "deaths"))
    monkeypatch.setenv("LAB_TEST_FAULT_HOW", "exit")
    monkeypatch.setenv("LAB_TEST_FAULT_PACED", "1")       # each death after one of `quick` trains
    monkeypatch.setenv("LAB_TEST_HOLD_SPEC", held.spec)
    with pytest.raises(sweep.CellErrors) as err:
        sweep.sweep("table1", "smoke", tmp_path, overrides=TINY, limit=4, jobs=3, progress=False)
    assert list(err.value.errors) == [dying]
    assert f"worker process died {sweep.MAX_STRIKES} times" in err.value.errors[dying]
    assert sorted(r["spec"] for r in err.value.records) == sorted(c.spec for c in [held, *quick])
    assert [c.path.exists() for c in cells] == [c is not dying for c in cells]
    assert len(set((tmp_path / "deaths").read_text().split())) == sweep.MAX_STRIKES


def test_a_cell_whose_submit_finds_the_pool_broken_is_not_lost(tmp_path, monkeypatch):
    """A worker that dies between the sweep's wait and its next submit breaks the pool under that submit: the cell
    being submitted goes back to the queue rather than vanishing with neither record nor error."""
    from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
    submit, calls = ProcessPoolExecutor.submit, []

    def breaks_once(self, *args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:           # the first submit after a wait
            raise BrokenProcessPool("a worker died")
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", breaks_once)
    cells = sweep.table_cells("table1", "smoke", tmp_path, overrides=TINY, limit=3)
    sweep.sweep("table1", "smoke", tmp_path, overrides=TINY, limit=3, jobs=2, progress=False)
    assert calls[2] in cells and [c.path.exists() for c in cells] == [True] * 3


def test_dict_overrides_keep_their_values(tmp_path):
    """A dict's values are values, not text: None is null (not 'None'), lists and booleans stay what they are."""
    overrides = {"aug.auto_augment": None, "optim.clip_grad": None, "optim.betas": [0.9, 0.95], "compile": True,
                 "lr": 1e-5, "data.kind": "imagefolder", "data.path": "a=b c"}
    [cell] = sweep.plan(["erf"], "smoke", tmp_path, overrides=overrides)
    cfg = cell.cfg
    assert cfg["aug"]["auto_augment"] is None and cfg["optim"]["clip_grad"] is None
    assert cfg["optim"]["betas"] == [0.9, 0.95] and cfg["compile"] is True and cfg["optim"]["lr"] == 1e-5
    assert cfg["data"]["path"] == os.path.abspath("a=b c")        # as given, made absolute (config.load)


def test_the_device_argument_reaches_every_cells_config(tmp_path):
    """reproduce(device=...) reaches the sweep through its notebooks; the device is not hashed (the same record
    names), so a dropped one would train on the config's device unnoticed."""
    cells = sweep.table_cells("table6", "smoke", tmp_path, seeds=(0, 1), specs=["erf", "tanh"], device="cuda:1")
    assert len(cells) == 4 and {c.cfg["device"] for c in cells} == {"cuda:1"}


def test_out_of_memory_is_an_error_of_its_cell_not_a_gpu_fault():
    """The context stays usable after an OOM: restarting the pool would cost the neighbours their work."""
    import torch
    assert not sweep._device_fault(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not sweep._device_fault(RuntimeError("CUDA error: out of memory"))
    assert sweep._device_fault(RuntimeError("CUDA error: an illegal memory access was encountered"))


def test_in_one_process_a_gpu_fault_stops_the_sweep(tmp_path, monkeypatch):
    calls = []

    def fault(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        calls.append(norm)
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(lab.train, "run", fault)
    with pytest.raises(sweep.CellErrors, match="device-side assert") as err:
        sweep.sweep("table1", "smoke", tmp_path, limit=3, progress=False)
    assert len(calls) == 1 and len(err.value.errors) == 1


def _clocked_training(monkeypatch, seconds, **record):
    """Fake training on a fake clock: each cell moves it on by seconds(cfg, record_path) and writes an ok record
    (with `record`'s fields). Returns the clock."""
    clock = [0.0]

    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        path = results.record_path(out_dir, norm, cfg)
        clock[0] += seconds(cfg, path)
        written = {"spec": norm, "table": table, "status": "ok", "top1": 42.0, "seed": cfg["seed"], **record}
        return results.write_json_atomic(path, written) and written

    monkeypatch.setattr(lab.train, "run", fake_run)
    monkeypatch.setattr(sweep, "_now", lambda: clock[0])
    return clock


def test_a_deadline_starts_only_the_cells_that_would_finish_and_a_rerun_trains_the_rest(tmp_path, monkeypatch):
    """Each fake cell takes 100 s of a fake clock: with 250 s, two start (the second when 100 + 100 <= 250), the
    third would end at 300 and waits for the next run."""
    _clocked_training(monkeypatch, lambda cfg, path: 100.0)
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=4)
    assert len(sweep.sweep("table1", "smoke", tmp_path, limit=4, progress=False, deadline=250)) == 2
    assert [c.path.exists() for c in cells] == [True, True, False, False]
    assert len(sweep.sweep("table1", "smoke", tmp_path, limit=4, progress=False)) == 4


def test_a_deadline_judges_each_cell_by_its_own_length(tmp_path, monkeypatch, capsys):
    """A fake cell takes 100 s an epoch. With 250 s: the 1-epoch cell trains (100 s), the 2-epoch one would end at 300
    and waits, the next 1-epoch one still fits (200). Judged by the longest cell alone, the 2-epoch one would have
    started and overrun."""
    clock = _clocked_training(monkeypatch, lambda cfg, path: 100.0 * cfg["schedule"]["epochs"])
    cells = [sweep.plan([spec], "smoke", tmp_path, overrides=[f"epochs={epochs}"])[0]
             for spec, epochs in (("erf", 1), ("tanh", 2), ("sin", 1))]
    sweep.run_cells(cells, deadline=250)
    assert [c.path.exists() for c in cells] == [True, False, True] and clock[0] == 200
    err = capsys.readouterr().err
    assert "1 cell left for the next run, they would not finish within the deadline (200 s a cell" in err


def test_a_cell_resumed_from_its_checkpoint_is_judged_by_all_its_runs(tmp_path, monkeypatch):
    """A fake cell takes 100 s, or 10 s from a checkpoint (its record's wall_s still says 100: all its runs). With
    105 s, after the resumed cell no whole cell fits; judged by its 10 s, the next would start and end at 110."""
    clock = _clocked_training(monkeypatch, lambda cfg, path: 10.0 if results.checkpoint_path(path).exists() else 100.0,
                              wall_s=100.0)
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=3)
    results.checkpoint_path(cells[0].path).write_bytes(b"")
    sweep.run_cells(cells, progress=False, deadline=105)
    assert [c.path.exists() for c in cells] == [True, False, False] and clock[0] == 10


def test_a_deadline_holds_in_the_process_pool(tmp_path, monkeypatch):
    """Two workers; the parent's clock runs 1000x fast, so the first finished cell took "thousands of seconds" and
    no further cell fits in 1000: the first two train, the other two are left."""
    start = time.monotonic()
    monkeypatch.setattr(sweep, "_now", lambda: 1000 * (time.monotonic() - start))
    cells = sweep.table_cells("table1", "smoke", tmp_path, overrides=TINY, limit=4)
    sweep.sweep("table1", "smoke", tmp_path, overrides=TINY, limit=4, jobs=2, progress=False, deadline=1000)
    assert [c.path.exists() for c in cells] == [True, True, False, False]


def test_a_deadline_counts_from_the_clocks_now_and_a_cell_ending_exactly_at_it_starts(tmp_path, monkeypatch):
    """The clock need not start at 0 (time.monotonic does not): 200 s from t=1000 fit two 100 s cells, the second
    ending exactly at the deadline."""
    clock = _clocked_training(monkeypatch, lambda cfg, path: 100.0)
    clock[0] = 1000.0
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=3)
    sweep.run_cells(cells, progress=False, deadline=200)
    assert [c.path.exists() for c in cells] == [True, True, False] and clock[0] == 1200


def test_a_deadline_judges_by_the_slowest_cell_so_far_not_the_last(tmp_path, monkeypatch):
    """The first cell takes 100 s, the others 10 s: each next one is still judged at 100 s, so with 215 s the third
    starts at 110 (done by 210 at the slowest rate) and the fourth, at 120, waits."""
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=4)
    clock = _clocked_training(monkeypatch, lambda cfg, path: 100.0 if path == cells[0].path else 10.0)
    sweep.run_cells(cells, progress=False, deadline=215)
    assert [c.path.exists() for c in cells] == [True, True, True, False] and clock[0] == 120


def test_a_deadline_judges_each_cell_by_its_training_images_too(tmp_path, monkeypatch):
    """As with epochs: a fake cell takes 100 s per 128 training images. With 250 s: the 128-image cell trains, the
    256-image one would end at 300 and waits, the next 128-image one still fits."""
    clock = _clocked_training(monkeypatch, lambda cfg, path: 100.0 * cfg["data"]["train_size"] / 128)
    cells = [sweep.plan([spec], "smoke", tmp_path, overrides=["epochs=1", f"data.train_size={size}"])[0]
             for spec, size in (("erf", 128), ("tanh", 256), ("sin", 128))]
    sweep.run_cells(cells, progress=False, deadline=250)
    assert [c.path.exists() for c in cells] == [True, False, True] and clock[0] == 200


def test_a_deadline_in_the_pool_judges_by_the_cells_finished_so_far(tmp_path, monkeypatch):
    """In the pool as in one process, the cells finished so far set the estimate: two cells packed take 100 s of a
    fake clock, so with 150 s neither of the next two starts (at 100 each would end at 200). The workers are threads
    here, sharing the clock, and the test takes no time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    clock, both_started = [0.0], threading.Barrier(2)

    class Threads(ThreadPoolExecutor):
        def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
            super().__init__(workers)

    def run_cell(cell, pool=None):
        if cells.index(cell) < 2:       # the first pair both submitted at 0 before either moves the clock
            both_started.wait(timeout=10)
        clock[0] = max(clock[0], 100.0 * (1 + cells.index(cell) // 2))       # in pairs, 100 s a pair
        record = {"spec": cell.spec, "status": "ok", "top1": 42.0}
        return "ok", results.write_json_atomic(cell.path, record) and record

    monkeypatch.setattr(sweep, "ProcessPoolExecutor", Threads)
    monkeypatch.setattr(sweep, "_run_cell", run_cell)
    monkeypatch.setattr(sweep, "_now", lambda: clock[0])
    cells = sweep.table_cells("table1", "smoke", tmp_path, limit=4)
    sweep.run_cells(cells, jobs=2, progress=False, deadline=150)
    assert [c.path.exists() for c in cells] == [True, True, False, False] and clock[0] == 100


def test_a_pool_has_no_more_workers_than_cells_and_its_records_say_so(tmp_path, monkeypatch):
    """--jobs 8 over 3 cells packs 3 runs: the records' "pool" (shown as "3 runs packed") must say the packing the
    cells ran under, not the one asked for."""
    seen = []
    monkeypatch.setattr(sweep, "_run_pool", lambda cells, jobs, done, clock, pool, log: seen.append((jobs, pool)) or [])
    sweep.run_cells(sweep.table_cells("table1", "smoke", tmp_path, limit=3), jobs=8, progress=False)
    assert seen == [(3, {"workers": 3, "mps": False})]


def _complete_records(folder):
    """Every *.json under `folder` parses (lab.results writes atomically); returns how many there are."""
    files = list(folder.rglob("*.json"))
    for f in files:
        json.loads(f.read_text())
    return len(files)


@pytest.mark.slow
def test_sigkill_mid_sweep_leaves_complete_files_and_a_rerun_finishes(tmp_path):
    limit = 4
    code = (f"from lab.sweep import sweep; sweep('table5', 'smoke', {str(tmp_path)!r}, limit={limit}, "
            f"overrides={TINY!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        while _complete_records(tmp_path) < 1 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    killed_at = _complete_records(tmp_path)
    assert 1 <= killed_at < limit, "the sweep finished before it could be killed; make the cells slower"
    records = sweep.sweep("table5", "smoke", tmp_path, limit=limit, overrides=TINY, jobs=2, progress=False)
    assert len(records) == limit and _complete_records(tmp_path) == limit
    assert {r["spec"] for r in records} == {c.spec for c in sweep.table_cells("table5", "smoke", tmp_path,
                                                                                limit=limit)}


def test_an_unreadable_record_is_named_before_any_cell_trains(tmp_path, monkeypatch):
    """A record cut off by a full disk is not a finished cell: the sweep names it before training the others."""
    cells = sweep.table_cells("table6", "smoke", tmp_path, specs=["erf", "tanh"])
    cells[1].path.write_text('{"spec": "erf", "sta')
    monkeypatch.setattr(sweep, "_run_cell", lambda cell, pool=None: pytest.fail("a cell trained"))
    with pytest.raises(ValueError, match=f"record {cells[1].path} is not readable JSON"):
        sweep.sweep("table6", "smoke", tmp_path, specs=["erf", "tanh"], progress=False)
    with pytest.raises(ValueError, match=f"record {cells[1].path} is not readable JSON"):
        sweep.run_cells(cells, progress=False)          # as lab calibrate and lab reproduce call it


def test_an_interrupted_record_write_keeps_the_old_record_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A write cut off (a full disk, a kill) must not leave a half record, which would read as a finished cell."""
    path = results.write_json_atomic(tmp_path / "erf.json", {"spec": "erf", "status": "ok"})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        results.write_json_atomic(path, {"spec": "erf", "status": "failed"})
    assert results.read_record(path)["status"] == "ok" and [p.name for p in tmp_path.iterdir()] == ["erf.json"]


def test_records_are_the_json_files_with_a_spec_and_a_status_in_any_subfolder(tmp_path):
    """A folder of records may hold other JSON (a summary, notes): only records count, found in nested folders."""
    results.write_json_atomic(tmp_path / "v1" / "erf.json", {"spec": "erf", "status": "ok"})
    results.write_json_atomic(tmp_path / "notes.json", {"spec": "erf"})
    results.write_json_atomic(tmp_path / "list.json", [{"spec": "erf", "status": "ok"}])
    assert [r["path"] for r in results.load_records(tmp_path)] == [str(tmp_path / "v1" / "erf.json")]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="no such directory"):      # a table of nothing would look like a result
        results.records_dir(tmp_path / "file")


def test_slurm_dry_run_writes_one_array_submission(tmp_path, capsys):
    cells = sweep.table_cells("table4", "smoke", tmp_path)
    results.checkpoint_path(cells[1].path).write_bytes(b"")      # a cell a job of an earlier submission started
    sweep.sweep("table4", "smoke", tmp_path, launcher="slurm", dry_run=True, progress=False,
                slurm={"partition": "gpu", "time": 90})
    assert "resuming from a checkpoint: 1 of them (a job of an earlier submission" in capsys.readouterr().err
    [script] = (tmp_path / "slurm").rglob("*_submission.sh")
    text = script.read_text()
    assert f"#SBATCH --array=0-{len(cells) - 1}%" in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=90" in text
    assert f"{sys.executable} -u -m submitit.core._submit" in text
    pickles = sorted((tmp_path / "slurm").rglob("*_submitted.pkl"))
    assert len(pickles) == len(cells)
    submitted = [pickle.loads(p.read_bytes()) for p in pickles]
    assert {type(s.function) for s in submitted} == {sweep.SlurmCell}
    assert sorted(s.args[0].spec for s in submitted) == sorted(c.spec for c in cells)
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("given, job", [
    ({}, {"ntasks_per_node": 1, "gpus_per_node": 1}),
    ({"nodes": 4, "ntasks_per_node": 8}, {"ntasks_per_node": 8, "gpus_per_node": 8}),
    ({"ntasks_per_node": 8, "gpus_per_task": 1}, {"ntasks_per_node": 8, "gpus_per_task": 1}),
    ({"ntasks_per_node": 8, "gres": "gpu:8"}, {"ntasks_per_node": 8, "gres": "gpu:8"})])
def test_a_slurm_job_has_a_gpu_for_each_process_and_a_cpu_for_each_data_worker(tmp_path, monkeypatch, given, job):
    """ntasks_per_node alone asks for as many GPUs (gres or gpus_per_task, given, say it instead), and the paper
    protocol's 10 data workers a process get their CPUs; the cells' paths are absolute, wherever SLURM starts the
    job."""
    monkeypatch.chdir(tmp_path)
    sweep.sweep("table4", "paper", "res", launcher="slurm", dry_run=True, specs=["linear"], progress=False,
                overrides=[f"data_path={_image_folder(tmp_path / 'imagenet')}", "data.num_classes=2"], slurm=given)
    [script] = (tmp_path / "res" / "slurm").rglob("*_submission.sh")
    text = script.read_text()
    gpus = {"gpus_per_node", "gpus_per_task", "gres"}
    for key, value in {**job, "cpus_per_task": 11}.items():
        assert f"#SBATCH --{key.replace('_', '-')}={value}\n" in text
    assert not any(f"--{key.replace('_', '-')}=" in text for key in gpus - set(job))
    [submitted] = [pickle.loads(p.read_bytes()) for p in (tmp_path / "res" / "slurm").rglob("*_submitted.pkl")]
    assert submitted.args[0].path == tmp_path / "res" / submitted.args[0].path.name


def test_a_slurm_sweep_leaves_an_image_folder_it_cannot_see_to_the_nodes(tmp_path, capsys):
    """A login node may not mount the data: the submission is written, with a word, not refused."""
    unseen = tmp_path / "nodes-only" / "imagenet"
    sweep.sweep("table4", "paper", tmp_path / "res", launcher="slurm", dry_run=True, specs=["linear"],
                overrides=[f"data_path={unseen}"], progress=False)
    assert f"data.path {unseen} is not visible here: the jobs will read it on their nodes" in capsys.readouterr().err
    assert list((tmp_path / "res" / "slurm").rglob("*_submitted.pkl"))


def _image_folder(root):
    """The ImageNet layout, two classes of one tiny image each, for a check that reads a folder's classes."""
    from PIL import Image
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(root / split / name / "0.jpg")
    return root


def test_a_requeued_slurm_task_returns_its_finished_record(tmp_path, monkeypatch):
    """A requeue or a resubmission reaches train.run, which returns the record it finished and trains nothing."""
    import submitit
    monkeypatch.setattr(submitit, "JobEnvironment", type("Env", (), {"num_tasks": 1, "USR_SIG": "USR2"}))
    [cell] = sweep.table_cells("table4", "smoke", tmp_path, specs=["linear"])
    results.write_json_atomic(cell.path, {"spec": "linear", "status": "failed", "top1": None})
    monkeypatch.setattr(lab.train.Trainer, "__init__", lambda *a, **k: pytest.fail("trained a finished cell"))
    assert sweep.SlurmCell()(cell)["status"] == "failed"


def test_a_slurm_task_at_its_time_limit_saves_is_requeued_and_resumes(tmp_path, monkeypatch):
    """submitit's signal (USR2, 90 s before the time limit) reaches the running cell: it saves a checkpoint at its
    next update, has submitit requeue the task (`scontrol requeue`), and the requeued task resumes it to the end, to
    the uninterrupted run's numbers. The task runs here as SLURM would start it, in submitit's own entry point."""
    import threading

    import torch
    from submitit.core.submission import process_job

    from lab import config
    overrides = ["epochs=2", "checkpoint.every_minutes=0"]
    clean = lab.train.run(config.load("smoke", overrides), "linear", tmp_path / "clean", progress=False)
    res = tmp_path / "res"
    [cell] = sweep.table_cells("table4", "smoke", res, specs=["linear"], overrides=overrides)
    sweep.sweep("table4", "smoke", res, launcher="slurm", dry_run=True, specs=["linear"], overrides=overrides,
                progress=False)
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(lab.train, "STOP", threading.Event())
    update = lab.train.Trainer._update
    signal_at_update_5 = lambda step: step == 5 and not lab.train.STOP.is_set() and os.kill(os.getpid(), signal.SIGUSR2)
    monkeypatch.setattr(lab.train.Trainer, "_update",
                        lambda self, step, micro: signal_at_update_5(step) or update(self, step, micro))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}
    try:
        with pytest.raises(SystemExit):          # submitit's exit once it has requeued the task
            process_job(str(res / "slurm" / "%j"))
        assert (tmp_path / "scontrol.calls").read_text() == "requeue 0\n"
        assert not cell.path.exists()
        assert torch.load(results.checkpoint_path(cell.path), weights_only=False)["state"]["step"] == 7
        lab.train.STOP.clear()
        process_job(str(res / "slurm" / "%j"))     # the requeued task
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    resumed = results.read_record(cell.path)
    for key in ("status", "top1", "top1_ema", "history", "loss_curve"):
        assert resumed[key] == clean[key], key
    log = results.log_path(cell.path).read_text()
    assert "stopped at update 7: Stopped" in log and "resumed at update 7" in log
    [result] = (res / "slurm").rglob("*_result.pkl")
    assert pickle.loads(result.read_bytes())[0] == "success"


def test_cli_sweep_dry_run_and_bad_seeds(tmp_path, capsys):
    from lab.cli import main
    assert main(["sweep", "table4", "--protocol", "smoke", "--results", str(tmp_path), "--launcher", "slurm",
                 "--dry-run", "--seeds", "0,1"]) == 0
    assert len(list((tmp_path / "slurm").rglob("*_submitted.pkl"))) == 2 * len(sweep.table_cells(
        "table4", "smoke", tmp_path))
    assert main(["sweep", "table4", "--protocol", "smoke", "--results", str(tmp_path), "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path), "--dry-run", "--specs", "erf",
                 "--set", "seed=3"]) == 0                          # without --seeds: the config's own seed
    assert "would run erf seed=3 -> " in capsys.readouterr().out                 # the dry run's list: stdout


@pytest.mark.parametrize("seconds", ["0", "-5", "inf", "nan", "ten"])
def test_a_deadline_is_a_finite_positive_number_of_seconds(tmp_path, capsys, seconds):
    from lab.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path), "--deadline", seconds])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--deadline" in err and "a positive number" in err and not any(tmp_path.iterdir())


def test_a_model_the_config_cannot_build_is_one_error_before_any_cell_starts(tmp_path, capsys):
    """An image size the patches do not tile, found on the meta device: not one traceback per cell."""
    from lab.cli import main
    assert main(["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path), "--specs", "erf,tanh",
                 "--set", "data.img_size=22"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("lab sweep: error: data.img_size 22 is not a multiple of the model's "
                                           "patch size 5") and err.count("error") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.*"))


def test_cli_errors_and_ctrl_c_are_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    from lab.cli import main
    sweep_cells = ["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path), "--specs", "erf,tanh"]
    monkeypatch.setattr(lab.train.torch.cuda, "is_available", lambda: False)
    assert main([*sweep_cells, "--set", "device=cuda"]) == 2        # checked once, before any cell starts
    err = capsys.readouterr().err
    assert err.count("no CUDA GPU is visible") == 1 and "Traceback" not in err and not any(tmp_path.iterdir())
    (tmp_path / "file").write_text("")
    assert main([*sweep_cells[:5], str(tmp_path / "file" / "r"), *sweep_cells[6:]]) == 1    # a file in the way
    err = capsys.readouterr().err
    assert "\nlab sweep: error: [Errno 20] Not a directory" in err and "Traceback" not in err
    (tmp_path / "file").unlink()
    with monkeypatch.context() as read_only:       # (root would write anyway)
        read_only.setattr(sweep.os, "access", lambda path, mode: False)
        assert main(sweep_cells) == 2 and f"results {tmp_path}: not writable" in capsys.readouterr().err
    monkeypatch.setattr(sweep.shutil, "which", lambda command: None)
    assert main(["sweep", "table4", "--protocol", "smoke", "--results", str(tmp_path), "--launcher", "slurm"]) == 2
    assert "no SLURM on this machine (sbatch and srun not found)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())

    def interrupted(cell):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "_run_cell", interrupted)
    assert main(sweep_cells) == 130
    err = capsys.readouterr().err
    assert "stopped with 2 cells unfinished" in err and "lab sweep: interrupted" in err and "Traceback" not in err


def test_all_is_the_baseline_plus_every_tables_unique_specs_once(tmp_path, capsys):
    from lab.cli import main
    union = {s for t in ablations.TABLES for s in ablations.load(t).specs()}
    assert main(["sweep", "all", "--protocol", "smoke", "--results", str(tmp_path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert f"all [smoke]: {1 + len(union)} unique cells" in err and out.count("would run") == 1 + len(union)
    cells = sweep.table_cells("all", "smoke", tmp_path)
    assert {c.spec for c in cells} == union | {"layernorm"}
    assert {c.table for c in cells if c.spec in ("layernorm", "erf")} == {"table1"}   # the first table with it
    assert next(c.table for c in cells if c.spec == "linear") == "table2"
    assert not any(tmp_path.iterdir())


def test_specs_restrict_the_cells_and_one_outside_the_table_is_an_error(tmp_path, capsys):
    from lab.cli import main
    cells = sweep.table_cells("all", "smoke", tmp_path, seeds=(1, 2), specs=["LayerNorm", "erf", "tanh", "arctan"])
    assert sorted((c.spec, c.seed) for c in cells) == sorted(
        (s, seed) for seed in (1, 2) for s in ("layernorm", "erf", "tanh", "arctan"))
    with pytest.raises(ValueError, match=r"'erf\|flat=1' is not in table1; its specs: layernorm, erf\|hshift=-2"):
        sweep.table_cells("table1", "smoke", tmp_path, specs=["erf", "erf|flat=1"])
    assert main(["sweep", "table5", "--protocol", "smoke", "--results", str(tmp_path), "--dry-run",
                 "--specs", "erf|flat=1, tanh"]) == 0
    assert "table5 [smoke]: 2 unique cells" in capsys.readouterr().err
    assert main(["sweep", "table5", "--protocol", "smoke", "--results", str(tmp_path), "--specs", "erf|hshift=2"]) == 2
    assert "'erf|hshift=2' is not in table5" in capsys.readouterr().err


def test_a_table_of_your_own_is_swept_and_rendered_by_its_path_and_recorded_under_its_name(own_table, tmp_path,
                                                                                          capsys):
    from lab.cli import main
    results_dir = str(tmp_path / "results")
    tiny = [arg for setting in TINY for arg in ("--set", setting)]
    assert main(["sweep", str(own_table), "--protocol", "smoke", "--results", results_dir, "--dry-run"]) == 0
    assert f"{own_table} [smoke]: 7 unique cells" in capsys.readouterr().err      # LayerNorm and its 2 x 3 cells
    assert main(["sweep", str(own_table), "--protocol", "smoke", "--results", results_dir, "--specs", "erf,tanh",
                 *tiny]) == 0
    assert sorted((r["spec"], r["table"]) for r in results.load_records(results_dir)) == [
        ("erf", "table_gd"), ("tanh", "table_gd")]
    capsys.readouterr()
    assert main(["render", str(own_table), "--results", results_dir]) == 0
    out = capsys.readouterr().out
    assert "(82.6)" in out and "| – (–) | – (×) |" in out and "2 of 6 cells run, 1 of them with a paper value" in out


def test_train_records_a_table_of_your_own_by_its_name(own_table, tmp_path, monkeypatch, capsys):
    from lab.cli import main
    tables = []

    def run(cfg, norm, out_dir, *, table, progress):
        tables.append(table)
        return {"spec": norm, "protocol": cfg["protocol"], "failure": None, "top1": 50.0, "top1_ema": 49.0,
                "path": str(out_dir)}
    monkeypatch.setattr(lab.train, "run", run)
    assert main(["train", "--protocol", "smoke", "--norm", "erf", "--out", str(tmp_path), "--table", str(own_table),
                 "--quiet"]) == 0
    assert tables == ["table_gd"] and "top-1 50.00%" in capsys.readouterr().out


def test_a_cell_recorded_elsewhere_under_its_config_is_copied_not_trained(tmp_path, monkeypatch, capsys):
    """A calibration round's cells are grid cells of the protocol that adopts its variant: the grid copies their
    records, logs and kept weights as written and trains only the rest. A record of another config, or whose content
    says another config than its name, is not the same experiment."""
    from lab.cli import main
    from lab.config import config_hash
    calls = []

    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        calls.append(norm)
        path = results.record_path(out_dir, norm, cfg)
        results.write_text_atomic(results.log_path(path), f"{norm} trained in {out_dir}\n")
        results.write_text_atomic(results.weights_path(path), f"weights of {norm}")
        kept = results.weights_path(path).name if norm == "layernorm" else None    # erf's: an earlier run's
        record = {"spec": norm, "table": table, "status": "ok", "top1": 42.0, "seed": cfg["seed"], "weights": kept,
                  "config_hash": config_hash(cfg)}
        return results.write_json_atomic(path, record) and record

    monkeypatch.setattr(lab.train, "run", fake_run)
    specs, shifted = ["layernorm", "erf", "erf|hshift=0.5"], "erf|hshift=0.5"
    calibration = tmp_path / "calibration"
    sweep.sweep("table1", "smoke", calibration / "v1", specs=specs[:2], overrides=TINY, progress=False)
    sweep.sweep("table1", "smoke", calibration / "v2", specs=[shifted], overrides=[*TINY, "lr=1e-3"], progress=False)
    grid = tmp_path / "grid"
    cells = {c.spec: c for c in sweep.table_cells("table1", "smoke", grid, overrides=TINY, specs=specs)}
    results.write_json_atomic(calibration / "stale" / cells[shifted].path.name,
                              {"spec": shifted, "status": "ok", "config_hash": "0" * 12})
    calls.clear()
    args = ["sweep", "table1", "--protocol", "smoke", "--results", str(grid), "--specs", ",".join(specs),
            "--reuse", str(calibration), *[a for o in TINY for a in ("--set", o)]]
    assert main([*args, "--dry-run"]) == 0
    assert f"3 unique cells, 0 done, 2 to copy from {calibration}, 1 to run" in capsys.readouterr().err
    assert not grid.exists() and not calls
    assert main(args) == 0
    assert calls == [shifted]
    for spec in specs[:2]:
        source = calibration / "v1" / cells[spec].path.name
        assert cells[spec].path.read_bytes() == source.read_bytes()
        assert results.log_path(cells[spec].path).read_text() == f"{spec} trained in {calibration / 'v1'}\n"
    assert results.weights_path(cells["layernorm"].path).read_text() == "weights of layernorm"
    assert results.weights_path(cells["layernorm"].path).samefile(
        results.weights_path(calibration / "v1" / cells["layernorm"].path.name))       # a link, not 0.7 GB more
    assert not results.weights_path(cells["erf"].path).exists()
    assert main([*args[:-6], "--reuse", str(tmp_path / "nowhere")]) == 2      # the default config: 3 cells to run
    assert "reuse " in (err := capsys.readouterr().err) and "nowhere: no such directory" in err and calls == [shifted]


def test_weights_are_copied_where_they_cannot_be_linked(tmp_path, monkeypatch):
    """Another device or a filesystem without hard links: the weights are copied, and a file already there is
    replaced whole."""
    def no_links(source, target):
        raise OSError(18, "Invalid cross-device link")

    source, target = tmp_path / "a" / "erf.pth", tmp_path / "b" / "erf.pth"
    results.write_text_atomic(source, "weights")
    results.write_text_atomic(target, "older weights")
    monkeypatch.setattr(os, "link", no_links)
    results.link_atomic(source, target)
    assert target.read_text() == "weights" and not target.samefile(source)
    assert sorted(p.name for p in target.parent.iterdir()) == ["erf.pth"]     # no temporary file left


def test_a_slurm_sweep_that_cannot_submit_copies_nothing_in(tmp_path, monkeypatch):
    """The SLURM checks come before --reuse copies any record: bad input leaves the results folder as it was."""
    from lab.config import config_hash
    source, grid = tmp_path / "calibration", tmp_path / "grid"
    [cell] = sweep.table_cells("table4", "smoke", source, specs=["linear"], overrides=TINY)
    results.write_json_atomic(cell.path, {"spec": "linear", "status": "ok", "config_hash": config_hash(cell.cfg)})
    monkeypatch.setattr(sweep.shutil, "which", lambda command: None)        # no sbatch here
    with pytest.raises(ValueError, match="no SLURM on this machine"):      # logsign is to run, linear to copy
        sweep.sweep("table4", "smoke", grid, launcher="slurm", specs=["linear", "logsign"], overrides=TINY,
                    reuse=source, progress=False)
    assert not grid.exists()


def test_a_pool_is_told_in_its_devices_words():
    """Time-slicing and MPS are how runs share a GPU; on a CPU they run at once, each on its own threads."""
    assert results.pool_text({"workers": 2, "mps": False}, "cpu") == "2 runs at once on the CPU"
    assert results.pool_text({"workers": 14, "mps": False}, "NVIDIA H200") == "14 runs packed (time-sliced)"
    assert results.pool_text({"workers": 14, "mps": True}, "cuda") == "14 runs packed under MPS"
    assert results.pool_text(None, "cpu") == "alone on its device"


def test_a_copy_cut_off_before_its_record_leaves_the_cell_to_train(tmp_path, monkeypatch):
    """--reuse writes the record last: a copy that fails on the weights (a full disk, a kill) leaves no record, so the
    cell is not taken for done without its weights."""
    from lab.config import config_hash
    source, grid = tmp_path / "calibration", tmp_path / "grid"
    [cell] = sweep.table_cells("table4", "smoke", source, specs=["linear"], overrides=TINY)
    results.write_text_atomic(results.weights_path(cell.path), "weights")
    results.write_json_atomic(cell.path, {"spec": "linear", "status": "ok", "config_hash": config_hash(cell.cfg),
                                          "weights": results.weights_path(cell.path).name})

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "link_atomic", disk_full)
    monkeypatch.setattr(sweep, "_run_cell", lambda cell, pool=None: pytest.fail("a cell trained"))
    with pytest.raises(OSError, match="No space left"):
        sweep.sweep("table4", "smoke", grid, specs=["linear"], overrides=TINY, reuse=source, progress=False)
    [target] = sweep.table_cells("table4", "smoke", grid, specs=["linear"], overrides=TINY)
    assert results.finished(target.path) is None
