"""One JSON record per trained cell: where it lives, how it is written (atomically) and read back."""
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .config import config_hash
from .layers import canonical_norm


def record_path(results_dir, norm: str, cfg: dict) -> Path:
    """RESULTS/<spec>.<protocol>-<hash>-s<seed>.json; the spec made filesystem-safe one-to-one.

    Base and transform names hold no "_", so "|" -> "__" and "=" -> "_" cannot collide:
    "erf|hshift=-0.5" -> "erf__hshift_-0.5".
    """
    safe = canonical_norm(norm).replace("|", "__").replace("=", "_")
    return Path(results_dir) / f"{safe}.{cfg['protocol']}-{config_hash(cfg)}-s{int(cfg['seed'])}.json"


def checkpoint_path(record) -> Path:
    """Where a cell's checkpoint lives while it trains (beside its record; not *.json)."""
    return Path(record).with_suffix(".ckpt")


def weights_path(record) -> Path:
    """Where a cell's final weights are kept, beside its record, when its config's checkpoint.keep_weights says so: a
    timm checkpoint ("state_dict", "state_dict_ema"), read back by lab.trained_model or timm's load_checkpoint."""
    return Path(record).with_suffix(".pth")


def log_path(record) -> Path:
    """A cell's training log, beside its record: one line per epoch and event, written as they happen, so a run that
    hangs, dies or is killed still shows how far it got and how fast."""
    return Path(record).with_suffix(".log")


def write_json_atomic(path, obj) -> Path:
    """Write `obj` as JSON atomically (see write_text_atomic)."""
    return write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=True))


def write_text_atomic(path, text: str) -> Path:
    """Write `text` atomically (see write_atomic)."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_atomic(path, write) -> Path:
    """Call write(binary file) on a temporary file, then fsync and rename it (_rename): readers only ever see complete
    files, and a stop during the write leaves no half file (a ViT-B checkpoint is gigabytes). The file gets the
    umask's mode, as one written by `open` does (mkstemp's 0600 hid records in a shared results folder)."""
    path, tmp = _beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())     # a crash after the rename leaves a whole file, not an empty one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _rename(tmp, path)
    return path


def link_atomic(source, path) -> Path:
    """`path` as a hard link to `source`, a copy where the filesystem has none (another device, no links): kept
    weights are 0.7 GB a paper cell, and none is rewritten in place (a cell trained again replaces its file, which
    leaves the other name with the weights it had). Atomic as write_atomic."""
    path, tmp = _beside(path)
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as kept:
            return write_atomic(path, lambda f: shutil.copyfileobj(kept, f))
    _rename(tmp, path)
    return path


def _rename(tmp: Path, path: Path) -> None:
    """os.replace (tmp removed if that fails), then fsync the folder, so that the new name is on disk before whatever
    the caller does next: a finished run writes its record, then removes its checkpoint, and a power loss must not
    keep the removal alone. A filesystem that cannot fsync a folder (some network ones) still gets the atomic rename."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def remove_temporaries(path):
    """Remove the half-written copies of `path` that a process killed while writing it left (write_atomic's and
    link_atomic's temporaries; a ViT-B checkpoint's are gigabytes)."""
    path = Path(path)
    for stale in path.parent.glob(_temporary(path.name, "*")):
        stale.unlink(missing_ok=True)


def _beside(path) -> tuple[Path, Path]:
    """(path, a temporary name beside it that no other process or call uses), its folder made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(_temporary(path.name, f"{os.getpid()}.{secrets.token_hex(4)}"))


def _temporary(name: str, tag: str) -> str:
    """The name of a temporary copy of file `name`: hidden, beside it, and never a record (*.json)."""
    return f".{name}.{tag}.tmp"


def read_record(path) -> dict:
    """The record at `path`; ValueError naming it if it is not a .json file (a cell's log or weights beside it: no
    advice to delete those) or not JSON (written by hand, or cut off by a full disk)."""
    if Path(path).suffix != ".json":
        raise ValueError(f"{path}: not a record (a cell's record is the .json file of its name)")
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"record {path} is not readable JSON ({err}): delete it to train its cell again") from None
    return {**record, "path": str(path)} if isinstance(record, dict) else record


FINISHED = ("ok", "failed")
"""The statuses of a finished cell: it trained, or it failed (a failure is a result, not retried)."""


def finished(path) -> dict | None:
    """The cell's record if it has finished, trained or failed (a failure is a result, not retried); else None. An
    unreadable one is its ValueError now, before anything trains: a record cut off by a full disk is not a finished
    cell."""
    if Path(path).exists():
        record = read_record(path)
        if record.get("status") in FINISHED:
            return record
    return None


def writable_dir(path, name: str) -> Path:
    """`path` made if missing, checked writable before any work whose output would go there (ValueError naming it as
    `name`); a file in the way is mkdir's OSError, which names it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise ValueError(f"{name} {path}: not writable")
    return path


def records_dir(path) -> Path:
    """`path` if it is a folder, else ValueError: a mistyped folder of records would render an empty table or report
    that looks like a result."""
    if not Path(path).is_dir():
        raise ValueError(f"results {path}: no such directory (where `lab sweep --results` wrote records)")
    return Path(path)


def load_records(results_dir) -> list[dict]:
    """Every record (*.json with spec and status) under `results_dir`, recursively, each with its "path"."""
    root = Path(results_dir)
    records = [read_record(p) for p in sorted(root.rglob("*.json"))] if root.is_dir() else []
    return [r for r in records if isinstance(r, dict) and "spec" in r and "status" in r]


def as_records(records) -> list[dict]:
    """The records that the analysis functions (lab.tables, lab.figures, lab.fidelity) are given, in any form a user
    holds them: a results folder (searched recursively), a record's path, one record, or an iterable of records and
    paths. A folder that does not exist is records_dir's ValueError, not an empty table."""
    if isinstance(records, (str, os.PathLike)):
        return [read_record(records)] if Path(records).is_file() else load_records(records_dir(records))
    if isinstance(records, dict):
        return [records]
    return [r if isinstance(r, dict) else read_record(r) for r in records]


def pool_text(pool: dict | None, device=None) -> str:
    """How a record's run shared its device, in words (its "pool", as lab.sweep writes it; None: alone). On a CPU the
    runs share the cores, each its own threads: time-slicing and MPS are a GPU's."""
    if not pool:
        return "alone on its device"
    if str(device).startswith("cpu"):
        return f"{pool['workers']} runs at once on the CPU"
    return f"{pool['workers']} runs packed" + (" under MPS" if pool["mps"] else " (time-sliced)")


def git_commit(root=None) -> str | None:
    """The repository's git commit, "+dirty" when a tracked file's content differs from it (a file mode does not
    count: copies to another machine can lose it); None outside a checkout."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-c", "core.fileMode=false", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
