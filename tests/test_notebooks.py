"""The notebooks: committed without outputs, one `parameters` cell each, all run through papermill at smoke size,
and a bad parameter fails the notebook with lab's ValueError."""
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
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert sorted(p.stem for p in reproduce.NOTEBOOK_DIR.glob("*.ipynb")) == sorted(reproduce.NOTEBOOKS)


@pytest.mark.slow
def test_reproduce_runs_every_notebook_and_writes_the_report(tmp_path):
    report = reproduce.reproduce("smoke", tmp_path, jobs=2, limit=2, overrides=TINY, progress=False)
    text = report.read_text()
    assert "not comparable to the paper" in text and "**Fidelity to the paper — protocol smoke**" in text
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
    assert not (tmp_path / "never").exists()
