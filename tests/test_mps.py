"""lab.mps: NVIDIA MPS around packed runs, with a stand-in control program (no GPU here): started with its own pipe
folder that the runs inherit, stopped after them, and every way it cannot be had falls back to time-slicing with one
line saying why, leaving nothing behind."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

import lab.train
from lab import bench, cli, mps, sweep

FAKE_CONTROL = """#!/bin/sh
if [ "$#" -eq 0 ]; then read -r cmd; else cmd="$*"; fi
echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_LOG"
[ "$cmd" = get_server_list ] && [ "${FAKE_MPS_SERVERS:-4242}" != none ] && echo "${FAKE_MPS_SERVERS:-4242}"
[ "$cmd" = quit ] && sleep "${FAKE_MPS_QUIT_S:-0}"
exit "${FAKE_MPS_EXIT:-0}"
"""


@pytest.fixture
def control(tmp_path, monkeypatch):
    """A GPU that torch says is there, a control program that logs each call ("-d PIPE", "get_server_list PIPE",
    "quit PIPE") and lists one server, and a check client that fails unless it was started under the daemon's pipe.
    The daemon's folder is made in tmp_path (here and in a child `lab`), not /tmp: a test's daemon that is not to stop
    keeps it. Returns a reader of the calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "control.log"
    bin_dir.mkdir()
    (bin_dir / mps.CONTROL).write_text(FAKE_CONTROL)
    (bin_dir / mps.CONTROL).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    monkeypatch.delenv(mps.PIPE, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(mps, "CLIENT", f"import os; assert os.environ[{mps.PIPE!r}]")
    return lambda: log.read_text().split("\n")[:-1] if log.exists() else []


def test_the_daemon_runs_for_the_block_and_the_processes_started_in_it_join_it(control):
    said = []
    with mps.shared_gpu(True, said.append) as shared:
        pipe = os.environ[mps.PIPE]
        child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ[{mps.PIPE!r}])"],
                               capture_output=True, text=True, check=True)
        assert shared and os.path.isdir(pipe) and child.stdout.strip() == pipe
        assert control() == [f"-d {pipe}", f"get_server_list {pipe}"]    # the check client found its server
    assert control() == [f"-d {pipe}", f"get_server_list {pipe}", f"quit {pipe}"]
    assert mps.PIPE not in os.environ and not os.path.exists(pipe)
    assert len(said) == 1 and "daemon started" in said[0]


@pytest.mark.parametrize("broken, calls, why", [
    ("daemon", ["-d"], "-d failed (exit 1)"),
    ("client", ["-d", "quit"], "no MPS server"),
    ("hung client", ["-d", "quit"], "no answer within 1 s"),
    ("no server", ["-d", "get_server_list", "quit"], "it ran without MPS: the daemon lists no server"),
])
def test_a_daemon_or_check_that_fails_means_time_slicing_and_nothing_left(control, monkeypatch, broken, calls, why):
    if broken == "daemon":
        monkeypatch.setenv("FAKE_MPS_EXIT", "1")
    elif broken == "client":
        monkeypatch.setattr(mps, "CLIENT", "import sys; sys.exit('no MPS server')")
    elif broken == "hung client":
        monkeypatch.setattr(mps, "CLIENT", "import time; time.sleep(30)")
        monkeypatch.setattr(mps, "CHECK_S", 1)
    else:
        monkeypatch.setenv("FAKE_MPS_SERVERS", "none")
    said = []
    with mps.shared_gpu(True, said.append) as shared:
        assert shared is False and mps.PIPE not in os.environ
    assert [c.split()[0] for c in control()] == calls      # a daemon that started is stopped again
    assert not os.path.exists(control()[0].split()[1])
    assert len(said) == 1 and why in said[0] and "time-slice" in said[0]


def test_a_daemon_that_will_not_stop_keeps_its_folder_and_says_how_to_stop_it(control, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MPS_QUIT_S", "5")
    monkeypatch.setattr(mps, "QUIT_S", 1)
    said = []
    with mps.shared_gpu(True, said.append):
        pipe = os.environ[mps.PIPE]
    assert os.path.isdir(pipe) and f"echo quit | {mps.PIPE}={pipe} {mps.CONTROL}" in said[-1]
    assert os.path.dirname(pipe) == str(tmp_path)       # kept where pytest cleans up, not in /tmp


def test_without_a_gpu_or_the_control_program_it_says_why_and_starts_nothing(control, monkeypatch):
    said = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with mps.shared_gpu(True, said.append) as shared:
        assert shared is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("PATH", os.defpath)
    with mps.shared_gpu(True, said.append) as shared:
        assert shared is False
    assert control() == [] and said[0] == "MPS: no CUDA GPU; the runs are on the CPU"
    assert f"{mps.CONTROL} is not on the PATH" in said[1] and "the runs time-slice the GPU" in said[1]


def test_a_daemon_the_environment_names_is_used_and_left_alone(control, monkeypatch, tmp_path):
    monkeypatch.setenv(mps.PIPE, str(tmp_path))
    said = []
    with mps.shared_gpu(True, said.append) as shared:
        assert shared
    with mps.shared_gpu(False, said.append) as shared:
        assert shared is False
    assert control() == [] and os.environ[mps.PIPE] == str(tmp_path) and said == [f"MPS: using the daemon of "
                                                                                   f"{mps.PIPE}={tmp_path}"]


def test_a_packed_sweep_runs_under_the_daemon_and_its_records_say_so(control, tmp_path, monkeypatch):
    tiny = ["epochs=1", "data.train_size=64", "data.val_size=32"]
    records = sweep.sweep("table1", "smoke", tmp_path, overrides=tiny, limit=2, jobs=2, progress=False, mps=True)
    assert [r["pool"] for r in records] == [{"workers": 2, "mps": True}] * 2
    pools = []       # one process (jobs=1): nothing to share, no daemon
    monkeypatch.setattr(lab.train, "run", lambda cfg, norm, out, *, table, progress, pool: pools.append(pool) or {})
    sweep.sweep("table1", "smoke", tmp_path / "alone", overrides=tiny, limit=1, progress=False, mps=True)
    assert pools == [None]
    assert [c.split()[0] for c in control()] == ["-d", "get_server_list", "quit"]
    with pytest.raises(ValueError, match="mps applies to the local launcher only"):
        sweep.sweep("table1", "smoke", tmp_path, launcher="slurm", mps=True, progress=False)


def test_a_packing_bench_runs_every_n_under_one_daemon_and_its_rows_say_so(control):
    tiny = {"model": "vit", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "batch": 4}
    saved = []
    rows = bench.run([], [], ["fp32"], torch.device("cpu"), 1, 0, tiny, packing_ns=[1, 2], packing_seconds=0.5,
                     progress=False, on_row=lambda rows: saved.append(len(rows)), mps=True)
    assert [(r["runs"], r["mps"]) for r in rows] == [(1, True), (2, True)] and saved == [1, 2]
    assert [c.split()[0] for c in control()] == ["-d", "get_server_list", "quit"]


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in os.listdir("/proc"):
        try:
            fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(stat))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.parametrize("drops", ["__del__", "weakref callback"])
def test_a_sigterm_that_python_drops_is_sent_again(drops):
    """unwind's SystemExit raised inside a __del__ or weakref callback is dropped by Python ("Exception ignored in"):
    seen leaving a compiled `lab train` running 10 minutes past `timeout`. The signal comes again and the run stops."""
    code = f"""if True:
        import importlib.util, signal, time, weakref
        spec = importlib.util.spec_from_file_location("cli", {cli.__file__!r})    # lab/cli.py alone: no torch import
        cli = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cli)
        cli.unwind_on_sigterm()
        class Dropped:
            def __del__(self):
                signal.raise_signal(signal.SIGTERM)      # unwind runs here, inside __del__
        if {drops!r} == "__del__":
            Dropped()
        else:
            kept = weakref.ref(lambda: None, lambda ref: signal.raise_signal(signal.SIGTERM))
        time.sleep(30)
        print("still running")
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "still running" not in proc.stdout, proc.stderr
    assert "Exception ignored" not in proc.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from Linux /proc")
def test_sigterm_stops_a_packed_sweep_at_once_and_its_daemon_quits(control, tmp_path):
    """`timeout` or a scheduler stops a sweep with SIGTERM: its workers end now (not after their cells) and their logs
    say where each run stopped, its MPS daemon quits, and the exit status says SIGTERM."""
    out = tmp_path / "results"
    argv = ["sweep", "table1", "--protocol", "smoke", "--results", str(out), "--jobs", "2", "--mps", "--specs",
            "layernorm,erf", "--set", "epochs=1000", "--set", "data.train_size=64", "--set", "data.val_size=32"]
    code = ("import sys, torch; from lab import cli, mps; torch.cuda.is_available = lambda: True; "
            f"mps.CLIENT = 'pass'; sys.exit(cli.main({argv!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(list(out.glob("*.log"))) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        workers = [pid for pid in _children(proc.pid) if _alive(pid)     # not multiprocessing's resource tracker,
                   and b"resource_tracker" not in open(f"/proc/{pid}/cmdline", "rb").read()]   # which exits after
        assert len(list(out.glob("*.log"))) == 2 and len(workers) >= 2, "the two cells never started training"
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped with 2 cells unfinished: run the same command again" in stderr
    assert "leaked" not in stderr                  # no semaphore of a stopped worker's left for the resource tracker
    assert [c.split()[0] for c in control()] == ["-d", "get_server_list", "quit"]
    assert not any(_alive(pid) for pid in workers) and not list(out.glob("*.json"))
    assert all("stopped at update" in log.read_text().splitlines()[-1] for log in out.glob("*.log"))
