"""Protocols are plain YAML (configs/protocols/NAME.yaml); a run's config is a protocol plus `key=value` overrides.

Overrides take a dotted path into the config ("optim.weight_decay=0.1") or one of the SHORTCUTS ("lr=1e-3").
Values are parsed as YAML ("1e-3", "null", "[0.9, 0.95]"). An unknown protocol or key is a ValueError naming it, and
so is a value of the wrong type, out of range, not among the choices, or null where the setting cannot be off.
"""
import copy
import hashlib
import json
import os
from pathlib import Path

import yaml
from timm.optim import list_optimizers

from . import data
from .perturb import did_you_mean

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "configs" / "protocols"
PROTOCOLS = tuple(sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml")))

SHORTCUTS = {
    "lr": "optim.lr",
    "batch_size": "optim.batch_size",
    "epochs": "schedule.epochs",
    "warmup_epochs": "schedule.warmup_epochs",
    "data_path": "data.path",
    "alpha0": "model.alpha0",
}
"""Short override names for the settings people change most (seed and device are top-level keys already)."""

NOT_HASHED = ("seed", "device", "threads", "log_every", "checkpoint", "compile", "compile_mode", "data.workers",
              "optim.micro_batch")
"""Settings of where and how fast a run goes, left out of config_hash. micro_batch only splits the effective batch
into accumulation steps. The device is one with a caveat: the embedded set is drawn on it, so a CPU and a GPU draw
different sets from one seed (data.generate), and their records of one cell would be taken for the same experiment.
Each protocol is meant for one kind of device (smoke: a CPU; proxy: a GPU) and a record names its device; hashing it
now would rename every committed record."""

ADDED_LATER = ("checkpoint.keep_weights",)
"""Settings of where and how a run goes (NOT_HASHED) added to the protocol files after calibration base files were
pinned (configs/calibration/bases/): a base file without one takes the protocol's value."""

_POSITIVE = ("> 0", lambda v: v > 0)
_NON_NEGATIVE = (">= 0", lambda v: v >= 0)
_PROBABILITY = ("in [0, 1]", lambda v: 0 <= v <= 1)
_BELOW_ONE = ("in [0, 1)", lambda v: 0 <= v < 1)
_FRACTION = ("in (0, 1]", lambda v: 0 < v <= 1)
RANGES = {
    "threads": _POSITIVE,
    "schedule.epochs": _POSITIVE, "schedule.warmup_epochs": _NON_NEGATIVE, "schedule.min_lr": _NON_NEGATIVE,
    "schedule.warmup_lr": _NON_NEGATIVE,
    "optim.lr": _NON_NEGATIVE, "optim.batch_size": _POSITIVE, "optim.micro_batch": _POSITIVE, "optim.eps": _POSITIVE,
    "optim.weight_decay": _NON_NEGATIVE, "optim.clip_grad": _POSITIVE, "optim.betas": _BELOW_ONE,
    "model.patch_size": _POSITIVE, "model.embed_dim": _POSITIVE, "model.depth": _POSITIVE, "model.num_heads": _POSITIVE,
    "model.mlp_ratio": _POSITIVE, "model.drop_path_rate": _BELOW_ONE,
    "data.num_classes": ("> 1", lambda v: v > 1), "data.img_size": _POSITIVE, "data.train_size": _POSITIVE,
    "data.val_size": _POSITIVE, "data.clutter": _NON_NEGATIVE, "data.noise": _NON_NEGATIVE,
    "aug.scale": _FRACTION, "aug.hflip": _PROBABILITY, "aug.reprob": _PROBABILITY,
    "aug.mixup": _NON_NEGATIVE, "aug.cutmix": _NON_NEGATIVE, "aug.mixup_prob": _PROBABILITY,
    "aug.mixup_switch_prob": _PROBABILITY, "aug.smoothing": _BELOW_ONE, "aug.color_jitter": _NON_NEGATIVE,
    "eval.every_epochs": _NON_NEGATIVE, "eval.batch_size": _POSITIVE, "eval.crop_pct": _FRACTION,
    "ema.decay": _BELOW_ONE,
    "failure.loss_factor": _POSITIVE, "failure.max_grad_norm": _POSITIVE, "failure.chance_sigmas": _NON_NEGATIVE,
    "checkpoint.every_steps": _NON_NEGATIVE, "checkpoint.every_minutes": _NON_NEGATIVE,
}
"""The values a numeric setting may take (each element, for a list): checked once the overrides are applied, so a
bad value fails before anything is trained or written. aug.scale's [min, max] must also be in order."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""torch.compile's modes; reduce-overhead replays CUDA graphs (for small, launch-bound models like the proxy's)."""

CHOICES = {
    "precision": ("fp32", "bf16", "fp16"),
    "compile_mode": COMPILE_MODES,
    "data.kind": data.KINDS,
    "optim.opt": tuple(list_optimizers()),
    "aug.interpolation": data.INTERPOLATIONS,
    "aug.remode": ("const", "rand", "pixel"),
    "aug.mixup_mode": ("batch", "pair", "elem"),
    "model.global_pool": ("", "avg", "avgmax", "max", "token", "map", "prr"),
}
"""The values a named setting may take, checked with RANGES (so a sweep refuses a bad one before any cell starts, not in
every cell's traceback): the precisions of autocast (lab/train.py); torch.compile's modes; lab/data.py's kinds;
timm's optimizer registry; the embedded set's resampling modes (lab/data.py, where any other name was silently
bilinear; one list for both data kinds, so a protocol means the same on either: lanczos or random, which timm's
folder transforms also take, are refused); timm's RandomErasing modes (else a bare AssertionError) and Mixup modes
(any other was silently "batch"); timm VisionTransformer's pooling modes (else a bare AssertionError)."""

NULLABLE = {"threads": 1, "data.path": "/datasets/imagenet", "optim.micro_batch": 128, "optim.clip_grad": 1.0,
            "optim.layer_decay": 0.75, "aug.auto_augment": "rand-m9-mstd0.5-inc1"}
"""The settings that may be null, each with an example of its value when set (an override must match its type): null
is torch's threads, the whole batch in one step, no clipping, no layer decay, no RandAugment; data.path matters for an
image folder only. A null anywhere else is an error: lr=null trained at timm's default lr, most others crashed later."""


def load(protocol: str, overrides: list[str] | dict | None = None, *, source=None) -> dict:
    """The resolved config of `protocol` with `overrides` applied (a list of "key=value" strings or a dict).

    source: a YAML file to read the protocol's settings from instead of configs/protocols/NAME.yaml, the protocol
    keeping its name: a calibration round stays pinned to the protocol as it was when the round ran (its records keep
    their config hashes when the protocol later adopts a round's findings).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}"
                         f"{did_you_mean(protocol, PROTOCOLS)}")
    cfg = read_yaml(PROTOCOL_DIR / f"{protocol}.yaml")
    if source is not None:
        cfg = _stand_in(cfg, Path(source))
    cfg["protocol"] = protocol
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    for key, value in items:
        _set(cfg, key, value, parse=isinstance(value, str))
    if cfg["data"]["path"] is not None:     # one dataset, one hash: ~/ds, ./ds and /home/me/ds/ are one path
        cfg["data"]["path"] = os.path.abspath(os.path.expanduser(cfg["data"]["path"]))
    _check(cfg)
    return cfg


def _check(cfg: dict):
    """RANGES, aug.scale's order, whole heads, CHOICES and a data.path that would be read, on the config as it will
    run."""
    for dotted, (allowed, ok) in RANGES.items():
        value = _get(cfg, dotted)
        if value is not None and not all(ok(v) for v in (value if isinstance(value, list) else [value])):
            raise ValueError(f"config key {dotted!r}: {value!r} is out of range (allowed: {allowed})")
    low, high = _get(cfg, "aug.scale")
    if low > high:
        raise ValueError(f"config key 'aug.scale': {[low, high]!r} is out of range (allowed: [min, max], min <= max)")
    width, heads = _get(cfg, "model.embed_dim"), _get(cfg, "model.num_heads")
    if width and heads and width % heads:
        raise ValueError(f"config keys 'model.embed_dim' and 'model.num_heads': {width} is not a multiple of {heads} "
                         "(each head takes embed_dim / num_heads channels)")
    for dotted, choices in CHOICES.items():
        value = _get(cfg, dotted)
        name = value.lower().split("_")[-1] if dotted == "optim.opt" and isinstance(value, str) else value
        if name not in choices:     # timm reads "AdamW" and "lookahead_adamw" as adamw (its create_optimizer_v2)
            raise ValueError(f"config key {dotted!r}: {value!r} is not a valid choice{did_you_mean(name, choices)}; "
                             f"choose one of {', '.join(choices)}")
    if _get(cfg, "data.kind") == "embedded" and _get(cfg, "data.path") is not None:
        raise ValueError(f"config key 'data.path' is set ({_get(cfg, 'data.path')}) but data.kind is 'embedded', the "
                         "generated set, which reads no folder: add --set data.kind=imagefolder to train on the folder")


def config_hash(cfg: dict) -> str:
    """12 hex chars over the config less the seed, the norm and NOT_HASHED (where and how fast it runs)."""
    kept = copy.deepcopy(cfg)
    for dotted in NOT_HASHED:
        *parents, leaf = dotted.split(".")
        node = kept
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _get(cfg: dict, dotted: str):
    """The value at a dotted key ("optim.lr", "threads"), None where the config has none."""
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_keys(where: str, mapping, allowed: set, required: set) -> None:
    """A file's mapping has only `allowed` keys and every `required` one; ValueError naming them otherwise."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping, got {mapping!r}")
    unknown, missing = set(mapping) - allowed, required - set(mapping)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(allowed)}")
    if missing:
        raise ValueError(f"{where}: missing key(s) {sorted(missing)}")


def read_yaml(path: Path):
    """The file's YAML; a syntax error is one ValueError naming the file and the place, not the parser's traceback."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None


def _stand_in(protocol_cfg: dict, source: Path) -> dict:
    """`source`'s settings, checked as the protocol file they stand in for: the same keys, each value of that file's
    type (as an override is checked). Else a misspelt key passed a calibration's dry run and every cell raised
    KeyError. The values are returned as written, so that a pinned round keeps its records' config hashes; a setting
    of ADDED_LATER that the file predates is the protocol's."""
    settings = read_yaml(source)
    if not isinstance(settings, dict):
        raise ValueError(f"{source}: expected the settings of a protocol file, got {settings!r}")
    expected, given = keys(protocol_cfg), keys(settings)
    unknown, missing = [k for k in given if k not in expected], [k for k in expected if k not in given]
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], expected)}")
    for key in [k for k in missing if k in ADDED_LATER]:
        section, leaf = key.rsplit(".", 1)
        if isinstance(node := _get(settings, section), dict):      # a missing section is still missing
            node[leaf] = copy.deepcopy(_get(protocol_cfg, key))
            missing.remove(key)
    if missing:
        raise ValueError(f"{source}: missing key(s) {', '.join(map(repr, missing))}, which every protocol file has")
    typed = copy.deepcopy(protocol_cfg)
    for key in given:
        value = _get(settings, key)
        try:
            if value is not None:       # a pinned file may leave a setting unset; an override then sets it
                _set(typed, key, value)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return settings


def keys(cfg: dict, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config (what --set accepts)."""
    out = []
    for k, v in cfg.items():
        out += keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def _split(item: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override {item!r}: write key=value (e.g. lr=1e-3, epochs=5, model.depth=6)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _parse(text: str, as_text: bool = False):
    """An override's value. For a text setting, the text as written (a path may hold " #" or ": ", which YAML reads as
    a comment or a mapping) unless it is null or quoted. Else YAML, with YAML 1.1's gap closed: "1e-3" is a number."""
    quoted = len(text) > 1 and text[0] == text[-1] and text[0] in "'\""
    if as_text and text not in ("", "null", "~") and not quoted:
        return text
    value = yaml.safe_load(text) if text else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _set(cfg: dict, key: str, value, parse: bool = False):
    """Set dotted `key` (or a SHORTCUTS name) to `value` (with parse: the text of an override), checked against the
    protocol's value there: the same type, or null where NULLABLE allows it."""
    dotted = SHORTCUTS.get(key, key)
    path = dotted.split(".")
    node = cfg
    for i, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            valid = sorted(SHORTCUTS) + keys({k: v for k, v in cfg.items() if k != "protocol"})
            raise ValueError(f"unknown config key {key!r}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}")
        if i == len(path) - 1:
            old = node[part]
            if isinstance(old, dict):
                raise ValueError(f"config key {key!r} is a section; set one of its fields: "
                                 f"{', '.join(f'{key}.{k}' for k in old)}")
            like = NULLABLE.get(dotted) if old is None else old     # None: a null of one's own base file
            if parse:
                value = _parse(value, as_text=isinstance(like, str))
            if value is None and dotted not in NULLABLE:
                raise ValueError(f"config key {key!r}: null is not allowed (only {', '.join(NULLABLE)} may be null)")
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if value is not None and like is not None and not _compatible(like, value):
                kind = f"list of {len(like)}" if isinstance(like, list) else type(like).__name__
                raise ValueError(f"config key {key!r}: {value!r} is not a {kind} like {like!r}")
            node[part] = _coerce(like, value)
        node = node[part]


def _coerce(like, value):
    """An int where the protocol has a float becomes a float, in lists too: 1 and 1.0 are one setting, one hash."""
    if isinstance(like, list):
        return [_coerce(a, b) for a, b in zip(like, value)]
    return float(value) if isinstance(like, float) and isinstance(value, int) else value


def _compatible(old, new) -> bool:
    """Numbers for numbers, text for text, lists of the same length for lists."""
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(map(_compatible, old, new))
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float)) and (isinstance(old, float) or isinstance(new, int))
    return isinstance(new, type(old))
