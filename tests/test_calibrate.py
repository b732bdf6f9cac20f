"""lab.calibrate: the file's validation, one folder per variant, the summary beside the paper, skip on re-run."""
import shutil
from pathlib import Path

import pytest
import yaml

import lab.train
from lab import ablations, calibrate, config, results, sweep, tables
from lab.cli import main

TINY = ["epochs=2", "data.train_size=128", "data.val_size=64"]  # a fraction of a second per cell
SUBSET = ["layernorm", "erf", "erf|hshift=2"]
ROOT = Path(__file__).resolve().parent.parent


def _file(tmp_path, **changes):
    raw = {"protocol": "smoke", "seeds": [0], "subset": SUBSET, "variants": {"A": TINY, "B": [*TINY, "lr=1e-3"]},
           **changes}
    path = tmp_path / "round.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_rounds_load_and_validate():
    rounds = {p.stem: calibrate.load(p) for p in (ROOT / "configs" / "calibration").glob("*.yaml")}
    assert {"round1", "round2", "round3", "round4", "cpu1"} <= set(rounds)
    for cal in rounds.values():
        assert len(cal.subset) == 14 and cal.protocol == ("smoke" if cal.name.startswith("cpu") else "proxy")
    paper = calibrate.paper_values()
    assert paper["erf|hshift=2"] is None and paper["erf"] is not None and "layernorm" not in paper


def test_every_committed_calibration_record_is_a_cell_of_its_round_file():
    """A round's records keep matching its file when proxy.yaml adopts a finding: the rounds pin their `base`."""
    records = ROOT / "ablations" / "results" / "calibration"
    found = 0
    for path in (ROOT / "configs" / "calibration").glob("*.yaml"):
        cal = calibrate.load(path)
        for name, overrides in cal.variants.items():
            planned = {c.path.name for c in sweep.plan(cal.subset, cal.protocol, records / name, seeds=cal.seeds,
                                                       overrides=overrides, source=cal.base)}
            present = {p.name for p in (records / name).glob("*.json")}
            assert present <= planned, (path.name, name, sorted(present - planned))
            found += len(present)
    assert found >= 100


def test_proxy_yaml_is_the_round_3_variant_its_header_names():
    cal = calibrate.load(ROOT / "configs" / "calibration" / "round3.yaml")
    adopted = config.load(cal.protocol, cal.variants["r3-e80-graphs"], source=cal.base)
    assert config.config_hash(config.load("proxy")) == config.config_hash(adopted)
    assert "r3-e80-graphs" in (config.PROTOCOL_DIR / "proxy.yaml").read_text().split("\nseed:")[0]


def test_a_base_file_replaces_the_protocols_settings_and_keeps_its_name(tmp_path):
    smoke = yaml.safe_load((config.PROTOCOL_DIR / "smoke.yaml").read_text())
    (tmp_path / "old-smoke.yaml").write_text(yaml.safe_dump({**smoke, "seed": 7, "precision": "bf16"}))
    cal = calibrate.load(_file(tmp_path, base="old-smoke.yaml"))
    cells = sweep.plan(["erf"], cal.protocol, tmp_path, overrides=cal.variants["A"], source=cal.base)
    assert cells[0].cfg["protocol"] == "smoke" and cells[0].cfg["precision"] == "bf16" and cells[0].seed == 7
    assert cells[0].cfg["schedule"]["epochs"] == 2       # the variant's overrides apply on top of the base


def test_a_round_with_a_base_trains_the_cells_of_its_base(tmp_path, monkeypatch):
    """A round pins the protocol as it ran: its cells (their config, seed and record names) come from `base`, or a
    re-run would train the round again under today's protocol and its summary would miss the records it has."""
    smoke = yaml.safe_load((config.PROTOCOL_DIR / "smoke.yaml").read_text())
    (tmp_path / "old-smoke.yaml").write_text(yaml.safe_dump({**smoke, "seed": 7, "precision": "bf16"}))
    trained = []
    monkeypatch.setattr(sweep, "run_cells", lambda cells, **kwargs: trained.extend(cells) or [])
    calibrate.calibrate(_file(tmp_path, base="old-smoke.yaml", seeds=None), tmp_path / "out", progress=False)
    assert len(trained) == 6 and {(c.seed, c.cfg["precision"]) for c in trained} == {(7, "bf16")}


def test_jobs_deadline_and_mps_reach_the_pool_that_trains_the_round(tmp_path, monkeypatch):
    """The device script gives each round the seconds its call has left and MPS: a round that dropped them would
    overrun the lent machine or time-slice it."""
    seen = []
    monkeypatch.setattr(sweep, "run_cells", lambda cells, **kwargs: seen.append((len(cells), kwargs)) or [])
    calibrate.calibrate(_file(tmp_path), tmp_path / "out", jobs=3, deadline=600, mps=True, progress=False)
    assert [(n, kw["jobs"], kw["deadline"], kw["mps"]) for n, kw in seen] == [(6, 3, 600, True)]


def test_report_summarises_the_committed_gpu_records_and_trains_nothing(tmp_path, monkeypatch):
    """The records fetched from the accelerator still match their round file (config hashes over proxy.yaml)."""
    monkeypatch.setattr(lab.train, "run", lambda *a, **k: pytest.fail("--report must not train"))
    out = tmp_path / "calibration"
    shutil.copytree(ROOT / "ablations" / "results" / "calibration", out)
    summary, errors = calibrate.calibrate(ROOT / "configs" / "calibration" / "round2.yaml", out, report=True,
                                          progress=False)
    text = summary.read_text()
    assert errors is None and "NVIDIA H100" in text and "this call" not in text
    e40 = text[text.index("## r2-lr2e-3-light-e40"):]
    assert "train/fail agrees 8/8" in e40.split("##")[1] and r"| `erf\|blend=0.5` | × | × diverged | yes |" in e40
    history = results.read_record(next((out / "r2-lr2e-3-light-e40").glob("erf.proxy-*.json")))["history"]
    erf_row = next(line for line in e40.splitlines() if line.startswith("| `erf` |"))
    assert f"| yes | {history[-1]['train_loss']:.2f} | " in erf_row          # the loss of its last epoch, not its first
    assert f"{history[0]['train_loss']:.2f}" != f"{history[-1]['train_loss']:.2f}"


def test_each_variant_gets_its_folder_and_a_row_per_spec_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    summary, errors = calibrate.calibrate(_file(tmp_path), out, progress=False)
    assert errors is None and summary == out / "summary-round.md"
    for variant in ("A", "B"):
        assert len(list((out / variant).glob("*.json"))) == len(SUBSET)
    text = summary.read_text()
    assert text.count("| `layernorm` | – |") == 2 and text.count("| `erf` | 82.6 |") == 2
    assert text.count(r"| `erf\|hshift=2` | × |") == 2
    assert text.count("train/fail agrees") == 2 and "device cpu" in text
    erf_row = next(line for line in text.splitlines() if line.startswith("| `erf` |"))
    low, high = map(float, erf_row.split("|")[-2].split("–"))     # the learned α range, off alpha0 = 0.5
    assert 0 < low <= high and (low, high) != (0.5, 0.5)

    calls = []
    monkeypatch.setattr(lab.train, "run", lambda *args, **kwargs: calls.append(args))
    assert calibrate.calibrate(_file(tmp_path), out, progress=False)[1] is None and calls == []

    created = results.read_record(next((out / "A").glob("erf.*.json")))["created"]
    reported = calibrate.calibrate(_file(tmp_path), out, progress=False, report=True)[0].read_text()
    assert f" · trained {created[:10]}\n" in reported     # when the round trained, not when it was reported
    assert calibrate.calibrate(_file(tmp_path), out, progress=False, report=True)[0].read_text() == reported


def test_a_crashing_cell_is_reported_after_the_summary(tmp_path, monkeypatch, capsys):
    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        if norm == "erf":
            raise RuntimeError("boom")
        record = {"spec": norm, "status": "ok", "top1": 50.0, "top1_ema": 51.0, "seed": 0, "wall_s": 2.0,
                  "device": "NVIDIA H200", "pool": {"workers": 14, "mps": True}}   # as a packed sweep's records say
        results.write_json_atomic(results.record_path(out_dir, norm, cfg), record)
        return record

    monkeypatch.setattr(lab.train, "run", fake_run)
    assert main(["calibrate", str(_file(tmp_path)), "--results", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "| `layernorm` | – | 50.0 (51.0) | – |" in captured.out and "| `erf` | 82.6 | – | – |" in captured.out
    assert "2 cells raised" in captured.out and "boom" in captured.err
    assert "device NVIDIA H200 · 14 runs packed under MPS ·" in captured.out
    assert (tmp_path / "out" / "summary-round.md").exists()


def test_a_cell_with_several_seeds_shows_their_mean_and_spread(tmp_path, monkeypatch, capsys):
    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        top1 = {"erf": [50.0, 53.0], "layernorm": [60.0, 60.0]}[norm][cfg["seed"]]
        record = {"spec": norm, "status": "ok", "top1": top1, "top1_ema": top1 + 1, "seed": cfg["seed"]}
        results.write_json_atomic(results.record_path(out_dir, norm, cfg), record)
        return record

    monkeypatch.setattr(lab.train, "run", fake_run)
    path = _file(tmp_path, seeds=[0, 1], subset=["layernorm", "erf"], variants={"A": TINY})
    text = calibrate.calibrate(path, tmp_path / "out", progress=False)[0].read_text()
    assert "| `erf` | 82.6 | 51.5 ± 2.12, 2 seeds (52.5) |" in text
    assert "| `layernorm` | – | 60.0 ± 0.00, 2 seeds (61.0) |" in text and "erf − LayerNorm -8.5 pt" in text
    next((tmp_path / "out" / "A").glob("layernorm.*-s1.json")).unlink()        # as when one seed is still to run
    assert main(["calibrate", str(path), "--results", str(tmp_path / "out"), "--report"]) == 0
    captured = capsys.readouterr()
    assert "| `layernorm` | – | 60.0, 1 seed (61.0) |" in captured.out
    assert "4 cells, 1 without a record (report: trains nothing)" in captured.err


def test_the_summary_judges_each_cell_and_the_round_from_its_records(tmp_path, monkeypatch):
    """A cell the paper trains that fails here, and one the paper fails that trains here, are each a **no**; Spearman ρ
    ranks only the cells that trained against the paper; the round's training time is the sum over its cells; α and
    the train loss are those of each run's last evaluation."""
    top1 = {"layernorm": 60.0, "erf": 50.0, "tanh": 45.0, "arctan": 40.0, "isru": None, "erf|hshift=2": 30.0}
    history = [{"epoch": 1, "train_loss": 2.0, "alpha": [0.5, 0.5]},
               {"epoch": 2, "train_loss": 1.5, "alpha": [0.3, 0.9]}]

    def fake_run(cfg, norm, out_dir, *, table=None, progress=True, pool=None):
        failed = top1[norm] is None
        record = {"spec": norm, "status": "failed" if failed else "ok", "top1": top1[norm], "seed": 0, "wall_s": 2.0,
                  "failure": {"kind": "nan"} if failed else None, "history": history if norm == "erf" else []}
        results.write_json_atomic(results.record_path(out_dir, norm, cfg), record)
        return record

    monkeypatch.setattr(lab.train, "run", fake_run)
    path = _file(tmp_path, subset=list(top1), variants={"A": TINY})
    text = calibrate.calibrate(path, tmp_path / "out", progress=False)[0].read_text()
    assert "| `isru` | 82.2 | × nan | **no** |" in text and r"| `erf\|hshift=2` | × | 30.0 | **no** |" in text
    assert "| `erf` | 82.6 | 50.0 | yes | 1.50 | 0.30–0.90 |" in text
    assert "train/fail agrees 3/5 · Spearman ρ 1.00 (n=3) · erf − LayerNorm -10.0 pt · 12 s of training" in text


def test_dry_run_lists_the_cells_and_runs_nothing(tmp_path, capsys):
    assert main(["calibrate", str(_file(tmp_path)), "--results", str(tmp_path / "out"), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "6 cells, 6 to run (dry run)" in err and out.count("would run") == 6     # the list: stdout, as a pipe wants
    assert not (tmp_path / "out").exists()


def test_specs_and_variants_choose_the_cells_to_train_and_the_summary_shows_them_all(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["calibrate", str(_file(tmp_path)), "--results", str(out), "--specs", "erf , ERF|HSHIFT=2.0",
                 "--variants", "B"]) == 0
    captured = capsys.readouterr()
    assert "6 cells, 2 chosen, 2 to run" in captured.err
    assert sorted(p.name.split(".")[0] for p in out.glob("*/*.json")) == ["erf", "erf__hshift_2"]
    assert {p.parent.name for p in out.glob("*/*.json")} == {"B"}
    assert captured.out.count("| `layernorm` | – | – |") == 2      # every subset row of every variant, run or not


@pytest.mark.parametrize("option, value, says", [
    ("--specs", "tanh", "'tanh' is not in this calibration file; choose from layernorm, erf, erf|hshift=2"),
    ("--specs", "erf|nope=1", "unknown transform 'nope'"), ("--specs", " , ", "no name given; choose from layernorm"),
    ("--variants", "A,C", "'C' is not in this calibration file; choose from A, B"),
])
def test_a_spec_or_variant_not_in_the_file_is_one_error_naming_the_choices(tmp_path, capsys, option, value, says):
    assert main(["calibrate", str(_file(tmp_path)), "--results", str(tmp_path / "out"), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lab calibrate: error: {option[2:]}: ") and says in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, word", [
    ({"extra": 1}, "extra"), ({"protocol": "smok"}, "smok"), ({"seeds": ["x"]}, "seeds"),
    ({"subset": ["erf", "erff"]}, "erff"), ({"subset": ["erf|hshift=7"]}, "erf|hshift=7"),
    ({"variants": {"A": ["epochz=1"]}}, "epochz"), ({"variants": {"a/b": TINY}}, "a/b"),
    ({"base": "nowhere.yaml"}, "nowhere.yaml"),
])
def test_bad_file_content_is_one_clear_error(tmp_path, changes, word):
    with pytest.raises(ValueError, match=word.replace("|", r"\|")):
        calibrate.calibrate(_file(tmp_path, **changes), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_yaml_syntax_error_is_one_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "round.yaml"
    path.write_text("protocol: smoke\nsubset: [erf\nvariants: {A: []}\n")
    assert main(["calibrate", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"lab calibrate: error: {path}: not valid YAML (line 3, column 9): expected ',' "
                                       "or ']', but got ':'\n")


@pytest.mark.parametrize("old, new, says", [
    (None, "seed: [0\n", "not valid YAML (line 2, column 1)"),
    (None, "- seed: 0\n", "expected the settings of a protocol file"),
    ("  lr: 5.0e-3", "  lr: fast", "config key 'optim.lr': 'fast' is not a float like 0.005"),
    ("\nmodel:", "\nmodle:", "unknown key 'modle.name' (did you mean 'model.name'?)"),
    ("  epochs:", "  epocs:", "unknown key 'schedule.epocs' (did you mean 'schedule.epochs'?)"),
    ("  depth: 3", "", "missing key(s) 'model.depth', which"),
    ("  depth: 3", "  depth: -3", "config key 'model.depth': -3 is out of range"),
])
def test_a_base_is_checked_as_the_protocol_file_it_replaces(tmp_path, capsys, old, new, says):
    """Same keys, same types and ranges as configs/protocols/PROTOCOL.yaml: a misspelt key passed --dry-run and every
    cell raised KeyError; a syntax error, a list or a wrong type was a traceback."""
    smoke = (config.PROTOCOL_DIR / "smoke.yaml").read_text()
    (tmp_path / "old-smoke.yaml").write_text(new if old is None else smoke.replace(old, new, 1))
    path = _file(tmp_path, base="old-smoke.yaml")
    assert main(["calibrate", str(path), "--results", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lab calibrate: error: {path}: base: ") and says in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_input_scales_measure_what_alpha0_multiplies():
    """One std per point-wise layer (2 per block + the final one) of the input before α: the first layer's input, the
    patch embedding, does not depend on α0; the later ones do (through the blocks)."""
    base, scaled = calibrate.input_scales("smoke", images=4), calibrate.input_scales("smoke", ["alpha0=2"], images=4)
    assert len(base) == 2 * config.load("smoke")["model"]["depth"] + 1 and all(s > 0 for s in base)
    assert base[0] == scaled[0] and base[1:] != scaled[1:]


def test_the_gpu_session_script_calls_lab_as_its_cli_parses():
    """ablations/gpu-session.sh runs on a device no test reaches: at least its lab commands and their settings must
    stay valid."""
    import shlex
    from lab.cli import build_parser
    script = (Path(calibrate.__file__).parent.parent / "ablations" / "gpu-session.sh").read_text().replace("\\\n", " ")
    script = script.replace('"$(deadline)"', "60")     # the seconds the stage has left, as the shell would fill them in
    script = script.replace('"${sets[@]}"', "--set epochs=1")    # the grid's overrides, given
    script = script.replace('"${mps[@]}"', "--mps").replace('"$@"', "--mps")    # MPS on, as by default
    script = script.replace('"${TMPDIR:-/tmp}/preflight"', "/tmp/preflight")
    script = script.replace(' > >(tee "$out/preflight.out") 2>&1', "")      # the preflight's output kept
    calls = [shlex.split(line.split("-m lab", 1)[1].split(";;")[0].split("&&")[0]) for line in script.splitlines()
             if "python3 -m lab " in line and not line.lstrip().startswith("#")]
    assert {c[0] for c in calls} == {"bench", "calibrate", "sweep", "fidelity"}
    for argv in calls:
        args = build_parser().parse_args(argv)
        if argv[0] == "calibrate":
            calibrate.load(args.file)
        if argv[0] in ("train", "sweep"):
            config.load(args.protocol, args.set)          # every override valid for the protocol


@pytest.mark.slow
def test_the_check_stages_tests_run_under_a_pytest_without_xdist():
    """The check stage runs the device image's pytest, whose packages name no pytest-xdist (`make test` uses it): the
    stage's selection loads the suite's conftest without it and finds the GPU cases."""
    import shlex
    import subprocess
    import sys
    script = (ROOT / "ablations" / "gpu-session.sh").read_text().replace("\\\n", " ")
    [line] = [line for line in script.splitlines() if "python3 -m pytest" in line]
    argv = shlex.split(line.split("-m pytest", 1)[1].split("#")[0])
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "--collect-only", *argv, "-v"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_compiled_layer_matches_eager[gpu]" in done.stdout and "test_generated_kernels" in done.stdout


def _stage(tmp_path, stage: str, fake_python: str, **env) -> tuple[list, dict]:
    """The command line and environment that run ablations/gpu-session.sh STAGE in tmp_path, with a stand-in for the
    device's python3 (a bash script body; "$*" holds its arguments)."""
    import os
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/bash\n{fake_python}\n")
    fake.chmod(0o755)
    (tmp_path / "ablations" / "results").mkdir(parents=True)
    return (["bash", str(ROOT / "ablations" / "gpu-session.sh"), stage],
            {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
             "TMPDIR": str(tmp_path), **env})


@pytest.mark.parametrize("fails", ["under MPS", "hangs under MPS", "both ways"])
def test_the_round4_stage_tries_a_failed_preflight_again_time_sliced(tmp_path, fails):
    """Whether MPS works on the lent GPU is unknown until it runs there: a preflight that fails or hangs under MPS must
    not cost the device call, and one that fails time-sliced too must stop the stage before its 28 cells start."""
    import subprocess
    argv, env = _stage(tmp_path, "round4", f"""echo "$*" >> {tmp_path}/calls
[[ $3 == sweep && $* == *--mps* && "{fails}" == hangs* ]] && exec sleep 30
[[ $3 == sweep && ( $* == *--mps* || "{fails}" == "both ways" ) ]] && exit 1
exit 0""", PREFLIGHT_S="1")
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20)
    calls = [line.split()[2] + (" --mps" if "--mps" in line else "")
             for line in (tmp_path / "calls").read_text().splitlines()]
    assert "the preflight failed under MPS: once more time-sliced" in done.stdout
    if fails != "both ways":
        assert calls == ["sweep --mps", "sweep", "calibrate"] and done.returncode == 0, done.stdout
    else:
        assert calls == ["sweep --mps", "sweep"] and done.returncode == 1, done.stdout


@pytest.mark.parametrize("mps_says, calibrate", [
    ("MPS: daemon started (CUDA_MPS_PIPE_DIRECTORY=/tmp/x); the runs share the GPU's SMs", "calibrate --mps"),
    ("MPS: no answer within 120 s; the runs time-slice the GPU", "calibrate")])
def test_the_round4_stage_drops_mps_where_the_preflight_fell_back_to_time_slicing(tmp_path, mps_says, calibrate):
    """A preflight that passed because lab.mps gave up on the daemon: the round would wait for it again. The sweep's
    tqdm bar is drawn first, and its line is cleared with carriage returns before lab.mps's line is written; a
    compile's output follows (more than a pipe holds: a reader that stops at the line must not fail the check)."""
    import subprocess
    argv, env = _stage(tmp_path, "round4", f"""echo "$*" >> {tmp_path}/calls
[[ $3 == sweep ]] && printf '\\rtable1:   0%%|          | 0/2 [00:00<?, ?it/s]\\r%44s\\r%s\\n' '' "{mps_says}" &&
  yes "inductor: a compile log's line, as long as the lines of a compile log of the proxy's training step are" |
  head -n 3000
exit 0""")
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20)
    calls = [line.split()[2] + (" --mps" if "--mps" in line else "")
             for line in (tmp_path / "calls").read_text().splitlines()]
    assert calls == ["sweep --mps", calibrate] and done.returncode == 0, done.stdout


def test_a_stage_cut_off_by_the_device_still_brings_back_its_finished_cells(tmp_path):
    """The device kills a call at its limit, before the stage's own end: the records written until then must already
    be in $OUT/STAGE.tgz."""
    import os
    import signal
    import subprocess
    import tarfile
    import time
    record = "ablations/results/calibration/r4/erf.proxy-0-s0.json"
    argv, env = _stage(tmp_path, "round4", f"""[[ $3 == calibrate ]] || exit 0
mkdir -p {Path(record).parent} && echo {{}} > {record} && exec sleep 60""", SNAPSHOT_S="0.2")
    stage = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    packed, end = [], time.monotonic() + 15
    try:
        while record not in packed and time.monotonic() < end:
            time.sleep(0.2)
            try:
                with tarfile.open(tmp_path / "out" / "round4.tgz") as tgz:
                    packed = tgz.getnames()
            except (FileNotFoundError, tarfile.ReadError, EOFError):
                pass
        assert stage.poll() is None, "the stage ended by itself: nothing was cut off"
    finally:
        os.killpg(stage.pid, signal.SIGKILL)
        stage.wait()
    assert record in packed


def test_a_cell_where_some_seeds_failed_shows_the_others_mean():
    """The cell counts as failed (as in the tables), and the seeds that trained still show how far they got."""
    cell = ablations.Cell("", "", "erf", 82.6)
    mixed = tables.CellResult(cell, values=[70.0, 72.0], failures=["diverged"])
    ema = tables.CellResult(cell, values=[71.0, 73.0])
    assert calibrate._measured(mixed, ema, multi_seed=True) == "× diverged (1/3 seeds; trained: 71.0 ± 1.41)"
    assert calibrate._measured(tables.CellResult(cell, failures=["nan"]), ema) == "× nan"
    assert calibrate._measured(tables.CellResult(cell, values=[70.0]), ema, multi_seed=True) == "70.0, 1 seed (72.0)"
    # erf − LayerNorm over the seeds that trained, as lab fidelity reads it
    assert tables.gap(mixed, tables.CellResult(cell, values=[73.0])) == pytest.approx(-2.0)
    assert tables.gap(tables.CellResult(cell, failures=["nan"]), mixed) is None
