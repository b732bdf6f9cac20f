"""The paper's Figures 2–4, drawn from the lab's own point-wise specs, and figures of recorded results.

All figures share one seaborn style (`_style`): curves that satisfy a property are blue, curves that violate it red.
A figure that redraws one of the paper's says which in its title ("Figure 3: …"; training curves "cf. Figure 6").
Figures are built with matplotlib's object API (no pyplot state, Agg canvas) and saved as PNG and PDF.
"""
import math
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from . import ablations, tables
from .functions import BASES
from .perturb import TRANSFORMS, format_number, parse, pointwise
from .principles import sign_changes
from .results import as_records

BLUE, RED = sns.color_palette("deep")[0], sns.color_palette("deep")[3]
BLUES = sns.blend_palette(["#1d3461", BLUE, "#8db0dc"], 3)       # several curves that satisfy a property
REDS = sns.blend_palette(["#7a1020", RED, "#f08a4b"], 3)         # several curves that violate it
DASHES = ("-", "--", "-.", ":")

FIGURE2 = {
    # property: (panel title, label of the curves that satisfy it, of those that violate it, specs, specs, x range)
    "zero_centered": ("Zero-centered", "Centered", "Not centered", ("erf",), ("erf|hshift=1", "erf|vshift=0.5"), 4),
    "bounded": ("Bounded", "Bounded", "Not bounded", ("erf", "arcsinh|clip=2"), ("arcsinh", "erf|blend=0.5"), 6),
    "center_sensitive": ("Center Sensitive", "Sensitive", "Not sensitive", ("erf",), ("erf|flat=1",), 4),
    "monotonic": ("Monotonic", "Monotonic", "Not monotonic", ("erf", "erf|neg"), ("dampx",), 6),
}
"""Figure 2: each panel's specs; tests check them against lab.audit."""
FAILED_STRIP = 11
"""Points below the axes at which accuracy_vs_lambda draws failures (×), clear of every value; tick labels go below."""
SMOOTHING = 5
"""Logged points in the running mean of each training curve (raw per-step losses overlap too much to be read)."""
FIGURE3 = ("logsign", "arcsinh", "logquad", "power23", "linear")
"""Figure 3's functions, slowest to fastest growth as x → ∞ (Table 4's order; on [0, 18] some curves cross)."""
FIGURE4 = ("erf", "erf|neg", "sin", "dampx", "dampexp")
APPENDIX_FIGURES = {"table1": 6, "table5": 7, "table6": 8}
"""The paper's appendix figure of training losses for a table (a subset of its cells), named by training_curves."""


_CALL_OF_F = re.compile(r"(?<![a-z])f\(((?:[^()]|\([^()]*\))*)\)")    # f(arg), arg with one level of parentheses
_VARIABLE = re.compile(r"(?<![a-z])x(?![a-z])")


def math_label(spec: str) -> str:
    """The function a spec names, written as math for legends: "erf|hshift=1" is "erf(x + 1)", "erf|neg" "−erf(x)".

    Built from the formulas of lab.functions and lab.perturb: each transform's f(…) is replaced by the expression
    so far, its λ by the number. A bare base whose formula does not say its name keeps the name the tables use
    ("dampx = 2x/(1+x²)").
    """
    base, transforms = parse(spec)
    expr = BASES[base].formula
    for name, lam in transforms:
        formula = TRANSFORMS[name].formula
        if lam is not None:
            formula = formula.replace("λ", format_number(lam).replace("-", "−"))
        inner = expr if _is_atom(expr) else f"({expr})"
        factor = f"({expr})" if expr.startswith("−") else inner      # "·(−erf(x))", not "·−erf(x)"
        expr = _CALL_OF_F.sub(lambda call: _at(factor if formula[:call.start()].endswith("·") else inner, call[1]),
                              formula)
    expr = expr.replace("+ −", "− ").replace("− −", "+ ").replace("−−", "")
    return expr if transforms or expr.startswith(base) else f"{base} = {expr}"


def legend_label(spec: str) -> str:
    """The math of a spec, and below it the spec, the name to train it by: "erf(x + 1)" over "[erf|hshift=1]". A bare
    base's math already starts with its name ("erf(x)", "dampx = 2x/(1+x²)")."""
    label = math_label(spec)
    return label if label.startswith(spec) else f"{label}\n[{spec}]"


def _is_atom(expr: str) -> bool:
    """Whether `expr` has no operator outside parentheses (the formulas write binary + and − with spaces)."""
    depth = 0
    for char in expr:
        depth += (char == "(") - (char == ")")
        if char == " " and depth == 0:
            return False
    return True


def _at(expr: str, arg: str) -> str:
    """`expr` with its variable x replaced by `arg`, in parentheses unless the x is already delimited."""
    def replace(x):
        delimited = expr[x.start() - 1:x.start()] in ("(", "|") and expr[x.end():x.end() + 1] in (")", "|", ",")
        return arg if arg == "x" or delimited else f"({arg})"
    return _VARIABLE.sub(replace, expr)


@contextmanager
def _style():
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.2),
          "savefig.dpi": 150, "savefig.bbox": "tight", "legend.frameon": False, "pdf.fonttype": 42}
    with rc_context(rc):
        yield


def _save(fig: Figure, out_dir, stem: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:      # a PDF without its creation date: the same figure, the same bytes (figures/ is committed)
        fig.savefig(path, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    return paths


def figure2(out_dir="figures") -> list[Path]:
    """Four panels, one per design principle: specs that satisfy it (blue) against specs that violate it (red)."""
    with _style():
        return _save(_figure2(), out_dir, "figure2")


def _figure2() -> Figure:
    with _style():
        fig = Figure(figsize=(13, 4.2), layout="constrained")
        for ax, (title, good, bad, good_specs, bad_specs, half) in zip(fig.subplots(1, 4), FIGURE2.values()):
            x = np.linspace(-half, half, 2001)
            for color, label, specs in ((BLUE, good, good_specs), (RED, bad, bad_specs)):
                for dash, spec in zip(DASHES, specs):
                    ax.plot(x, pointwise(spec).at(x), color=color, ls=dash, lw=2,
                            label=f"{label}: {legend_label(spec)}")
            ax.axhline(0, color="0.4", lw=0.6)
            ax.axvline(0, color="0.4", lw=0.6)
            ax.set(title=title, xlabel="x", xlim=(-half, half))
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small")
        fig.axes[0].set_ylabel("f(x)")
        fig.suptitle("Figure 2: the four principles, each satisfied (blue) and violated (red)")
        return fig


def figure3(out_dir="figures") -> list[Path]:
    """The unbounded functions of Table 4 on [0, 18]: blue ones train in the paper, red ones fail there (×).

    The legend lists them slowest to fastest as x → ∞; on the plotted range the slowest that fails in the paper
    (power23) lies below the fastest that trains (logquad) over an interval, so the order is not yet the asymptotic
    one: the last crossover, after which it stays above, is marked."""
    paper = {c.spec: c.paper for c in ablations.load("table4").cells}
    x = np.linspace(0, 18, 18001)
    with _style():
        fig = Figure(figsize=(5, 4.2), layout="constrained")
        ax = fig.subplots()
        good, bad = iter(BLUES), iter(REDS[1:])
        for spec in FIGURE3:
            trains = paper.get(spec) is not None
            ax.plot(x, pointwise(spec).at(x), lw=2, color=next(good if trains else bad), ls="-" if trains else "--",
                    label=legend_label(spec) if trains else f"{legend_label(spec)} (× in paper)")
        fastest_ok = [s for s in FIGURE3 if paper.get(s) is not None][-1]
        slowest_bad = next(s for s in FIGURE3 if paper.get(s) is None)
        at = _last_crossing(x, pointwise(fastest_ok).at(x), pointwise(slowest_bad).at(x))
        if at is not None:
            y = pointwise(fastest_ok).at(np.array([at]))[0]
            ax.plot(at, y, "o", ms=8, mfc="none", mec="0.15", mew=1.5)
            ax.annotate(f"{slowest_bad} passes {fastest_ok}\nfor good at x ≈ {at:.1f}", (at, y), (at + 0.6, 0.6),
                        fontsize="small", color="0.15", arrowprops={"arrowstyle": "->", "color": "0.15"})
        ax.set(xlim=(0, 18), ylim=(0, 18), xlabel="x", ylabel="f(x)",
               title="Figure 3: growth of unbounded functions")
        ax.legend(loc="upper left", title="slowest to fastest as x → ∞", title_fontsize="small")
        return _save(fig, out_dir, "figure3")


def _last_crossing(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """The largest x at which a − b changes sign (linear interpolation on the grid), or None if it never does."""
    crossings = sign_changes(x, a - b)
    return float(crossings[-1]) if len(crossings) else None


def figure4(out_dir="figures") -> list[Path]:
    """Monotonic erf and −erf (blue) against the non-monotonic sin, dampx, dampexp (red) on [−8, 8]."""
    x = np.linspace(-8, 8, 3201)
    with _style():
        fig = Figure(figsize=(7, 4), layout="constrained")
        ax = fig.subplots()
        styles = {"erf": (BLUE, "-"), "erf|neg": (BLUE, "--"), "sin": (REDS[0], "-"), "dampx": (REDS[1], "--"),
                  "dampexp": (REDS[2], "-.")}
        for spec in FIGURE4:
            color, dash = styles[spec]
            ax.plot(x, pointwise(spec).at(x), color=color, ls=dash, lw=2, label=legend_label(spec))
        ax.set(xlim=(-8, 8), ylim=(-1.05, 1.05), xlabel="x", ylabel="f(x)",
               title="Figure 4: monotonic (blue) and non-monotonic (red) functions")
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        return _save(fig, out_dir, "figure4")


TRANSFORM_GALLERY = (("hshift", "erf", "table1"), ("vshift", "erf", "table1"), ("clip", "arcsinh", "table2"),
                     ("blend", "erf", "table3"), ("flat", "erf", "table5"), ("neg", "erf", "table6"))
"""The Section-3 perturbations, one panel each: (transform, base, the table whose λ values it draws)."""


def _gallery_curves(name: str, base: str, table: str) -> list[tuple[str, str]]:
    """(λ as the legend shows it, spec) of `base` under transform `name` at each λ of `table`, in order, the plain
    base included as its table names it: λ = 0, "none" for the clip (last) and the blend, "f" before "−f" for the
    negation."""
    lams = {ts[0][1] for b, ts in map(parse, (c.spec for c in ablations.load(table).cells))
            if b == base and len(ts) == 1 and ts[0][0] == name}
    identity = TRANSFORMS[name].identity
    plain = {"clip": "none", "blend": "none", "neg": "f"}.get(
        name, "none" if identity is None else format_number(identity))
    curves = [(math.inf if name == "clip" else identity or 0, plain, base)]
    curves += [(1, "−f", f"{base}|neg") if lam is None else
               (lam, format_number(lam).replace("-", "−"), f"{base}|{name}={format_number(lam)}") for lam in lams]
    return [(label, spec) for _, label, spec in sorted(curves)]


def transforms(out_dir="figures") -> list[Path]:
    """Teaching figure: each Section-3 transform applied to its table's base for that table's λ values. A clip level
    that f does not reach on the plotted range says in the legend where it starts to bind."""
    half = 5
    x = np.linspace(-half, half, 2001)
    with _style():
        fig = Figure(figsize=(13, 7), layout="constrained")
        for ax, (name, base, table) in zip(_grid(fig, len(TRANSFORM_GALLERY)), TRANSFORM_GALLERY):
            curves = _gallery_curves(name, base, table)
            header = "f" if name == "neg" else "λ"
            for color, (label, spec) in zip(_curve_colors([lam for lam, _ in curves], header), curves):
                if name == "clip" and label != "none":
                    binds = _reaches(base, float(label))
                    label += f" (binds at |x| ≈ {binds:.2g})" if binds > half else ""
                ax.plot(x, pointwise(spec).at(x), color=color, lw=1.8, label=label)
            ax.axhline(0, color="0.4", lw=0.6)
            ax.axvline(0, color="0.4", lw=0.6)
            ax.set(title=f"{name} (Table {table.removeprefix('table')}): {TRANSFORMS[name].formula}, f = {base}",
                   xlabel="x", xlim=(-half, half))
            ax.legend(title=None if name == "neg" else "λ", fontsize="x-small", loc="upper left")
        fig.suptitle("The Section-3 perturbations of a spec, each at the λ values of its table")
        return _save(fig, out_dir, "transforms")


def _reaches(spec: str, level: float) -> float:
    """The smallest |x| (on a geometric grid up to 1e6) at which |f(x)| reaches `level`; inf if it never does."""
    d = np.geomspace(1e-3, 1e6, 20001)
    hit = np.maximum(np.abs(pointwise(spec).at(d)), np.abs(pointwise(spec).at(-d))) >= level
    return float(d[np.argmax(hit)]) if hit.any() else math.inf


def write_figures(out_dir="figures") -> list[Path]:
    """Figures 2–4 as PNG and PDF in `out_dir`; returns the paths written."""
    return figure2(out_dir) + figure3(out_dir) + figure4(out_dir)


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, columns) for n panels, as few rows as `max_cols` allow and as few columns as fill them: 4 panels are
    2 × 2, not 3 + 1 with two blank slots."""
    rows = math.ceil(n / max_cols)
    return rows, math.ceil(n / rows)


def _grid(fig: Figure, n: int):
    """n axes in a `_grid_shape` grid; a slot left over (5 panels in 2 × 3) is removed, not left as a blank frame."""
    axes = fig.subplots(*_grid_shape(n), squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n]


def _loss_points(record: dict) -> list[tuple[float, float]]:
    """(step, train loss) of a record: its fine loss curve if it has one, else the per-epoch history; finite only."""
    points = record.get("loss_curve") or [(h["step"], h.get("train_loss")) for h in record.get("history") or []]
    return [(float(s), float(v)) for s, v in points if v is not None and math.isfinite(v)]


def _swept(panel: ablations.Panel) -> str:
    """The header of a panel's swept axis: "λ", "λu", ... for a swept value, "f" or "" for a choice of function."""
    return panel.col_header if panel.x_axis == "columns" else panel.row_header[0]


def _along_lambda(panel: ablations.Panel) -> bool:
    """Swept along a λ (a trend, joined by lines) rather than across functions (categories)."""
    return _swept(panel).startswith("λ")


UNPERTURBED = ("0", "none")
"""The labels a table gives its plain f on a λ axis; its curve is black in every figure."""


def _curve_colors(xs: list[str], header: str) -> list:
    """Colours that tell neighbouring curves apart: the unperturbed f (λ = 0 or "none") is black, signed λ diverge
    from it (coolwarm), other λ run along viridis (its dark end, too close to black, left out), functions get
    qualitative colours."""
    if not header.startswith("λ"):
        return sns.color_palette("tab10", len(xs))
    plain = [x in UNPERTURBED for x in xs]
    if any(x.startswith(("−", "-")) for x in xs):
        colors = sns.color_palette("coolwarm", len(xs))             # λ = 0 in the middle, λ < 0 blue, λ > 0 red
    else:
        ramp = iter(sns.color_palette("viridis", as_cmap=True)(np.linspace(0.3, 0.88, len(xs) - sum(plain))))
        colors = [None if p else tuple(next(ramp)[:3]) for p in plain]
    return ["0.1" if p else color for p, color in zip(plain, colors)]


def training_curves(name: str, records, out_dir="figures", protocol: str | None = None) -> list[Path]:
    """Training loss against epoch for every cell of a table (cf. the paper's Appendix Figures 6–8); `name` as in
    ablations.load, the paper's or the path of your own, the files named by the table's name.

    One subplot per series (e.g. "erf, horizontal"), one curve per swept value (λ), mean ± sd over seeds, each run
    smoothed by a running mean of SMOOTHING logged points (said in the title) so that close curves can be told apart;
    a failed run's curve ends in an × (clipped to the top of the axis, which fits the runs that trained).
    Returns [] when no record of the table has a loss history.
    """
    table = tables.collect(name, records, protocol)
    data, curves, swept, steps_per_epoch = _loss_frame(table)
    if data.empty:
        return []
    keys = [k for k in curves if (data["key"] == k).any()]
    trained = data[~data["failed"]]
    top = trained["loss"].max() * 1.05 if len(trained) else None
    legends = {(swept[k], tuple(h for h in curves[k] if (data["hue"][data["key"] == k] == h).any())) for k in keys}
    shared = len(keys) > 1 and len(legends) == 1      # every subplot has the same curves: one legend, beside them
    with _style():
        rows, cols = _grid_shape(len(keys))
        fig = Figure(figsize=(5.4 * cols, 3.3 * rows), layout="constrained")
        for ax, key in zip(_grid(fig, len(keys)), keys):
            _draw_losses(ax, data[data["key"] == key], curves[key], swept[key], top)
            ax.set(title=", ".join(t for t in key if t), xlabel="epoch" if steps_per_epoch else "step",
                   ylabel="train loss")
            if top:
                ax.set_ylim(top=top)
            if shared:
                ax.get_legend().remove()
            else:
                ax.legend(title=swept[key] or None, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
        if shared:
            fig.legend(*ax.get_legend_handles_labels(), title=swept[key] or None, fontsize="small",
                       loc="outside right center")
        table_name = table.ablation.name
        figure = APPENDIX_FIGURES.get(table_name)
        paper_figure = f"; cf. the paper's Figure {figure}" if figure else ""
        fig.suptitle(f"{table.ablation.title}: training loss ({table.protocol}; running mean of {SMOOTHING} points"
                     f"{paper_figure})")
        return _save(fig, out_dir, f"{table_name}_training_curves")


def _loss_frame(table: tables.TableResult):
    """A table's train losses, one row per logged point (key: the subplot, hue: the curve, failed, epoch, loss
    smoothed along its run, seed), with each subplot's curves in the table's order ({key: {hue: swept value}}), the
    header of its swept axis, and the steps an epoch has (None: x stays in steps)."""
    import pandas as pd
    matched = [rec for r in table.results for rec in r.records]
    steps_per_epoch = next((h["step"] / h["epoch"] for rec in matched for h in rec.get("history") or []
                            if h.get("epoch")), None)
    rows, curves, swept = [], {}, {}
    for panel, results in zip(table.ablation.panels, table.panels):
        single = len(panel.rows if panel.x_axis == "columns" else panel.columns) == 1
        for r in results:
            x, series = panel.x_and_series(r.cell)
            key = (panel.title, "" if single else series)
            swept[key] = _swept(panel)
            hue = f"{x} {'/'.join(dict.fromkeys(tables.failure_mark(k) for k in r.failures))}".strip()
            curves.setdefault(key, {})[hue] = x
            rows += [{"key": key, "hue": hue, "failed": record["status"] == "failed",
                      "epoch": step / steps_per_epoch if steps_per_epoch else step, "loss": loss,
                      "seed": record.get("seed")}
                     for record in r.records for step, loss in _loss_points(record)]
    data = pd.DataFrame(rows)
    if rows:
        runs = data.groupby(["key", "hue", "seed"], dropna=False, sort=False)["loss"]
        data["loss"] = runs.transform(lambda loss: loss.rolling(SMOOTHING, center=True, min_periods=1).mean())
    return data, curves, swept, steps_per_epoch


def _draw_losses(ax, part, curves: dict, swept: str, top: float | None):
    """One subplot's curves, mean ± sd over seeds, in `_curve_colors`; a failed run ends in an × (no higher than
    `top`, the top of the axis)."""
    order = [h for h in curves if (part["hue"] == h).any()]
    palette = dict(zip(order, _curve_colors([curves[h] for h in order], swept)))
    sns.lineplot(data=part, x="epoch", y="loss", hue="hue", hue_order=order, palette=palette, errorbar="sd", ax=ax,
                 lw=1.5)
    for (hue, _), run in part[part["failed"]].groupby(["hue", "seed"], dropna=False):
        last = run.sort_values("epoch").iloc[-1]
        ax.plot(last["epoch"], min(last["loss"], top or last["loss"]), "X", color=palette[hue], ms=9, clip_on=False)


REFERENCE = "erf"
"""The paper's plain function: a panel of other functions (Table 4, Table 6(b)) draws its top-1 as a dotted line."""


def _reference(table: tables.TableResult, records) -> tables.CellResult:
    """REFERENCE with the paper's value from the tables and its records of `table`'s protocol and config (none when
    the table has no records, whose protocol is then unknown)."""
    _, _, by_spec, _ = tables.select([REFERENCE], records if table.protocol else [], table.protocol,
                                     table.config_hash)
    return tables.cell_result(ablations.cells_by_spec()[REFERENCE], by_spec.get(REFERENCE, {}), table.metric)


def _x_labels(panel: ablations.Panel) -> list[str]:
    """The swept axis's labels in the table's order, but a clip's "none" (no clip: λu = ∞) last, after the loosest
    clip as in the transforms gallery: first, joined to the tightest clip, it read as the end of the tight side."""
    labels = list(panel.columns if panel.x_axis == "columns" else [", ".join(r) for r in panel.rows])
    clipped = any("|clip=" in cell.spec for cell in panel.cells)
    return sorted(labels, key=lambda label: clipped and label == "none")


def _top1(result: tables.CellResult, measured: bool) -> float | None:
    """The measured mean (None unless every seed trained: a failure is drawn as ×) or the paper's value (None: ×)."""
    return (result.mean if result.trained else None) if measured else result.cell.paper


def accuracy_vs_lambda(name: str, records, out_dir="figures", protocol: str | None = None, *,
                       reference_records=()) -> list[Path]:
    """Top-1 against the swept value (λ, or the function for Tables 4 and 6), measured beside the paper's.

    Per panel: measured (mean ± std over seeds) on the left, the paper's on the right (none where a table of your own
    gives none). Failures are × in a strip below the axes, where no value can be. Points are joined only along λ:
    functions are categories, not a trend. Series are dodged sideways a little so that equal values stay visible. A
    panel of functions without REFERENCE among them draws REFERENCE's top-1 as a labelled dotted line, so that they can
    be read against it (on the paper's side, for the paper's tables only), from `records` and `reference_records`
    (more of its records, which only this line reads). `name` and the files as in training_curves.
    """
    records = as_records(records)       # a results folder, records or their paths
    table = tables.collect(name, records, protocol)
    reference = _reference(table, [*records, *as_records(reference_records)])
    with _style():
        panels = table.ablation.panels
        fig = Figure(figsize=(13, 3.8 * len(panels)), layout="constrained")
        axes = fig.subplots(len(panels), 2, squeeze=False)
        below_axes = ScaledTranslation(0, -FAILED_STRIP / 72, fig.dpi_scale_trans)
        for (ax_measured, ax_paper), panel, results in zip(axes, panels, table.panels):
            for ax, measured in ((ax_measured, True), (ax_paper, False)):
                _draw_side(ax, table, panel, results, reference, measured, below_axes)
            if len(_series(panel, results)) > 1:
                ax_paper.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(table.ablation.title)
        return _save(fig, out_dir, f"{table.ablation.name}_accuracy_vs_lambda")


def _draw_side(ax, table: tables.TableResult, panel: ablations.Panel, results: list, reference: tables.CellResult,
               measured: bool, below_axes):
    """One plot of a panel's row, the measured top-1 or the paper's: its points, REFERENCE's line where the panel is
    one of other functions (and has a value of it to show), its axes and title."""
    _draw_points(ax, panel, results, measured, below_axes)
    shown = any(r.ran for r in results) if measured else table.ablation.of_paper  # the paper's erf is not your table's
    reference_value = _top1(reference, measured) if shown else None
    of_functions = not _along_lambda(panel) and all(r.cell.spec != REFERENCE for r in results)
    if of_functions and reference_value is not None:
        _draw_reference(ax, reference_value)
    _label_side(ax, table, panel, results, measured)


def _series(panel: ablations.Panel, results: list) -> list[str]:
    """A panel's series (e.g. "erf", "tanh"), in the table's order."""
    return list(dict.fromkeys(panel.x_and_series(r.cell)[1] for r in results))


def _draw_points(ax, panel: ablations.Panel, results: list, measured: bool, below_axes):
    """Each series' top-1 at the swept values, joined only along λ (functions are categories, not a trend) and
    dodged sideways a little so that equal values stay visible; failures are × in the strip `below_axes`."""
    labels = _x_labels(panel)
    along_lambda = _along_lambda(panel)
    series = _series(panel, results)
    failed_strip = blended_transform_factory(ax.transData, ax.transAxes) + below_axes
    any_failed = False
    for k, (s, color) in enumerate(zip(series, sns.color_palette("deep", len(series)))):
        y, err, failed = _series_points(panel, results, s, labels, measured)
        dodge = (k - (len(series) - 1) / 2) * min(0.08, 0.6 / len(series))
        ax.errorbar(np.arange(len(labels)) + dodge, y, yerr=err if measured else None, color=color, marker="o", ms=5,
                    lw=1.5, ls=("-" if measured else "--") if along_lambda else "none", capsize=3,
                    mfc=color if measured else "white", label=s)
        if failed:        # (an empty unclipped line would still claim a marker's box at the origin)
            ax.plot(np.add(failed, dodge), np.zeros(len(failed)), "X", color=color, ms=8, transform=failed_strip,
                    clip_on=False)
            any_failed = True
    if any_failed:
        ax.text(-0.01, 0, "failed", transform=ax.transAxes + below_axes, ha="right", va="center", fontsize="small",
                color="0.3")


def _series_points(panel: ablations.Panel, results: list, series: str, labels: list[str], measured: bool):
    """(top-1, error bar, indices of failures) of `series` at each of `labels`: NaN where there is no value to
    draw, no error bar on the paper's side or for a cell that did not train."""
    by_x = {panel.x_and_series(r.cell)[0]: r for r in results if panel.x_and_series(r.cell)[1] == series}
    cells = [by_x[label] for label in labels]
    y = [np.nan if (value := _top1(r, measured)) is None else value for r in cells]
    err = [(r.std or 0.0) if measured and r.trained else 0.0 for r in cells]
    failed = [i for i, r in enumerate(cells) if ((r.trained is False) if measured else r.cell.paper_failed)]
    return y, err, failed


def _draw_reference(ax, value: float):
    """REFERENCE's top-1 as a dotted line across the plot, labelled at its right end."""
    ax.axhline(value, color="0.35", ls=":", lw=1.5, zorder=1)
    ax.text(0.99, value, f"{REFERENCE}: {value:.1f}", ha="right", va="bottom",
            transform=blended_transform_factory(ax.transAxes, ax.transData), fontsize="small", color="0.25")
    ax.margins(y=0.12)          # room for the label above the line where erf is the highest value


def _label_side(ax, table: tables.TableResult, panel: ablations.Panel, results: list, measured: bool):
    """Ticks at the table's values, axis labels, the title saying which side this is, and why it is empty if so."""
    labels = _x_labels(panel)
    swept = _swept(panel)
    ax.set_xticks(range(len(labels)), labels)
    # both plots of a row keep their tick labels level: below the strip if either has a failure to show
    if any(r.trained is False or r.cell.paper_failed for r in results):
        ax.tick_params(axis="x", pad=2 * FAILED_STRIP)     # the tick labels go below the strip
    ax.set(xlabel=f"{swept} (the table's values, evenly spaced)" if _along_lambda(panel) else swept,
           ylabel="top-1 (%)", xlim=(-0.5, len(labels) - 0.5))
    where = (f"measured ({table.protocol or 'no results'})" if measured else
             "paper (ViT-B, ImageNet-1K)" if table.ablation.of_paper else "paper (as the table gives it)")
    ax.set_title(f"{panel.title} — {where}" if panel.title else where)
    if empty := _empty_reason(results, measured):      # no point to draw: say why instead of an empty scale
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="0.5",
                bbox={"facecolor": "white", "edgecolor": "none"})    # over the reference line, if one is drawn
        ax.set_yticks([])


def _empty_reason(results: list, measured: bool) -> str | None:
    """Why one side of a panel has no point to draw, or None when it has one."""
    if not measured:
        return None if any(r.cell.has_paper for r in results) else "no paper values"
    if not any(r.ran for r in results):
        return "no results"
    return None if any(r.trained for r in results) else "no cell trained"
