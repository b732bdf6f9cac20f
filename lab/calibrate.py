"""`lab calibrate FILE`: choose a one-GPU proxy protocol by training a small named subset of cells under several
candidate config variants, all packed into one process pool, and showing how each variant agrees with the paper.

FILE is plain YAML (configs/calibration/): `protocol`, `seeds` (optional: the config's own), `base` (optional: the
protocol's settings from this YAML file, relative to FILE, instead of configs/protocols/, with that file's keys and
types; a round pins the protocol as it was when it ran), `subset` (specs of Tables 1–6, or layernorm) and `variants`
(name -> list of `lab train --set` overrides). Records go to RESULTS/<variant>/, so a re-run skips finished cells; the
summary goes to RESULTS/summary-<file stem>.md.
"""
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import ablations, config, data, results, sweep, tables
from .layers import BASELINE, PointwiseNorm, canonical_norm
from .models import from_config

RESULTS_DIR = ablations.ABLATIONS_DIR / "results" / "calibration"
KEYS = {"protocol", "seeds", "base", "subset", "variants"}
REQUIRED = {"protocol", "subset", "variants"}


@dataclass(frozen=True)
class Calibration:
    """A validated calibration file: canonical subset specs, and variants as lists of "key=value" overrides."""
    name: str
    path: Path
    protocol: str
    base: Path | None       # the protocol's settings pinned for this round (None: configs/protocols/)
    seeds: list[int] | None
    subset: list[str]
    variants: dict[str, list[str]]


def paper_values() -> dict[str, float | None]:
    """The paper's top-1 of every canonical spec (None = the paper's ×)."""
    return {spec: cell.paper for spec, cell in ablations.cells_by_spec().items()}


def load(path) -> Calibration:
    """The validated calibration file; every variant's overrides are resolved once, so bad input fails before any
    training, with a ValueError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"calibration file {str(path)!r} not found (examples: configs/calibration/)")
    raw = config.read_yaml(path)
    config.check_keys(str(path), raw, KEYS, REQUIRED)
    base = raw.get("base")
    if base is not None:
        base = path.parent / str(base)
        if not base.is_file():
            raise ValueError(f"{path}: base {raw['base']!r}: no such file beside {path.name} (a protocol YAML such as "
                             f"{config.PROTOCOL_DIR / (str(raw['protocol']) + '.yaml')})")
        try:
            config.load(raw["protocol"], source=base)       # checked as the protocol file it stands in for
        except ValueError as err:
            raise ValueError(f"{path}: base: {err}") from None
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"{path}: seeds {seeds!r}: expected a list of integers such as [0, 1, 2]")
    subset = raw["subset"]
    if not isinstance(subset, list) or not subset:
        raise ValueError(f"{path}: subset {subset!r}: expected a list of specs such as [layernorm, erf, tanh]")
    paper, specs = paper_values(), []
    for item in subset:
        try:
            spec = canonical_norm(str(item))
        except ValueError as err:
            raise ValueError(f"{path}: subset: {err}") from None
        if spec != BASELINE and spec not in paper:
            raise ValueError(f"{path}: subset: {item!r} is in none of Tables 1–6 (and is not {BASELINE})")
        specs.append(spec)
    variants = raw["variants"]
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"{path}: variants {variants!r}: expected a mapping name -> list of key=value overrides")
    for name, overrides in variants.items():
        where = f"{path}: variant {name!r}"
        if not re.fullmatch(r"\w[\w.-]*", str(name)):
            raise ValueError(f"{where}: a name of letters, digits, '_', '.' and '-' (it names a results folder)")
        if not isinstance(overrides, list):
            raise ValueError(f"{where}: {overrides!r}: expected a list of key=value overrides such as [lr=1e-3]")
        try:
            config.load(raw["protocol"], overrides, source=base)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return Calibration(path.stem, path, raw["protocol"], base, seeds, list(dict.fromkeys(specs)),
                       {str(name): list(o) for name, o in variants.items()})


def calibrate(path, results_dir=RESULTS_DIR, *, jobs: int = 1, dry_run: bool = False, report: bool = False,
              progress: bool = True, deadline: float | None = None, mps: bool = False, specs=None, variants=None):
    """Train the subset under every variant in one pool (finished cells are skipped) and write the summary.

    report: train nothing, summarise the records present (e.g. fetched from the GPU machine that ran them).
    deadline: seconds from now within which started cells should finish (see sweep.run_cells).
    mps: the pool's runs share the GPU through NVIDIA MPS (see sweep.run_cells).
    specs, variants: train only these of the file's subset specs and variants (None: all); the summary shows all.
    Returns (summary path, None), or (summary path, sweep.CellErrors) when cells raised instead of producing a record
    (every other cell still ran). A dry run lists the cells that would run and returns (None, None).
    """
    start = time.time()
    sweep.check_jobs(jobs)
    cal = load(path)
    planned = {name: sweep.plan(cal.subset, cal.protocol, Path(results_dir) / name, seeds=cal.seeds,
                                overrides=overrides, source=cal.base) for name, overrides in cal.variants.items()}
    cells = [c for variant in planned.values() for c in variant]
    chosen_specs = _chosen("specs", None if specs is None else [_canonical(s, cal.subset) for s in specs], cal.subset)
    chosen_variants = _chosen("variants", variants, list(cal.variants))
    chosen = [c for name in planned if name in chosen_variants for c in planned[name] if c.spec in chosen_specs]
    missing = [c for c in chosen if results.finished(c.path) is None]
    sweep.say(f"calibrate {cal.name} [{cal.protocol}]: {sweep.count(len(planned), 'variant')} × "
              f"{sweep.count(len(cal.subset), 'spec')} × {sweep.count(len(cal.seeds or [None]), 'seed')} = "
              f"{sweep.count(len(cells), 'cell')}"
              + (f", {len(chosen)} chosen" if len(chosen) < len(cells) else "")
              + (f", {len(missing)} to run (dry run)" if dry_run else
                 f", {len(missing)} without a record (report: trains nothing)" if report else
                 f", {len(missing)} to run"), progress)
    if dry_run:
        for cell in missing:
            sweep.listed(f"  would run {cell.path.parent.name}: {cell.spec} seed={cell.seed} -> {cell.path}", progress)
        return None, None
    errors = None
    try:
        if not report:
            sweep.run_cells(chosen, jobs=jobs, progress=progress, desc=f"calibrate {cal.name}", deadline=deadline,
                            mps=mps)
    except sweep.CellErrors as err:
        errors = err
    text = summary(cal, planned, None if report else time.time() - start, errors)
    return results.write_text_atomic(Path(results_dir) / f"summary-{cal.name}.md", text), errors


def _canonical(spec: str, subset: list[str]) -> str:
    try:
        return canonical_norm(spec)
    except ValueError as err:
        raise ValueError(f"specs: {err}; this calibration file's: {', '.join(subset)}") from None


def _chosen(field: str, asked, choices: list[str]) -> list[str]:
    """`asked` (None: all of `choices`); a name that is not a choice is one error naming the field and the choices."""
    if asked is None:
        return choices
    unknown = [name for name in asked if name not in choices]
    if unknown or not asked:
        raise ValueError(f"{field}: " + (f"{unknown[0]!r} is not in this calibration file" if unknown else
                                         "no name given") + f"; choose from {', '.join(choices)}")
    return list(asked)


def summary(cal: Calibration, planned: dict, wall_s: float | None, errors=None) -> str:
    """Markdown: per variant, each subset spec beside the paper's value, then one line of agreement figures."""
    paper = paper_values()
    records = {c: results.read_record(c.path) for cells in planned.values() for c in cells if c.path.exists()}
    devices = ", ".join(sorted({str(r.get("device")) for r in records.values()})) or "–"
    pools = "".join(f" · {text}" for text in sorted({results.pool_text(r["pool"], r.get("device"))
                                                     for r in records.values() if "pool" in r}))
    multi_seed = bool(cal.seeds and len(cal.seeds) > 1)
    seeds = f" · seeds {', '.join(map(str, cal.seeds))} (means over seeds)" if multi_seed else ""
    days = sorted({r["created"][:10] for r in records.values() if r.get("created")})
    trained = f" · trained {days[0]}{f' to {days[-1]}' if len(days) > 1 else ''}" if days else ""
    lines = [f"# Calibration `{cal.name}` — protocol {cal.protocol}", "",
             f"- `{cal.path}` · device {devices}{pools}{trained}"
             f"{'' if wall_s is None else f' · this call {wall_s:.0f} s'}{seeds}"]
    if errors:
        lines.append(f"- **{sweep.count(len(errors.errors), 'cell')} raised, no record**: "
                     + ", ".join(f"{c.path.parent.name} `{c.spec}` s{c.seed}" for c in errors.errors))
    for name, cells in planned.items():
        lines += ["", f"## {name}: `{' '.join(cal.variants[name]) or '(the protocol as is)'}`", "",
                  "| spec | paper | top-1 (EMA) | agrees | train loss, last epoch "
                  "| α at the end: min–max over layers |",
                  "|---|---:|---:|:---:|---:|:---:|"]
        rows = {}
        for spec in cal.subset:
            cell = ablations.Cell("", "", spec, paper.get(spec), has_paper=spec != BASELINE)
            runs = {c.seed: records[c] for c in cells if c.spec == spec and c in records}
            top1 = rows[spec] = tables.cell_result(cell, runs, "top1")
            agrees = tables.MISSING if top1.agrees is None else "yes" if top1.agrees else "**no**"
            name_md = spec.replace("|", r"\|")   # a bare | would split the markdown cell
            lines.append(f"| `{name_md}` | {top1.paper_text()} | "
                         f"{_measured(top1, tables.cell_result(cell, runs, 'top1_ema'), multi_seed)} | {agrees} | "
                         f"{_final_train_loss(runs.values())} | {_alpha_range(runs.values())} |")
        a = tables.agreement([r for spec, r in rows.items() if spec != BASELINE])
        rho, gap = a["spearman_rho"], tables.gap(rows.get("erf"), rows.get(BASELINE))
        wall = sum(records[c].get("wall_s") or 0 for c in cells if c in records)
        lines += ["", f"train/fail agrees {a['agree']}/{a['run']} · Spearman ρ "
                      f"{'n/a' if rho is None else f'{rho:.2f}'} (n={a['spearman_n']}) · erf − LayerNorm "
                      f"{'n/a' if gap is None else f'{gap:+.1f} pt'} · "
                      f"{wall:.0f} s of training · config {config.config_hash(cells[0].cfg)}"]
    return "\n".join(lines) + "\n"


def input_scales(protocol: str, overrides=None, images: int = 16) -> list[float]:
    """The standard deviation of every point-wise layer's input x (before α: what α0 scales) in the protocol's model
    at initialisation, over `images` embedded images at the protocol's resolution (normalised per channel; they stand
    in for ImageNet in the paper protocol). Compares the scale erf sees in the proxy with the paper's ViT-B/16."""
    cfg = config.load(protocol, overrides)
    d = cfg["data"]
    torch.manual_seed(cfg["seed"])
    model = from_config(cfg, "erf", int(d["num_classes"])).eval()
    pixels = data.generate(d["num_classes"], images, 1, d["img_size"], seed=d.get("seed", 0),
                           **{k: d[k] for k in ("clutter", "noise") if k in d})[0].float().div_(255)
    x = (pixels - pixels.mean((0, 2, 3), keepdim=True)) / pixels.std((0, 2, 3), keepdim=True)
    stds = []
    for layer in (m for m in model.modules() if isinstance(m, PointwiseNorm)):
        layer.register_forward_hook(lambda mod, args, out: stds.append(args[0].float().std().item()))
    with torch.no_grad():
        model(x)
    return stds


def _final_train_loss(runs) -> str:
    """The training loss of each run's last epoch, averaged over seeds: beside top-1 it tells a norm that learns
    slower (its loss is higher too) from one that overfits (its loss is as low, its top-1 lower)."""
    losses = [r["history"][-1].get("train_loss") for r in runs if r.get("history")]
    losses = [loss for loss in losses if loss is not None and math.isfinite(loss)]
    return f"{sum(losses) / len(losses):.2f}" if losses else tables.MISSING


def _alpha_range(runs) -> str:
    """The learned α of every point-wise layer at each run's last evaluation (all seeds): did the input scale adapt,
    and how far from alpha0? "–" for LayerNorm, and for records written before α was recorded."""
    alphas = [a for r in runs for a in next((e["alpha"] for e in reversed(r.get("history", [])) if "alpha" in e), [])]
    return f"{min(alphas):.2f}–{max(alphas):.2f}" if alphas else tables.MISSING


def _measured(top1: tables.CellResult, ema: tables.CellResult, multi_seed: bool = False) -> str:
    """"41.2 (43.0)" (EMA in brackets), "41.2 ± 0.35, 2 seeds (43.0)" (mean ± std over seeds; with `multi_seed`, a
    round of several seeds, the count also where one seed has a record), the failure kind ("× diverged", "× diverged
    (1/3 seeds; trained: 41.2 ± 0.35)"), or "–" for a cell with no record."""
    n, failed = len(top1.values), len(top1.failures)
    mean = f"{top1.mean:.1f}" + (f" ± {top1.std:.2f}" if top1.std is not None else "") if n else ""
    if failed:
        seeds = f" ({failed}/{failed + n} seeds" + (f"; trained: {mean})" if n else ")") if failed + n > 1 else ""
        return "× " + "/".join(dict.fromkeys(k or "?" for k in top1.failures)) + seeds
    if not n:
        return tables.MISSING
    return (mean + (f", {sweep.count(n, 'seed')}" if multi_seed else "")
            + (f" ({ema.mean:.1f})" if ema.mean is not None else ""))
