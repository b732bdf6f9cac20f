"""NVIDIA MPS for runs packed on one GPU (`lab sweep --jobs N --mps`, `lab calibrate`, `lab bench --packing`).

Without MPS a GPU time-slices processes: it runs one process's kernels at a time, so N packed proxy runs take turns on
an H100 that each of them, with its small kernels, leaves mostly idle; packing then hides only the host's launch gaps.
Under MPS (NVIDIA's Multi-Process Service) the kernels of the N processes share the SMs at once. Each run computes the
same kernels either way: results do not change, only how fast the pack trains.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

CONTROL = "nvidia-cuda-mps-control"
"""NVIDIA's control program: `-d` starts its daemon, which starts the MPS server for the first client; `quit` ends
it."""
PIPE, LOG = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
"""Where daemon and clients meet: a client (any CUDA process) whose environment names a live daemon's pipe joins it."""
PROBE = (sys.executable, "-c", "import torch; torch.ones(1, device='cuda').sum().item()")
PROBE_S = 120
"""One CUDA client, started before the runs: an MPS server that cannot start fails it (or keeps it waiting PROBE_S
seconds), not the runs."""


@contextlib.contextmanager
def shared_gpu(enabled: bool, say=print):
    """Yield whether the processes started in the block share the GPU through MPS.

    A daemon the environment already names (CUDA_MPS_PIPE_DIRECTORY: the user's own) is used as it is. Otherwise one is
    started for the block, in a temporary folder that the block's environment names (child processes inherit it),
    and stopped after it. Where MPS cannot be had (no CUDA GPU, no control program, a daemon or a first client that
    fails), `say` gets one line saying why, nothing is left behind, and the block runs without it (False).
    """
    if not enabled:
        yield False
        return
    if os.environ.get(PIPE):
        say(f"MPS: using the daemon of {PIPE}={os.environ[PIPE]}")
        yield True
        return
    why = _unavailable()
    if why:
        say(f"MPS: {why}; the runs time-slice the GPU")
        yield False
        return
    folder = tempfile.mkdtemp(prefix="lab-mps-")
    env = {PIPE: folder, LOG: folder}
    why = _start(env)
    if why:
        shutil.rmtree(folder, ignore_errors=True)
        say(f"MPS: {why}; the runs time-slice the GPU")
        yield False
        return
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    say(f"MPS: daemon started ({PIPE}={folder}); the runs share the GPU's SMs")
    try:
        yield True
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _quit(env)
        shutil.rmtree(folder, ignore_errors=True)


def _unavailable() -> str | None:
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if shutil.which(CONTROL) is None:
        return f"{CONTROL} is not on the PATH (it comes with NVIDIA's driver)"
    return None


def _start(env: dict) -> str | None:
    """Start the daemon and one client under it; None, or why not (the daemon is stopped again)."""
    full = {**os.environ, **env}
    daemon = subprocess.run([CONTROL, "-d"], env=full, capture_output=True, text=True)
    if daemon.returncode:
        return f"{CONTROL} -d failed (exit {daemon.returncode}): {_last_line(daemon)}"
    try:
        client = subprocess.run(PROBE, env=full, capture_output=True, text=True, timeout=PROBE_S)
    except subprocess.TimeoutExpired:
        client = subprocess.CompletedProcess(PROBE, 1, "", f"no answer in {PROBE_S} s")
    if client.returncode:
        log = os.path.join(env[LOG], "control.log")
        tail = open(log, encoding="utf-8", errors="replace").read().strip().splitlines()[-1:] \
            if os.path.exists(log) else []
        _quit(env)
        return f"a CUDA process could not start under the daemon: {_last_line(client)}" + \
            (f" (daemon log: {tail[0]})" if tail else "")
    return None


def _quit(env: dict):
    """Stop the daemon; it waits for its clients to exit first, and one that outlives a minute keeps it alive."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([CONTROL], input="quit\n", env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else "no output"
