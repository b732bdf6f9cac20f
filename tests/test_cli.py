"""lab/cli.py's plumbing: each subcommand's options reach the library call, and its errors are its exit status."""
import json

import pytest

from lab import principles, reproduce, results, sweep, tables
from lab.cli import main


def test_sweep_passes_every_option_to_the_library(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep, "sweep", lambda *args, **kwargs: seen.append((args, kwargs)))
    assert main(["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path), "--jobs", "3", "--launcher",
                 "slurm", "--seeds", "0,2", "--specs", "erf, tanh", "--dry-run", "--slurm", "partition=gpu",
                 "--reuse", str(tmp_path / "r"), "--deadline", "60", "--mps", "--set", "lr=0.1"]) == 0
    assert seen == [(("table6", "smoke", str(tmp_path)), dict(
        jobs=3, launcher="slurm", seeds=(0, 2), overrides=["lr=0.1"], dry_run=True, slurm=["partition=gpu"],
        specs=["erf", "tanh"], deadline=60.0, mps=True, reuse=[str(tmp_path / "r")]))]


def test_a_sweep_whose_cells_raised_exits_1(tmp_path, monkeypatch, capsys):
    def raises(*args, **kwargs):
        raise sweep.CellErrors({}, [])
    monkeypatch.setattr(sweep, "sweep", raises)
    assert main(["sweep", "table6", "--protocol", "smoke", "--results", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("lab sweep: 0 cells raised")


def test_render_passes_its_protocol_and_format(tmp_path, capsys):
    """A folder with records of two protocols: --protocol picks one (without it, render refuses the mix)."""
    for i, spec in enumerate(["erf", "tanh", "layernorm"]):
        for protocol, top1 in (("smoke", 50.0 + i), ("proxy", 70.0 + i)):
            results.write_json_atomic(tmp_path / f"{spec}.{protocol}.json", {
                "spec": spec, "table": "table3", "protocol": protocol, "status": "ok", "failure": None,
                "top1": top1, "top1_ema": top1, "seed": 0, "config_hash": "aaaa"})
    assert main(["render", "table3", "--results", str(tmp_path), "--protocol", "smoke", "--format", "csv"]) == 0
    expected = tables.render("table3", results.load_records(tmp_path), "csv", protocol="smoke")
    assert capsys.readouterr().out == expected + "\n" and "50.0" in expected and "70.0" not in expected


def test_reproduce_passes_its_options_and_a_failure_exits_1(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(reproduce, "reproduce", lambda *args, **kwargs: seen.append((args, kwargs)) or "R.md")
    argv = ["reproduce", "--protocol", "smoke", "--out", str(tmp_path / "o"), "--jobs", "3", "--results",
            str(tmp_path / "r"), "--no-train", "--set", "lr=0.1"]
    assert main(argv) == 0 and capsys.readouterr().out == "report: R.md\n"
    assert seen == [(("smoke", str(tmp_path / "o")), dict(jobs=3, overrides=["lr=0.1"],
                                                          results_dir=str(tmp_path / "r"), train=False))]

    def fails(*args, **kwargs):
        raise RuntimeError("1 notebook failed")
    monkeypatch.setattr(reproduce, "reproduce", fails)
    assert main(argv) == 1 and "lab reproduce: 1 notebook failed" in capsys.readouterr().err


def test_audit_json_prints_the_measured_quantities(capsys):
    assert main(["audit", "erf", "tanh", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps([principles.audit(s) for s in ("erf", "tanh")]))
