"""`lab reproduce`: every notebook through papermill into one folder, with a shared results dir, and a REPORT.md.

The cells of the chosen notebooks' tables are trained first in one process pool (identical canonical specs are one
run, shared by the tables that contain them; a terminal progress bar over all of them), then each notebook runs with
those records already present, so it only renders. The `*_report` functions are what the notebooks call:
parameters → one call → a `Report` that displays itself (markdown + figures).
"""
import multiprocessing
import shlex
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from . import sweep as _sweep

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ("00_four_principles", "01_table1", "02_table2", "03_table3", "04_table4", "05_table5", "06_table6",
             "07_figures")
FIGURES = ("figure2", "figure3", "figure4", "transforms")


@dataclass
class Report:
    """What a notebook shows: a markdown block and figures (PNG paths); Jupyter displays it."""
    title: str
    markdown: str
    figures: list = field(default_factory=list)
    files: list = field(default_factory=list)

    def _ipython_display_(self):
        from IPython.display import Image, Markdown, display
        display(Markdown(f"## {self.title}\n\n{self.markdown}"))
        for path in self.figures:
            display(Image(filename=str(path)))

    def __str__(self):
        return f"{self.title}\n\n{self.markdown}\n" + "".join(f"\n{p}" for p in [*self.figures, *self.files])


def table_report(table: str, protocol: str = "smoke", results_dir="results", out_dir="reproduction", *,
                 jobs: int = 1, device: str | None = None, data_path: str | None = None, seeds=None, overrides=None,
                 limit: int | None = None, progress: bool = True, train: bool = True) -> Report:
    """Sweep `table` (finished cells are skipped), render it (md, tex, csv) beside the paper and draw its figures.
    train=False: render the records present (e.g. a grid fetched from a GPU) and train nothing."""
    from . import ablations, figures, results, tables
    results_dir, out_dir = project_path(results_dir), project_path(out_dir)
    records = _sweep.sweep(table, protocol, results_dir, jobs=jobs, seeds=seeds, device=device, limit=limit,
                           overrides=_with_data_path(overrides, data_path), progress=progress and train,
                           dry_run=not train)     # not training: the table's – marks what is missing
    ablation = ablations.load(table)
    # a table without erf as a cell (Table 4) is drawn against the erf another table's sweep trained in the folder
    reference = [] if figures.REFERENCE in ablation.specs() else [
        r for r in results.load_records(results_dir) if r["spec"] == figures.REFERENCE]
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in ("md", "tex", "csv"):
        files.append(out / "tables" / f"{ablation.name}.{fmt}")
        files[-1].write_text(tables.render(table, records, fmt))
    drawn = [*figures.training_curves(table, records, out / "figures"),
             *figures.accuracy_vs_lambda(table, records, out / "figures", reference_records=reference)]
    summary = f"{_sweep.count(len(records), 'record')} ({protocol}) in `{results_dir}`; {_failures(records)}"
    summary += _principle_text(ablation)
    return Report(f"{ablation.name} — {protocol}", files[0].read_text() + "\n\n" + summary,
                  [p for p in drawn if p.suffix == ".png"], files + [p for p in drawn if p.suffix != ".png"])


def demo_report(specs=("erf", "linear"), protocol: str = "smoke", results_dir="results", *,
                device: str | None = None, overrides=None, data_path: str | None = None, progress: bool = True,
                train: bool = True) -> Report:
    """Train a few specs side by side (e.g. one that trains, one that fails): verdicts beside the paper's, and train
    loss per epoch. train=False: only the specs whose records are present."""
    from . import ablations, results, tables
    cells = _sweep.plan(specs, protocol, project_path(results_dir), overrides=_with_data_path(overrides, data_path),
                        device=device)
    if train:
        _sweep.run_cells(cells, progress=progress, desc="demo")
    records = [results.read_record(c.path) for c in cells if c.path.exists()]
    paper = ablations.cells_by_spec()
    lines = ["| spec | status | top-1 (%) | paper (%) | chance (%) | failure |", "|---|---|---|---|---|---|"]
    for r in records:
        failure = r.get("failure") or {}
        top1 = "–" if r.get("top1") is None else f"{r['top1']:.1f}"
        cell = paper.get(r["spec"])
        lines.append(f"| `{r['spec']}` | {r['status']} | {top1} | {'–' if cell is None else cell.paper_text()} | "
                     f"{r.get('chance_top1') or 0:.1f} | {failure.get('kind', '')} {failure.get('reason', '')} |")
    losses = [{h["epoch"]: h.get("train_loss") for h in r.get("history") or []} for r in records]
    epochs = sorted({e for per in losses for e in per})
    lines += ["", "Train loss by epoch:", "", "| epoch | " + " | ".join(f"`{r['spec']}`" for r in records) + " |",
              "|---" * (len(records) + 1) + "|"]
    lines += [f"| {e} | " + " | ".join(_num(per.get(e)) for per in losses) + " |" for e in epochs]
    banner = f"> **{note}**\n\n" if (note := tables.protocol_caveat(protocol)) else ""
    return Report(f"Training demo — {protocol}", banner + "\n".join(lines))


def figures_report(out_dir="reproduction", which=("figure2", "figure3", "figure4")) -> Report:
    """`which` of FIGURES (the paper's Figures 2–4 by default, or the transforms gallery): PNG shown, PDF written
    beside it in OUT/figures/."""
    from . import figures
    unknown = [w for w in which if w not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    folder = project_path(out_dir) / "figures"
    drawn = [p for w in which for p in getattr(figures, w)(folder)]
    return Report("Figures: " + ", ".join(which), f"Written in `{folder}`: {', '.join(p.name for p in drawn)}",
                  [p for p in drawn if p.suffix == ".png"])


def project_path(path) -> Path:
    """A notebook's relative path against the project root when the kernel runs in notebooks/, where JupyterLab
    starts it: a notebook opened there shares the root's results/ and reproduction/ with `lab` and papermill (which
    run from the root) instead of training the grid again into notebooks/results/."""
    path = Path(path)
    if not path.is_absolute() and Path.cwd().resolve() == NOTEBOOK_DIR.resolve():
        return NOTEBOOK_DIR.parent / path
    return path


def reproduce(protocol: str, out_dir="reproduction", *, jobs: int = 2, overrides=None, device: str | None = None,
              data_path: str | None = None, seeds=None, results_dir=None, notebooks=NOTEBOOKS,
              limit: int | None = None, progress: bool = True, train: bool = True) -> Path:
    """Train the cells of the tables of `notebooks` once, execute them into OUT/, write OUT/REPORT.md; return its path.

    results_dir: where the records are (default OUT/results). train=False: train nothing, render the records present
    (a grid trained elsewhere; its missing cells show as not run). A failing notebook is recorded in the report and
    the others still run; then RuntimeError names the failures.
    """
    from . import ablations, config, results
    # bad input fails here; the notebooks run in OUT/, so they get the image folder as the config's absolute path
    # (passed after the overrides, it wins over a relative one among them)
    cfg = config.load(protocol, _sweep.override_items(_with_data_path(overrides, data_path), device))
    given_data_path, data_path = data_path, cfg["data"]["path"]
    unknown = [n for n in notebooks if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}: choose from {', '.join(NOTEBOOKS)}")
    _sweep.check_jobs(jobs)
    out = Path(out_dir).resolve()
    if out == NOTEBOOK_DIR.resolve():
        raise ValueError(f"out {out_dir}: the notebooks' own folder, which the executed copies would overwrite; "
                         "choose another")
    results_path = Path(results_dir).resolve() if results_dir else out / "results"
    if not train:       # rendering only: the records must be there
        results.records_dir(results_path)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    # only the chosen notebooks' tables are trained: 01_table1 renders table1
    table_names = [n for n in ablations.TABLES if any(book.endswith(f"_{n}") for book in notebooks)]
    cells = _sweep.union_cells(table_names, protocol, results_path, seeds=seeds,
                               overrides=_with_data_path(overrides, data_path), device=device, limit=limit)
    missing = sum(results.finished(c.path) is None for c in cells)
    _sweep.say(f"reproduce [{protocol}]: {_sweep.count(len(cells), 'unique cell')} over "
               f"{_sweep.count(len(table_names), 'table')}, "
               + (f"{missing} to train, jobs={jobs}" if train else f"{missing} missing, training none")
               + f" → {out}", True)
    train_error = _train_grid(cells, jobs, progress) if train else None

    params = dict(protocol=protocol, results_dir=str(results_path), out_dir=str(out), jobs=jobs, device=device,
                  data_path=data_path, seeds=None if seeds is None else list(seeds),
                  overrides=_sweep.override_items(overrides, None), limit=limit, train=train)
    ran = _run_notebooks(notebooks, params, out, jobs)

    report = out / "REPORT.md"
    command = _command_line(protocol, out_dir, jobs=jobs, train=train, results_dir=results_dir, overrides=overrides,
                            data_path=given_data_path, device=device, seeds=seeds, limit=limit, notebooks=notebooks)
    report.write_text(_report_text(command, protocol, out, results_path, table_names, ran, len(cells),
                                   time.time() - start, train_error))
    _sweep.say(f"reproduce [{protocol}]: done in {time.time() - start:.0f} s → {report}", True)
    failed = [n for n, e, _ in ran if e]
    if failed or train_error:
        raise RuntimeError(f"reproduce finished with failures (notebooks: {', '.join(failed) or 'none'}; "
                           f"cell errors: {len(train_error.errors) if train_error else 0}); see {report}")
    return report


def _train_grid(cells, jobs: int, progress: bool) -> _sweep.CellErrors | None:
    """Train the cells not finished yet; cells that raise are returned, not raised, so that the notebooks still
    render the others and the report lists them."""
    try:
        _sweep.run_cells(cells, jobs=jobs, progress=progress, desc="cells")
    except _sweep.CellErrors as err:
        _sweep.say(str(err), True)
        return err
    return None


def _run_notebooks(notebooks, params: dict, out: Path, jobs: int) -> list[tuple[str, str | None, float]]:
    """Execute each notebook into `out` with `params` (jobs > 1: side by side in spawned processes), saying how each
    went; returns (name, error or None, seconds) for each."""
    todo = [(NOTEBOOK_DIR / f"{n}.ipynb", out / f"{n}.ipynb", params, out) for n in notebooks]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=spawn) if jobs > 1 else nullcontext() as pool:
        run = pool.map if pool else map
        ran = []
        for name, (error, wall) in zip(notebooks, run(_execute_quietly, todo)):
            ran.append((name, error, wall))
            _sweep.say(f"[{len(ran)}/{len(notebooks)}] {name}: {'ok' if error is None else 'FAILED'} ({wall:.0f} s)"
                       + ("" if error is None else f" — {error}"), True)
    return ran


def _command_line(protocol: str, out_dir, *, jobs, train, results_dir, overrides, data_path, device, seeds, limit,
                  notebooks) -> str:
    """The `lab reproduce` command that repeats a run, then the arguments that have no flag (given from Python)."""
    command = shlex.join(["lab", "reproduce", "--protocol", protocol, "--out", str(out_dir), "--jobs", str(jobs),
                          *([] if train else ["--no-train"]), *(["--results", str(results_dir)] if results_dir else []),
                          *(a for o in _sweep.override_items(_with_data_path(overrides, data_path), device)
                            for a in ("--set", o))])
    python_only = {"seeds": seeds, "limit": limit, "notebooks": None if notebooks == NOTEBOOKS else list(notebooks)}
    extras = ", ".join(f"{k}={v!r}" for k, v in python_only.items() if v is not None)
    return command + (f" (and, from Python, {extras})" if extras else "")


def _execute_quietly(job) -> tuple[str | None, float]:
    """(error or None, seconds): a failing notebook is reported, not raised, so the others still run."""
    src, dst, params, cwd = job
    import papermill
    start, declared = time.time(), papermill.inspect_notebook(str(src))
    try:
        execute(src, dst, {k: v for k, v in params.items() if k in declared}, cwd=cwd)
        return None, time.time() - start
    except Exception as err:  # papermill's execution error carries the cell's exception
        return (f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}".splitlines()[0],
                time.time() - start)


def execute(src, dst, parameters: dict, cwd=None):
    """papermill with the venv's python3 kernel over IPC sockets in a private temp dir (no TCP ports, no clashes
    between notebooks executed side by side)."""
    import papermill
    from traitlets.config import Config
    with tempfile.TemporaryDirectory(prefix="lab-kernel-") as sockets:
        config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "ipc")}})
        return papermill.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                                          progress_bar=False, cwd=None if cwd is None else str(cwd), config=config,
                                          kernel_manager_class=quiet_shutdown_kernel_manager())


def quiet_shutdown_kernel_manager():
    """jupyter_client's kernel manager, less the interrupt it sends a kernel before shutting it down. papermill shuts
    a kernel down once its notebook has run, and an interrupt that lands while the kernel handles a message only makes
    it print "ERROR | KeyboardInterrupt caught in kernel" into the job's output. The shutdown request, and the kill
    after it if the kernel does not exit, are unchanged."""
    from jupyter_client import AsyncKernelManager

    class QuietShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self):
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return QuietShutdownKernelManager


def _report_text(command, protocol, out, results_path, table_names, ran, n_cells, wall, train_error) -> str:
    from . import fidelity, results, tables
    lines = [f"# Reproduction of arXiv 2512.10938 Section 3 — protocol `{protocol}`", ""]
    if note := tables.protocol_caveat(protocol):
        lines += [f"> **{note}**", ""]
    records = results.load_records(results_path)
    devices = sorted({str(r.get("device")) for r in records})
    lines += [f"- command: `{command}` · wall time {wall:.0f} s · {_sweep.count(n_cells, 'unique cell')}",
              f"- results: `{_rel(results_path, out)}` ({_sweep.count(len(records), 'record')}; "
              f"device: {', '.join(devices) or '—'})",
              "", fidelity.render(fidelity.measure(records, protocol), caveat=False),
              "## Notebooks", "", "| notebook | status | time |", "|---|---|---|"]
    lines += [f"| [{n}]({n}.ipynb) | {'ok' if e is None else '**failed**: ' + e} | {t:.0f} s |" for n, e, t in ran]
    if train_error:
        lines += ["", f"**{_sweep.count(len(train_error.errors), 'cell')} raised** (see the notebooks' tracebacks):"]
        lines += [f"- `{c.spec}` seed {c.seed}" for c in train_error.errors]
    lines += ["", "## Tables"]
    for table in table_names:
        md = out / "tables" / f"{table}.md"
        lines += ["", f"### {table}", ""]
        if not md.exists():
            lines += ["(not rendered: its notebook failed)"]
            continue
        lines += [md.read_text(), "", " · ".join(f"[{f}](tables/{table}.{f})" for f in ("md", "tex", "csv"))]
        pngs = sorted((out / "figures").glob(f"{table}*.png"))
        lines += [f"![{p.stem}](figures/{p.name})" for p in pngs]
    lines += ["", "## Figures 2–4", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in sorted((out / "figures").glob("fig*.png"))]
    return "\n".join(lines) + "\n"


def _with_data_path(overrides, data_path):
    """The overrides, then data_path (relative to the project root in a notebook opened in notebooks/)."""
    items = _sweep.override_items(overrides, None)
    return items + ([f"data_path={project_path(data_path)}"] if data_path else [])


def _num(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def _principle_text(ablation) -> str:
    """Which functions of the table keep the property it tests (lab.audit on f), the fewer named: beside the
    accuracies, what breaking that property costs. Empty for a table without a principle."""
    verdicts = ablation.verdicts()
    if not verdicts:
        return ""
    kept, broken = [s for s, v in verdicts.items() if v], [s for s, v in verdicts.items() if not v]
    sides = sorted([("kept", kept), ("broken", broken)], key=lambda side: len(side[1]))
    (few_verb, few), (many_verb, many) = sides
    if not few:
        said = f"{many_verb} by all {_sweep.count(len(many), 'function')}"
    else:
        said = (f"{few_verb} by " + ", ".join(f"`{s}`" for s in few)
                + f"; {many_verb} by the other {_sweep.count(len(many), 'function')}")
    return f"\n\n{ablation.principle.replace('_', '-')}, the property the table tests (`lab.audit` on f): {said}."


def _failures(records) -> str:
    failed = [r["spec"] for r in records if r.get("status") != "ok"]
    return f"{len(failed)} failed: " + ", ".join(f"`{s}`" for s in failed) if failed else "none failed"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
