"""The notebooks: committed without outputs, one `parameters` cell each, all run through papermill at smoke size,
and a bad parameter fails the notebook with lab's ValueError."""
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from lab import reproduce

TINY = ["epochs=2", "data.train_size=128", "data.val_size=64"]  # a second or two per cell


@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_committed_notebooks_have_no_outputs_and_one_parameters_cell(name):
    nb = nbformat.read(reproduce.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: strip its outputs"
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assigned = re.findall(r"^(\w+) =", cell.source, re.MULTILINE)
    assert list(papermill.inspect_notebook(str(reproduce.NOTEBOOK_DIR / f"{name}.ipynb"))) == assigned, (
        "papermill cannot parse a line of the parameters cell (an '=' in a comment), and reproduce drops "
        "what it cannot see")
    assert sorted(p.stem for p in reproduce.NOTEBOOK_DIR.glob("*.ipynb")) == sorted(reproduce.NOTEBOOKS)


def test_demo_shows_the_papers_verdict_beside_each_run(tmp_path):
    text = reproduce.demo_report(["erf", "linear"], "smoke", tmp_path, overrides=TINY, progress=False).markdown
    assert "| paper (%) |" in text
    assert re.search(r"\| `erf` \| \w+ \| [\d.–]+ \| 82\.6 \|", text)       # the paper's plain erf
    assert re.search(r"\| `linear` \| \w+ \| [\d.–]+ \| × \|", text)         # Table 4: a failure in the paper


def test_committed_notebooks_are_what_the_generator_writes():
    """notebooks/make_notebooks.py is their source: an edit to a committed notebook alone would be lost."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_notebooks", reproduce.NOTEBOOK_DIR / "make_notebooks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    built = generator.build()
    assert sorted(built) == sorted(reproduce.NOTEBOOKS)
    for name, nb in built.items():
        committed = nbformat.read(reproduce.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in nb.cells], name


@pytest.mark.slow
def test_reproduce_runs_every_notebook_and_writes_the_report(tmp_path):
    report = reproduce.reproduce("smoke", tmp_path, jobs=2, limit=2, overrides=TINY, progress=False)
    text = report.read_text()
    assert "not comparable to the paper" in text and "**Fidelity to the paper — protocol smoke**" in text
    assert (f"command: `lab reproduce --protocol smoke --out {tmp_path} --jobs 2 "
            f"{' '.join(f'--set {o}' for o in TINY)} (and, from Python, limit=2)`") in text     # (no spaces to quote)
    for name in reproduce.NOTEBOOKS:
        assert f"[{name}]({name}.ipynb) | ok" in text
        nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    for i in range(1, 7):
        assert (tmp_path / "tables" / f"table{i}.md").exists() and f"tables/table{i}.tex" in text
    assert list((tmp_path / "figures").glob("*.png"))


def test_a_bad_parameter_fails_the_notebook_with_labs_message(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        reproduce.execute(reproduce.NOTEBOOK_DIR / "01_table1.ipynb", tmp_path / "out.ipynb",
                          {"protocol": "smok", "results_dir": str(tmp_path)}, cwd=tmp_path)
    assert err.value.ename == "ValueError" and "smok" in err.value.evalue
    with pytest.raises(ValueError, match="smok"):
        reproduce.reproduce("smok", tmp_path / "never")
    with pytest.raises(ValueError, match="08_nope"):
        reproduce.reproduce("smoke", tmp_path / "never", notebooks=["08_nope"])
    with pytest.raises(ValueError, match="nope: no such directory"):      # nothing to render: not an empty report
        reproduce.reproduce("smoke", tmp_path / "never", results_dir=tmp_path / "nope", train=False)
    with pytest.raises(ValueError, match="jobs 0: at least 1"):
        reproduce.reproduce("smoke", tmp_path / "never", jobs=0)
    assert not (tmp_path / "never").exists()
    before = {p: p.read_bytes() for p in reproduce.NOTEBOOK_DIR.iterdir()}
    with pytest.raises(ValueError, match="the notebooks' own folder"):
        reproduce.reproduce("smoke", reproduce.NOTEBOOK_DIR, train=False, results_dir=tmp_path)
    assert {p: p.read_bytes() for p in reproduce.NOTEBOOK_DIR.iterdir()} == before


@pytest.mark.parametrize("protocol, note", [("smoke", "only exercise the machinery"),
                                            ("proxy", "protocol proxy is not the paper's recipe"), ("paper", None)])
def test_a_report_says_at_its_top_how_far_its_protocols_numbers_compare_with_the_papers(tmp_path, protocol, note):
    """A proxy grid rendered with --no-train is not the paper's recipe either: its report says so, as its tables do."""
    text = reproduce._report_text("lab reproduce", protocol, tmp_path, tmp_path, [], [], 0, 1.0, None)
    second = text.splitlines()[2]
    assert (note in second and second.startswith("> **Note:")) if note else not second.startswith(">")


def test_no_train_renders_the_records_present_and_trains_nothing(tmp_path):
    """A grid trained elsewhere (a GPU) is rendered here without training its missing cells."""
    from lab import config, results, train
    res = tmp_path / "results"
    train.run(config.load("smoke", TINY), "erf", res, table="table1", progress=False)
    report = reproduce.reproduce("smoke", tmp_path / "the out", overrides=TINY, results_dir=res, train=False,
                                 notebooks=("00_four_principles", "01_table1"), progress=False)
    assert [p.name for p in res.glob("*.json")] == [results.record_path(res, "erf", config.load("smoke", TINY)).name]
    text = report.read_text()
    assert "| [01_table1](01_table1.ipynb) | ok" in text
    assert f"--out '{tmp_path / 'the out'}' --jobs 2 --no-train --results {res} --set epochs=2" in text   # pasteable
    table = (tmp_path / "the out" / "tables" / "table1.md").read_text()
    assert "2 of 54 cells run" in table and "| – (×) |" in table     # erf at λ = 0 (two rows); the rest not run


def test_the_demo_notebook_takes_the_image_folder(jpeg_folder, tmp_path, monkeypatch):
    """`data_path` reaches notebook 00's demo as it reaches the tables: the demo finds the cell trained on the folder,
    from a path relative to where reproduce runs (the notebook runs in OUT/)."""
    from lab import config, train
    folder = ["data.kind=imagefolder", "data.num_classes=3", "data.workers=0", "batch_size=6", "epochs=1"]
    res = tmp_path / "results"
    train.run(config.load("smoke", [*folder, f"data_path={jpeg_folder}"]), "erf", res, progress=False)
    monkeypatch.chdir(jpeg_folder.parent)
    reproduce.reproduce("smoke", tmp_path / "out", overrides=folder, results_dir=res, train=False,
                        data_path=jpeg_folder.name,
                        notebooks=("00_four_principles",), progress=False)
    nb = nbformat.read(tmp_path / "out" / "00_four_principles.ipynb", as_version=4)
    outputs = str([c.get("outputs") for c in nb.cells if c.cell_type == "code"])
    assert re.search(r"\| `erf` \| \w+ \| [\d.–]+ \| 82\.6 \|", outputs)


def test_a_notebooks_kernel_is_shut_down_without_an_interrupt(monkeypatch):
    """An interrupt at shutdown made a kernel print "ERROR | KeyboardInterrupt caught in kernel" between notebooks of
    the main job; an interrupt asked for while the kernel runs still reaches it."""
    import asyncio

    from jupyter_client import AsyncKernelManager
    sent = []

    async def interrupt(self):
        sent.append(self.shutting_down)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", interrupt)

    async def run():
        km = reproduce.quiet_shutdown_kernel_manager()(kernel_name="python3")
        await km.start_kernel()
        try:
            await km._async_interrupt_kernel()       # what jupyter_client's shutdown calls, as Ctrl-C's path does
        finally:
            await km.shutdown_kernel()

    asyncio.run(run())
    assert sent == [False]


def test_reproduce_trains_only_its_notebooks_tables_into_out_results_and_fails_on_a_cell_error(tmp_path, monkeypatch):
    """lab reproduce over the sweep's cells (the notebooks stubbed: they only render): only the tables of the notebooks
    asked for train, by default into OUT/results; a cell that raised fails the call after the report is written, and a
    report rendered from those records elsewhere (--no-train --results) counts them."""
    import lab.train
    from lab import results, sweep
    from lab.config import config_hash
    cells = sweep.union_cells(["table1"], "smoke", tmp_path, overrides=TINY, limit=3)
    calls = []

    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        calls.append(norm)
        if norm == cells[1].spec:
            raise RuntimeError("boom")
        record = {"spec": norm, "table": table, "protocol": cfg["protocol"], "status": "ok", "top1": 42.0,
                  "seed": cfg["seed"], "config_hash": config_hash(cfg), "device": "cpu"}
        return results.write_json_atomic(results.record_path(out_dir, norm, cfg), record) and record

    monkeypatch.setattr(lab.train, "run", fake_run)
    monkeypatch.setattr(reproduce, "_execute_quietly", lambda job: (None, 0.0))
    out, args = tmp_path / "out", dict(jobs=1, limit=3, overrides=TINY, notebooks=("01_table1",), progress=False)
    with pytest.raises(RuntimeError, match="cell errors: 1"):
        reproduce.reproduce("smoke", out, **args)
    assert calls == [c.spec for c in cells]
    assert sorted(p.name for p in (out / "results").glob("*.json")) == sorted(c.path.name for c in cells[::2])
    assert "(2 records; device: cpu)" in (out / "REPORT.md").read_text()
    report = reproduce.reproduce("smoke", tmp_path / "again", results_dir=out / "results", train=False, **args)
    assert "(2 records; device: cpu)" in report.read_text() and len(calls) == 3


def test_a_notebook_opened_in_jupyterlab_shares_the_roots_folders(tmp_path, monkeypatch):
    """JupyterLab starts a kernel in notebooks/: the notebooks' relative results/ and reproduction/ are the project
    root's there, as for lab and papermill run from the root, not new folders beside the notebooks."""
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.chdir(tmp_path / "notebooks")
    reproduce.figures_report("reproduction", which=["figure3"])
    reproduce.table_report("table4", "smoke", "results", "reproduction", train=False, progress=False)
    assert (tmp_path / "reproduction" / "figures" / "figure3.png").exists()
    assert (tmp_path / "reproduction" / "tables" / "table4.md").exists()
    assert [p.name for p in (tmp_path / "notebooks").iterdir()] == []
    monkeypatch.chdir(tmp_path)                                  # anywhere else: relative to where it runs
    assert reproduce.project_path("results") == Path("results")


def test_table4s_figure_reads_its_functions_against_the_erf_another_tables_sweep_trained(tmp_path, monkeypatch):
    """Table 4 has no erf cell: its measured panel draws erf's line from the folder's erf record (Table 1's), and
    only from a record of the table's own config."""
    from lab import config, figures, results
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, stem: drawn.append((stem, fig)) or [])

    def write(spec, top1, cfg):
        record = {"spec": spec, "protocol": cfg["protocol"], "status": "ok", "top1": top1, "top1_ema": top1,
                  "seed": cfg["seed"], "config_hash": config.config_hash(cfg), "failure": None, "history": [],
                  "loss_curve": [[1, 2.0], [2, 1.5]]}
        results.write_json_atomic(results.record_path(tmp_path, spec, cfg), record)

    def erf_line():
        drawn.clear()
        reproduce.table_report("table4", "smoke", tmp_path, tmp_path / "out", train=False, progress=False)
        measured = dict(drawn)["table4_accuracy_vs_lambda"].axes[0]
        return [t.get_text() for t in measured.texts if t.get_text().startswith("erf: ")]

    write("linear", 30.0, config.load("smoke"))
    write("erf", 44.0, config.load("smoke", ["seed=1"]))      # another seed of the same config
    write("erf", 99.0, config.load("smoke", ["lr=1e-3"]))     # another config: not the table's
    write("erf", 77.0, config.load("proxy"))                  # another protocol
    assert erf_line() == ["erf: 44.0"]
    # a table with erf as a cell draws it from its own records alone: the other protocol's erf is not mixed in
    report = reproduce.table_report("table1", "smoke", tmp_path, tmp_path / "out", train=False, progress=False)
    assert report.markdown.endswith("\n\nzero-centered, the property the table tests (`lab.audit` on f): kept by "
                                    "`erf`, `tanh`, `arctan`; broken by the other 48 functions.")
    (tmp_path / results.record_path(tmp_path, "erf", config.load("smoke", ["seed=1"])).name).unlink()
    assert erf_line() == []


def test_a_table_of_your_owns_report_is_named_by_the_table_not_its_path(own_table, tmp_path):
    report = reproduce.table_report(str(own_table), "smoke", tmp_path / "res", tmp_path / "out", train=False,
                                    progress=False)
    assert report.title == "table_gd — smoke"
    assert "property" not in report.markdown         # the table names no principle
    assert sorted(p.name for p in (tmp_path / "out" / "tables").iterdir()) == [
        "table_gd.csv", "table_gd.md", "table_gd.tex"]
