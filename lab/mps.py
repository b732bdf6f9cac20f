"""NVIDIA MPS for runs packed on one GPU (`lab sweep --jobs N --mps`, `lab calibrate`, `lab bench --packing`).

Without MPS a GPU time-slices processes: it runs one process's kernels at a time, so N packed proxy runs take turns on
an H100 that each of them, with its small kernels, leaves mostly idle; packing then hides only the host's launch gaps.
Under MPS (NVIDIA's Multi-Process Service) the kernels of the N processes share the SMs at once. Each run trains the
same model on the same data either way (its compiler may time and choose other kernel configurations, as it may in
any two runs): MPS changes how fast the pack trains, not what it measures.
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
CLIENT = "import torch; torch.ones(1, device='cuda').sum().item()"
"""The check's CUDA client, run under a new daemon before the runs: an MPS server that cannot start fails it (or keeps
it waiting CHECK_S seconds), not the runs. A client that cannot reach the daemon at all runs without MPS, as CUDA
does, so while it holds its context it also asks the daemon for its servers: none means no MPS."""
CHECK_S, QUIT_S = 120, 60


@contextlib.contextmanager
def shared_gpu(enabled: bool, say=print):
    """Yield whether the processes started in the block share the GPU through MPS.

    A daemon the environment already names (CUDA_MPS_PIPE_DIRECTORY: the user's own) is used as it is. Otherwise one is
    started for the block, in a temporary folder that the block's environment names (child processes inherit it),
    checked with one CUDA client, and stopped after the block. Where MPS cannot be had (no CUDA GPU, no control
    program, a daemon that fails or serves no client), `say` gets one line saying why, nothing is left behind, and the
    block runs without it (False). A process killed inside the block (kill -9; `lab`'s command line unwinds on
    SIGTERM) leaves its daemon running: stop it with
    `echo quit | CUDA_MPS_PIPE_DIRECTORY=FOLDER nvidia-cuda-mps-control` (FOLDER: the one the start line names).
    """
    if not enabled:
        yield False
        return
    if os.environ.get(PIPE):
        say(f"MPS: using the daemon of {PIPE}={os.environ[PIPE]}")
        yield True
        return
    folder = env = None
    why = _unavailable()
    if not why:
        folder = tempfile.mkdtemp(prefix="lab-mps-")
        env = {PIPE: folder, LOG: folder}
        why = _start(env)
    if why:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        say(f"MPS: {why}; the runs {'are on the CPU' if why == NO_GPU else 'time-slice the GPU'}")
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
        if _quit(env):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            say(f"MPS: the daemon did not stop within {QUIT_S} s (a client still running?); stop it with: "
                f"echo quit | {PIPE}={folder} {CONTROL}")


NO_GPU = "no CUDA GPU"


def _unavailable() -> str | None:
    import torch
    if not torch.cuda.is_available():
        return NO_GPU
    if shutil.which(CONTROL) is None:
        return f"{CONTROL} is not on the PATH (it comes with NVIDIA's driver)"
    return None


def _start(env: dict) -> str | None:
    """Start the daemon and check it with one client; None, or why not (the daemon is stopped again)."""
    full, start_log = {**os.environ, **env}, os.path.join(env[LOG], "start.out")
    try:
        with open(start_log, "w") as out:     # a file, not a pipe: the daemon it forks must not hold our end open
            started = subprocess.run([CONTROL, "-d"], env=full, stdout=out, stderr=subprocess.STDOUT, timeout=30)
        if started.returncode:
            return f"{CONTROL} -d failed (exit {started.returncode}): {_last_line(start_log)}"
    except subprocess.TimeoutExpired:
        _quit(env)
        return f"{CONTROL} -d did not return within 30 s"
    check = (f"import subprocess, sys\n{CLIENT}\n"
             f"servers = subprocess.run([{CONTROL!r}], input='get_server_list\\n', capture_output=True, text=True, "
             "timeout=30).stdout.split()\n"
             "sys.exit(0 if servers else 'it ran without MPS: the daemon lists no server')")
    try:
        client = subprocess.run([sys.executable, "-c", check], env=full, capture_output=True, text=True,
                                timeout=CHECK_S)
        why = client.returncode and ((client.stderr or client.stdout).strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        why = f"no answer within {CHECK_S} s"
    if why:
        _quit(env)
        log = _last_line(os.path.join(env[LOG], "control.log"))
        return f"a CUDA process under the daemon failed: {why} (daemon log: {log})"
    return None


def _quit(env: dict) -> bool:
    """Stop the daemon; whether it stopped (it waits for its clients to exit first)."""
    try:
        subprocess.run([CONTROL], input="quit\n", env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=QUIT_S)
        return True
    except subprocess.TimeoutExpired:
        return False


def _last_line(path: str) -> str:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "empty"
