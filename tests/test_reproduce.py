"""lab.reproduce without papermill: what the report and a table's report say, and that rendering trains nothing.
(tests/test_notebooks.py runs the notebooks themselves.)"""
import pytest

import lab.train
from lab import reproduce, results, sweep

TINY = ["epochs=2", "data.train_size=128", "data.val_size=64"]


def test_rendering_a_table_trains_nothing_and_names_its_failed_cells(tmp_path, monkeypatch):
    """table_report(train=False) renders a grid fetched from a GPU: a missing cell stays –, never trained here; the
    summary names the cells whose records failed, not those that trained."""
    [erf, tanh] = sweep.table_cells("table6", "smoke", tmp_path, specs=["erf", "tanh"], overrides=TINY)
    results.write_json_atomic(erf.path, {"spec": "erf", "protocol": "smoke", "status": "ok", "top1": 50.0,
                                         "seed": erf.seed, "failure": None})
    results.write_json_atomic(tanh.path, {"spec": "tanh", "protocol": "smoke", "status": "failed", "top1": None,
                                          "seed": tanh.seed, "failure": {"kind": "diverged"}})
    monkeypatch.setattr(lab.train, "run", lambda *args, **kwargs: pytest.fail("train=False trained a cell"))
    report = reproduce.table_report("table6", "smoke", tmp_path, tmp_path / "out", overrides=TINY, train=False,
                                    progress=False)
    assert "2 records (smoke)" in report.markdown and "1 failed: `tanh`" in report.markdown
    assert reproduce._failures([{"spec": "erf", "status": "ok"}]) == "none failed"


def test_a_grid_whose_cells_raised_still_renders_and_the_report_names_them(tmp_path, monkeypatch):
    """The cells that raised are returned, not raised (the notebooks still render the others), and REPORT.md lists
    them."""
    [cell] = sweep.plan(["erf"], "smoke", tmp_path, overrides=TINY)
    errors = sweep.CellErrors({cell: "Traceback: boom"}, [])

    def raises(cells, **kwargs):
        raise errors
    monkeypatch.setattr(sweep, "run_cells", raises)
    assert reproduce._train_grid([cell], 1, False) is errors
    text = reproduce._report_text("lab reproduce", "smoke", tmp_path, tmp_path, [], [], 1, 1.0, errors)
    assert "**1 cell raised**" in text and f"- `erf` seed {cell.seed}" in text


def test_the_reports_command_repeats_a_render_only_run():
    command = reproduce._command_line("proxy", "out", jobs=2, train=False, results_dir="gpu/results", overrides=None,
                                      data_path=None, device=None, seeds=None, limit=None,
                                      notebooks=reproduce.NOTEBOOKS)
    assert command == "lab reproduce --protocol proxy --out out --jobs 2 --no-train --results gpu/results"
