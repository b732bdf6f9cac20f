"""Tables 1–6 (or one of your own) from result records, in the paper's layout, each cell "measured (paper)", as md /
tex / csv / html.

Records are matched to cells by canonical spec and protocol only (a record trained for another table serves every
cell with its spec). Within one protocol, records of one config hash are used (the hash covers the config but the
seed, the norm and where it ran: config.NOT_HASHED): the one with most records unless `config_hash` is given; the
others are named in a note. Several seeds of a cell give mean ± std over the seeds that trained. A cell counts as
failed if any of its seeds failed.
"""
import csv
import html
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from . import ablations
from .layers import BASELINE, canonical_norm
from .results import FINISHED, as_records

FORMATS = ("md", "tex", "csv", "html")
METRICS = ("top1", "top1_ema")
FAILURE_MARKS = {"diverged": "×div", "nan": "×nan", "no_learning": "×chance"}
MISSING = "–"
PAPER_PROTOCOL = "paper"
"""The protocol that is the paper's recipe (configs/protocols/paper.yaml): its numbers need no caveat."""
LEGEND = ("Cells: measured (paper), top-1 %. × the paper's training failure; measured failures by kind: "
          "×div diverged, "
          "×nan non-finite loss, ×chance never learned (chance accuracy); – not run; "
          "mean ± std over seeds; bold: train/fail differs from the paper.")


def failure_mark(kind: str | None) -> str:
    """The table mark of a failure kind ("diverged" -> "×div"); an unknown kind keeps its name."""
    return FAILURE_MARKS.get(kind, f"×{kind}" if kind else "×")


@dataclass
class CellResult:
    """One cell with the records matched to it."""
    cell: ablations.Cell
    values: list[float] = field(default_factory=list)     # metric of the seeds that trained
    failures: list[str] = field(default_factory=list)     # failure kinds of the seeds that failed
    records: list[dict] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return bool(self.values or self.failures)

    @property
    def trained(self) -> bool | None:
        return None if not self.ran else not self.failures

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    @property
    def agrees(self) -> bool | None:
        """Train/fail verdict equals the paper's (None if not run, or the cell has no paper value)."""
        return None if not self.ran or not self.cell.has_paper else self.trained == (self.cell.paper is not None)

    def measured_text(self) -> str:
        if not self.ran:
            return MISSING
        marks = "/".join(dict.fromkeys(failure_mark(k) for k in self.failures))
        if not self.values:
            return marks
        text = f"{self.mean:.1f}" + (f" ± {self.std:.2f}" if self.std is not None else "")
        n = len(self.values) + len(self.failures)
        return f"{text} [{len(self.failures)}/{n} {marks}]" if self.failures else text

    def paper_text(self) -> str:
        return self.cell.paper_text()


@dataclass
class TableResult:
    """A table's cells with their results, the records' provenance, and notes to print under it."""
    ablation: ablations.Ablation
    panels: list[list[CellResult]]
    protocol: str | None
    config_hash: str | None
    metric: str
    seeds: list
    baseline: CellResult | None
    notes: list[str]

    @property
    def results(self) -> list[CellResult]:
        return [r for panel in self.panels for r in panel]

    def agreement(self) -> dict:
        return agreement(self.results)


def agreement(results: list[CellResult]) -> dict:
    """Train/fail agreement and Spearman ρ of accuracies with the paper's (cells that trained in both), over the cells
    run that have a paper value ("compared"; all of them in the paper's tables)."""
    run = [r for r in results if r.ran]
    both = [r for r in run if r.trained and r.cell.paper is not None]
    rho, p = spearman([r.mean for r in both], [r.cell.paper for r in both])
    return {"cells": len(results), "run": len(run), "compared": sum(r.cell.has_paper for r in run),
            "agree": sum(bool(r.agrees) for r in run), "paper_failed": sum(r.cell.paper_failed for r in run),
            "measured_failed": sum(not r.trained for r in run),
            "spearman_n": len(both), "spearman_rho": rho, "spearman_p": p}


def gap(a: CellResult | None, b: CellResult | None) -> float | None:
    """a's mean top-1 less b's, each over its seeds that trained (None where either has none): erf − LayerNorm."""
    means = [None if r is None else r.mean for r in (a, b)]
    return None if None in means else means[0] - means[1]


def spearman(measured, paper) -> tuple[float | None, float | None]:
    """Spearman ρ and its p-value, or (None, None) below 3 pairs or when one side is constant (ρ undefined)."""
    x, y = np.asarray(measured, dtype=float), np.asarray(paper, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p)


def select(specs, records, protocol=None, config_hash=None, where="records"):
    """(protocol, config hash, {spec: {seed: record}}, notes): the finished records of `specs` (and LayerNorm) of one
    protocol and one config hash, the one with most records (then the latest) unless `config_hash` is given."""
    specs = set(specs) | {BASELINE}
    relevant = []
    for record in records:
        try:
            spec = canonical_norm(record.get("spec", ""))
        except ValueError:
            continue
        if spec in specs and record.get("status") in FINISHED:
            relevant.append({**record, "spec": spec})
    protocols = sorted({r.get("protocol") for r in relevant}, key=str)
    if protocol is None and len(protocols) > 1:
        raise ValueError(f"{where}: the records come from several protocols "
                         f"({', '.join(map(str, protocols))}); choose one with --protocol")
    protocol = protocol if protocol is not None else (protocols[0] if protocols else None)
    relevant = [r for r in relevant if r.get("protocol") == protocol]
    notes = []
    hashes = Counter(r.get("config_hash") for r in relevant)
    if config_hash is None and hashes:
        latest = {h: max(str(r.get("created", "")) for r in relevant if r.get("config_hash") == h) for h in hashes}
        config_hash = max(hashes, key=lambda h: (hashes[h], latest[h]))
    if len(hashes) > 1:
        others = ", ".join(f"{h} ({n} record{'s' * (n != 1)})" for h, n in hashes.items() if h != config_hash)
        notes.append(f"Using config {config_hash}; ignored records of other configs of this protocol: {others}.")
    by_spec: dict[str, dict] = {}
    for record in sorted(relevant, key=lambda r: str(r.get("created", ""))):
        if record.get("config_hash") == config_hash:
            by_spec.setdefault(record["spec"], {})[record.get("seed")] = record   # latest record per seed wins
    return protocol, config_hash, by_spec, notes


def cell_result(cell, seeds_records: dict, metric: str) -> CellResult:
    """`cell` with its records (seed -> record): the metric of those that trained, the kinds of those that failed."""
    result = CellResult(cell)
    for record in seeds_records.values():
        result.records.append(record)
        if record["status"] == "ok" and record.get(metric) is not None:
            result.values.append(float(record[metric]))
        elif record["status"] == "failed":
            result.failures.append((record.get("failure") or {}).get("kind"))
    return result


def collect(name: str, records, protocol: str | None = None, *, metric: str = "top1",
            config_hash: str | None = None) -> TableResult:
    """Match records to the cells of table `name`, the paper's or the path of your own (see ablations.load and the
    module docstring). `records`: any form lab.results.as_records takes (a results folder, records, their paths)."""
    records = as_records(records)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    ablation = ablations.load(name)
    protocol, config_hash, by_spec, notes = select(ablation.specs(), records, protocol, config_hash, ablation.name)
    panels = [[cell_result(c, by_spec.get(c.spec, {}), metric) for c in p.cells] for p in ablation.panels]
    baseline = None
    if BASELINE in by_spec:
        cell = ablations.Cell("LayerNorm", "", BASELINE, None, has_paper=False)     # the paper has no such cell
        baseline = cell_result(cell, by_spec[BASELINE], metric)
    seeds = sorted({s for runs in by_spec.values() for s in runs}, key=str)
    return TableResult(ablation, panels, protocol, config_hash, metric, seeds, baseline, notes)


def protocol_caveat(protocol: str | None) -> str | None:
    """How far a protocol's numbers compare with the paper's (None for the paper's protocol or no results): above
    each table and atop lab reproduce's report."""
    if protocol == "smoke":
        return "Note: smoke protocol: these numbers only exercise the machinery and are not comparable to the paper."
    if protocol not in (None, PAPER_PROTOCOL):
        return (f"Note: protocol {protocol} is not the paper's recipe: compare the train/fail pattern and the "
                "ranking (Spearman ρ), not absolute accuracies.")
    return None


def _notes(table: TableResult) -> list[str]:
    """Lines under the table: provenance, agreement, baseline, protocol caveats, legend."""
    a = table.agreement()
    cells = table.ablation.cells
    without_paper = sum(not c.has_paper for c in cells)
    lines = []
    if a["run"] == 0:
        lines.append(f"No results{f' of protocol {table.protocol}' if table.protocol else ''} yet"
                     + (": the paper's values only." if without_paper < len(cells) else "."))
    else:
        lines.append(_agreement_text(a))
        seeds = ", ".join(map(str, table.seeds))
        lines.append(f"Protocol {table.protocol}, config {table.config_hash}, seeds {seeds}, metric {table.metric}.")
        if regime := _regime(table):
            lines.append(regime)
    if table.baseline is not None:
        lines.append(f"LayerNorm baseline (same protocol and config): {table.baseline.measured_text()}.")
    if without_paper:
        lines.append(f"{ablations.NO_PAPER} in the paper's place: the table gives no paper value ({without_paper} of "
                     f"{len(cells)} cells).")
    return lines + table.notes + [LEGEND]


def _agreement_text(a: dict) -> str:
    """The agreement line, over the cells run that have a paper value; with none, no figures that mean nothing."""
    if a["compared"] == 0:
        return f"{a['run']} of {a['cells']} cells run; no paper values to compare them with."
    rho = (f"Spearman ρ = {a['spearman_rho']:.2f} (p = {a['spearman_p']:.2g}) over the {a['spearman_n']} "
           "cells that trained in both" if a["spearman_rho"] is not None else
           f"Spearman ρ: n/a ({a['spearman_n']} cells trained in both; needs ≥ 3 with distinct accuracies)")
    compared = f", {a['compared']} of them with a paper value" if a["compared"] < a["run"] else ""
    return (f"Agreement with the paper: {a['run']} of {a['cells']} cells run{compared}; train/fail agrees on "
            f"{a['agree']}/{a['compared']} (paper ×: {a['paper_failed']}, measured ×: {a['measured_failed']}); "
            f"{rho}.")


def _regime(table: TableResult) -> str | None:
    """What each cell trained (a ViT on the embedded set: the proxy and smoke protocols) and the binomial noise of its
    top-1, from a record's config: how large a difference has to be before it means anything."""
    cfg = next((r["config"] for c in table.results for r in c.records if r.get("config")), None)
    if cfg is None or cfg["model"].get("name") != "vit" or cfg["data"].get("kind") != "embedded":
        return None
    m, d = cfg["model"], cfg["data"]
    se = 100 * math.sqrt(0.25 / d["val_size"])       # at 50 % top-1, the largest
    return (f"Each cell: a depth-{m['depth']}, width-{m['embed_dim']} ViT trained for {cfg['schedule']['epochs']} "
            f"epochs on {d['train_size']:,} embedded {d['img_size']}-px images of {d['num_classes']} classes; top-1 on "
            f"{d['val_size']:,} validation images, whose binomial standard error is up to {se:.1f} points: a "
            f"difference under ~{3 * se:.0f} points between two cells is within noise.")


def _rows(panel: ablations.Panel, results: list[CellResult]) -> list[tuple]:
    """(row labels, the row's cell results): a panel's results are row-major, one per column."""
    n = len(panel.columns)
    return [(labels, results[i * n:(i + 1) * n]) for i, labels in enumerate(panel.rows)]


def _cell_text(r: CellResult) -> str:
    return f"{r.measured_text()} ({r.paper_text()})"


def _md(table: TableResult) -> str:
    ab = table.ablation
    out = [f"**{ab.title}.** {ab.caption}", ""]
    if note := protocol_caveat(table.protocol):
        out += [f"> **{note}**", ""]
    for panel, results in zip(ab.panels, table.panels):
        if panel.title:
            out += [f"*{panel.title}*", ""]
        header = list(panel.row_header) + list(panel.columns)
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * len(panel.row_header) + [":---:"] * len(panel.columns)) + "|")
        for labels, cells in _rows(panel, results):
            texts = [f"**{_cell_text(r)}**" if r.agrees is False else _cell_text(r) for r in cells]
            out.append("| " + " | ".join(list(labels) + texts) + " |")
        out.append("")
    return "\n".join(out + [f"- {line}" for line in _notes(table)]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "−": r"\ensuremath{-}",
        "λ": r"\ensuremath{\lambda}", "ρ": r"\ensuremath{\rho}", "×": r"\ensuremath{\times}",
        "±": r"\ensuremath{\pm}", "–": "--", "|": r"\textbar{}", "·": r"\ensuremath{\cdot}",
        "≤": r"\ensuremath{\le}", "≥": r"\ensuremath{\ge}",
        "²": r"\ensuremath{^2}", "√": r"\ensuremath{\surd}", "π": r"\ensuremath{\pi}"}


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex(table: TableResult) -> str:
    ab = table.ablation
    title = re.sub(r"^Table \d+: ", "", ab.title)     # "Table 5: center sensitivity": LaTeX numbers the table itself
    out = ["% lab.tables.render: needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
           f"\\caption{{{_tex_escape(title[:1].upper() + title[1:])}. {_tex_escape(ab.caption)}}}",
           f"\\label{{tab:{ab.name}}}"]
    if note := protocol_caveat(table.protocol):
        out.append(f"\\textbf{{{_tex_escape(note)}}}\\par\\smallskip")
    for panel, results in zip(ab.panels, table.panels):
        nr, nc = len(panel.row_header), len(panel.columns)
        if panel.title:
            out.append(f"\\par\\medskip{{{_tex_escape(panel.title)}}}\\par\\smallskip")
        out += [f"\\begin{{tabular}}{{{'l' * nr}{'c' * nc}}}", "\\toprule"]
        if panel.col_header:
            out += [" & " * nr + f"\\multicolumn{{{nc}}}{{c}}{{{_tex_escape(panel.col_header)}}} \\\\",
                    f"\\cmidrule(lr){{{nr + 1}-{nr + nc}}}"]
        out += [" & ".join(_tex_escape(h) for h in list(panel.row_header) + list(panel.columns)) + " \\\\", "\\midrule"]
        for labels, cells in _rows(panel, results):
            texts = [_tex_escape(_cell_text(r)) for r in cells]
            texts = [f"\\textbf{{{t}}}" if r.agrees is False else t for r, t in zip(cells, texts)]
            out.append(" & ".join([_tex_escape(s) for s in labels] + texts) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
    out.append("\\par\\smallskip\\footnotesize")
    out += [_tex_escape(line) + "\\par" for line in _notes(table)]
    return "\n".join(out + ["\\end{table}"]) + "\n"


def _csv(table: TableResult) -> str:
    """Paper layout, a measured and a paper column per column; notes as '#' lines (pandas: comment="#")."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    ab = table.ablation
    buffer.write(f"# {ab.title}. {ab.caption}\n")
    if note := protocol_caveat(table.protocol):
        buffer.write(f"# {note}\n")
    for panel, results in zip(ab.panels, table.panels):
        if panel.title:
            buffer.write(f"# {panel.title}\n")
        writer.writerow(list(panel.row_header) + [h for c in panel.columns for h in (c, f"{c} paper")])
        for labels, cells in _rows(panel, results):
            writer.writerow(list(labels) + [t for r in cells for t in (r.measured_text(), r.paper_text())])
    buffer.writelines(f"# {line}\n" for line in _notes(table))
    return buffer.getvalue()


_HTML_STYLE = ("<style>.lab-table td{text-align:center;padding:2px 8px}.lab-table .paper{color:#777}"
               ".lab-table .failed{color:#b22}.lab-table .disagree{font-weight:bold}"
               ".lab-table .notes{font-size:90%}.lab-table .caveat{color:#b22}</style>")


def _html(table: TableResult) -> str:
    esc = html.escape
    ab = table.ablation
    out = [_HTML_STYLE, '<div class="lab-table">', f"<p><b>{esc(ab.title)}.</b> {esc(ab.caption)}</p>"]
    if note := protocol_caveat(table.protocol):
        out.append(f'<p class="caveat"><b>{esc(note)}</b></p>')
    for panel, results in zip(ab.panels, table.panels):
        nc = len(panel.columns)
        out.append("<table>" + (f"<caption>{esc(panel.title)}</caption>" if panel.title else "") + "<thead>")
        span = ' rowspan="2"' if panel.col_header else ""
        first = "".join(f"<th{span}>{esc(h)}</th>" for h in panel.row_header)
        if panel.col_header:
            out.append(f'<tr>{first}<th colspan="{nc}">{esc(panel.col_header)}</th></tr>')
            first = ""
        out.append("<tr>" + first + "".join(f"<th>{esc(c)}</th>" for c in panel.columns) + "</tr></thead><tbody>")
        for labels, cells in _rows(panel, results):
            tds = []
            for r in cells:
                classes = [c for c, on in (("failed", r.trained is False), ("disagree", r.agrees is False)) if on]
                attr = f' class="{" ".join(classes)}"' if classes else ""
                paper = f'<span class="paper">({esc(r.paper_text())})</span>'
                tds.append(f"<td{attr}>{esc(r.measured_text())} {paper}</td>")
            out.append("<tr>" + "".join(f"<th>{esc(s)}</th>" for s in labels) + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
    out.append('<p class="notes">' + "<br>".join(esc(line) for line in _notes(table)) + "</p>")
    return "\n".join(out + ["</div>"]) + "\n"


_RENDERERS = {"md": _md, "tex": _tex, "csv": _csv, "html": _html}


def render(name: str, records=(), fmt: str = "md", protocol: str | None = None, *, metric: str = "top1",
           config_hash: str | None = None) -> str:
    """Table `name` in the paper's layout with the measured values beside the paper's, plus an agreement summary.

    With no records it is the empty layout with the paper's values. ValueError on an unknown table, format or metric,
    or records of several protocols when `protocol` is not given.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return _RENDERERS[fmt](collect(name, records, protocol, metric=metric, config_hash=config_hash))


def frame(name: str, records=(), protocol: str | None = None, *, metric: str = "top1",
          config_hash: str | None = None):
    """The same cells as a tidy pandas DataFrame (one row per cell) for notebooks and further analysis."""
    import pandas as pd
    table = collect(name, records, protocol, metric=metric, config_hash=config_hash)
    return pd.DataFrame([{
        "table": table.ablation.name, "panel": r.cell.panel, "row": r.cell.row, "col": r.cell.col, "spec": r.cell.spec,
        "paper": r.cell.paper, "has_paper": r.cell.has_paper, "mean": r.mean, "std": r.std, "n_ok": len(r.values),
        "n_failed": len(r.failures),
        "failure_kinds": ",".join(k or "" for k in r.failures), "trained": r.trained, "agrees": r.agrees,
        "protocol": table.protocol, "config_hash": table.config_hash,
    } for r in table.results])
