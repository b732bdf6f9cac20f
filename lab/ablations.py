"""The paper's Section-3 ablation grids (ablations/table<N>.yaml), and tables of your own in the same format, as
validated data: cells, specs and paper values.

A table has one or more panels. A panel is rows x columns; each cell's spec is the panel's `spec` template (or a
row's / column's own `spec`) filled with the row's and column's variables: `{row}` / `{col}` are their labels, any
other key of a row or column mapping (`lam`, `f`, ...) is a variable. A `|part` whose variable is null is dropped, so
a "none" row is the plain base function. Every spec is checked with `lab.canonical_norm` at load time: a
point-wise spec, or a norm name (layernorm, rmsnorm, derf) for a table of your own that compares against them.
Paper values are floats; "×" (the paper's training failure) loads as None. A table of your own is any .yaml file,
named by its path and known by the file's stem; its paper values are optional (omitted or null: the cell has none).
"""
import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .config import check_keys, read_yaml
from .layers import NORM_NAMES, canonical_norm
from .perturb import did_you_mean
from .principles import PROPERTIES, audit

ABLATIONS_DIR = Path(__file__).resolve().parent.parent / "ablations"
PAPER_TABLE = re.compile(r"table[1-9]\d*")


def paper_tables(folder: Path) -> tuple[str, ...]:
    """The paper's grid: exactly the table<N>.yaml files of `folder`, in N order; other files there are not tables."""
    names = [p.stem for p in folder.glob("*.yaml") if PAPER_TABLE.fullmatch(p.stem)]
    return tuple(sorted(names, key=lambda name: int(name.removeprefix("table"))))


TABLES = paper_tables(ABLATIONS_DIR)
"""`lab sweep all`, `lab fidelity`, `lab reproduce` and the notebooks are these tables."""
FAILURE = "×"
NO_PAPER = "–"
_TABLE_KEYS = {"title", "caption", "principle", "panels"}
_PANEL_KEYS = {"title", "row_header", "col_header", "x_axis", "spec", "columns", "rows"}
_AXES = ("columns", "rows")


@dataclass(frozen=True)
class Cell:
    """One cell of a table: its row and column labels, canonical spec, and the paper's top-1 (None = ×; a cell of a
    table of your own may have no paper value: has_paper False, and then no verdict to agree with)."""
    row: str
    col: str
    spec: str
    paper: float | None
    panel: str = ""
    has_paper: bool = True

    @property
    def paper_failed(self) -> bool:
        return self.has_paper and self.paper is None

    def paper_text(self) -> str:
        if not self.has_paper:
            return NO_PAPER
        return FAILURE if self.paper is None else f"{self.paper:.1f}"


@dataclass(frozen=True)
class Panel:
    """A rows x columns grid. `x_axis` is the swept axis: the x of accuracy-vs-λ plots, the hue of loss curves."""
    title: str
    row_header: tuple[str, ...]
    col_header: str
    rows: tuple[tuple[str, ...], ...]      # label columns of each row
    columns: tuple[str, ...]
    x_axis: str
    cells: tuple[Cell, ...]                # row-major

    def cell(self, i: int, j: int) -> Cell:
        return self.cells[i * len(self.columns) + j]

    def x_and_series(self, cell: Cell) -> tuple[str, str]:
        """(label on the swept axis, label of the series) of one of this panel's cells."""
        return (cell.col, cell.row) if self.x_axis == "columns" else (cell.row, cell.col)


@dataclass(frozen=True)
class Ablation:
    name: str
    title: str
    caption: str
    principle: str
    panels: tuple[Panel, ...]

    @property
    def cells(self) -> list[Cell]:
        return [c for p in self.panels for c in p.cells]

    @property
    def of_paper(self) -> bool:
        """One of the paper's tables (one of your own cannot take a paper table's name)."""
        return self.name in TABLES

    def verdicts(self) -> dict[str, bool]:
        """spec -> whether `lab.audit` finds that f keeps the property this table tests, in table order: the link
        between a principle and the accuracies beside it ({} for a table without a principle; norms are left out)."""
        if not self.principle:
            return {}
        return {s: bool(audit(s)[self.principle]) for s in self.specs() if s not in NORM_NAMES}

    def specs(self) -> list[str]:
        """Unique canonical specs to train, in table order (row-major, panel by panel)."""
        return list(dict.fromkeys(c.spec for c in self.cells))


def _entry(where: str, item, axis: str) -> tuple[tuple[str, ...], dict, str | None]:
    """(label columns, template variables, own spec template) of one row or column entry."""
    if not isinstance(item, dict):
        item = {"label": item}
    if "label" not in item:
        raise ValueError(f"{where}: a {axis[:-1]} needs a 'label'")
    label = item["label"]
    labels = tuple(str(x) for x in label) if isinstance(label, list) else (str(label),)
    variables = {k: v for k, v in item.items() if k not in ("label", "spec", "paper")}
    if len(labels) == 1:
        variables["col" if axis == "columns" else "row"] = labels[0]
    return labels, variables, item.get("spec")


def _fill(where: str, template: str, variables: dict) -> str:
    """Fill the spec template, dropping every `|part` that refers to a null variable; then canonicalise."""
    parts = []
    for part in template.split("|"):
        names = [name for _, name, _, _ in string.Formatter().parse(part) if name]
        missing = [n for n in names if n not in variables]
        if missing:
            defined = sorted(k for k, v in variables.items() if v is not None)
            raise ValueError(f"{where}: spec template {template!r} uses {missing}, which neither the row nor the "
                             f"column defines (they define: {defined})")
        if any(variables[n] is None for n in names):
            continue
        parts.append(part.format(**variables))
    try:
        return canonical_norm("|".join(parts))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _check_variables(where: str, raw: dict, templates: set) -> None:
    """Every key of a row or column is `label`, `spec`, `paper` or a variable some spec template of the panel uses:
    a misspelt `paper` or a stray key (`lam: 0,5` is `lam: 0` and a key "5") would otherwise pass unnoticed."""
    used = {name for t in templates for _, name, _, _ in string.Formatter().parse(t) if name}
    valid = ["label", "spec", "paper", *sorted(used - {"row", "col"})]
    for axis in _AXES:
        for i, item in enumerate(raw[axis]):
            unknown = [str(k) for k in (item if isinstance(item, dict) else {}) if k not in valid]
            if unknown:
                raise ValueError(f"{where} {axis[:-1]} {i + 1}: key {unknown[0]!r}{did_you_mean(unknown[0], valid)} is "
                                 f"no variable of the spec templates {sorted(templates)}; valid keys: "
                                 f"{', '.join(valid)}")


def _paper_value(where: str, value, required: bool) -> float | None:
    if value is None and not required:
        return None
    if value == FAILURE:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: paper value {value!r} must be a number or {FAILURE!r} (training failure)"
                         + ("" if required else " or null (none)"))
    return float(value)


def _panel(name: str, index: int, raw, paper_required: bool) -> Panel:
    where = f"{name} panel {index + 1}"
    check_keys(where, raw, _PANEL_KEYS, {"row_header", "columns", "rows"})
    x_axis = raw.get("x_axis", "columns")
    if x_axis not in _AXES:
        raise ValueError(f"{where}: x_axis {x_axis!r} must be one of {', '.join(_AXES)}")
    title = str(raw.get("title", ""))
    columns = [_entry(f"{where} column {j + 1}", c, "columns") for j, c in enumerate(raw["columns"])]
    rows, cells, templates = [], [], set()
    for i, row in enumerate(raw["rows"]):
        row_where = f"{where} row {i + 1}"
        labels, row_vars, row_spec = _entry(row_where, row, "rows")
        paper = row.get("paper") if isinstance(row, dict) else None
        if paper is None and not paper_required:
            paper = [None] * len(columns)
        if not isinstance(paper, list) or len(paper) != len(columns):
            raise ValueError(f"{row_where} ({' '.join(labels)}): 'paper' must list one value per column "
                             f"({len(columns)}), got {paper!r}")
        rows.append(labels)
        for (col_labels, col_vars, col_spec), value in zip(columns, paper):
            cell_where = f"{row_where} ({', '.join(labels)}), column {col_labels[0]!r}"
            template = col_spec or row_spec or raw.get("spec")
            if not template:
                raise ValueError(f"{cell_where}: no spec template (give the panel, row or column a 'spec')")
            templates.add(template)
            spec = _fill(cell_where, template, {**row_vars, **col_vars})
            cells.append(Cell(", ".join(labels), col_labels[0], spec, _paper_value(cell_where, value, paper_required),
                              title, has_paper=value is not None))
    _check_variables(where, raw, templates)
    widths = {len(r) for r in rows} | {len(raw["row_header"])}
    if len(widths) != 1:
        raise ValueError(f"{where}: row_header {raw['row_header']} and the row labels differ in length")
    for axis, labels in (("row", rows), ("column", [c[0] for c in columns])):
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}: duplicate {axis} labels {labels}")
    return Panel(title, tuple(str(h) for h in raw["row_header"]), str(raw.get("col_header", "")), tuple(rows),
                 tuple(c[0][0] for c in columns), x_axis, tuple(cells))


def load(name) -> Ablation:
    """A table of the paper by name ("table1", ...), or one of your own by the path of its .yaml file (read afresh each
    time, so that an edit shows); ValueError naming the problem otherwise."""
    if str(name) in TABLES:
        return _paper_table(str(name))
    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        hint = (f" (did you mean '{name}.yaml'?)" if path.with_name(f"{path.name}.yaml").is_file() else
                did_you_mean(name, TABLES))
        raise ValueError(f"unknown table {str(name)!r}{hint}: neither a table of the paper ({', '.join(TABLES)}) nor "
                         f"the path of a .yaml table of your own")
    if not path.is_file():
        beside = [str(path.parent / p.name) for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        raise ValueError(f"table {str(name)!r}: no such file ({path.absolute()}){did_you_mean(path, beside)}")
    if path.stem in TABLES:     # records name their table by it: one of your own must not pass for the paper's
        if path.resolve() == (ABLATIONS_DIR / f"{path.stem}.yaml").resolve():
            return _paper_table(path.stem)
        raise ValueError(f"{path}: {path.stem!r} is the name of a table of the paper; give your table another name")
    return _parse(path.stem, path, str(path), paper_required=False)


@cache
def _paper_table(name: str) -> Ablation:
    """The paper's tables give its value, or ×, for every cell."""
    return _parse(name, ABLATIONS_DIR / f"{name}.yaml", name, paper_required=True)


def _parse(name: str, path: Path, where: str, paper_required: bool) -> Ablation:
    """Table `name` from `path`; errors start with `where`."""
    raw = read_yaml(path)
    check_keys(where, raw, _TABLE_KEYS, {"title", "panels"})
    principle = raw.get("principle", "")
    if principle and principle not in PROPERTIES:
        raise ValueError(f"{where}: principle {principle!r} must be one of {', '.join(PROPERTIES)}")
    panels = tuple(_panel(where, i, p, paper_required) for i, p in enumerate(raw["panels"]))
    return Ablation(name, str(raw["title"]), " ".join(str(raw.get("caption", "")).split()), principle, panels)


def cells_by_spec() -> dict[str, Cell]:
    """Every canonical spec of the paper's tables and its first cell in that order (a spec in several tables, such as
    a λ = 0 cell, has the same paper value in each)."""
    cells = {}
    for table in TABLES:
        for cell in load(table).cells:
            cells.setdefault(cell.spec, cell)
    return cells
