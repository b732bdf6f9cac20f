"""One training cell: it learns, failures are records, a SIGKILLed run resumes exactly, and DDP runs on gloo."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from stat import S_ISDIR
from types import SimpleNamespace

import pytest
import torch

import lab
from lab import cli, config, results, sweep, train

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"spec", "table", "protocol", "status", "failure", "top1", "top1_ema", "num_classes", "chance_top1",
          "history", "loss_curve", "config", "config_hash", "seed", "commit", "versions", "device", "wall_s",
          "created"}


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_smoke_cell_learns_and_writes_a_complete_record(tmp_path):
    record = train.run(config.load("smoke"), "erf", tmp_path, table="table1", progress=False)
    path = results.record_path(tmp_path, "erf", config.load("smoke"))
    saved = json.loads(path.read_text())
    assert FIELDS <= set(saved) and record["path"] == str(path)
    assert saved["status"] == "ok" and saved["failure"] is None and saved["table"] == "table1"
    assert saved["top1"] > 2.5 * saved["chance_top1"] and saved["top1_ema"] > 2 * saved["chance_top1"]
    assert saved["history"][-1]["epoch"] == 8 and set(saved["history"][-1]) == {
        "epoch", "step", "train_loss", "grad_norm_max", "val_top1", "val_top1_ema", "lr", "alpha"}
    alpha = saved["history"][-1]["alpha"]     # α of every norm layer: 2 per block + the final one, trained off α0
    assert len(alpha) == 2 * saved["config"]["model"]["depth"] + 1 and all(a != 0.5 for a in alpha)
    assert saved["loss_curve"][0][1] > saved["loss_curve"][-1][1]
    assert set(saved["versions"]) == {"python", "torch", "timm"} and saved["device"] == "cpu"
    assert not list(tmp_path.glob("*.ckpt"))
    log = results.log_path(path).read_text().splitlines()   # one line per epoch and event, as they happen
    assert log[0].split("s  ", 1)[1].startswith("start erf · smoke-") and "finished: top-1" in log[-1]
    epochs = [line for line in log if " epoch " in line]
    assert len(epochs) == 8 and "epoch 8/8 · update" in epochs[-1] and "img/s · top-1" in epochs[-1]
    # a finished cell is not trained again
    assert train.run(config.load("smoke"), "erf", tmp_path, progress=False)["created"] == saved["created"]


def test_a_derf_record_has_each_layers_learned_shift(tmp_path):
    cfg = config.load("smoke", ["schedule.epochs=1", "data.train_size=128", "data.val_size=64"])
    record = train.run(cfg, "Derf", tmp_path, progress=False)
    assert record["spec"] == "derf" and Path(record["path"]).name.startswith("derf.smoke-")
    shift = record["history"][-1]["shift"]       # s of every norm layer, trained off 0
    assert len(shift) == len(record["history"][-1]["alpha"]) == 2 * cfg["model"]["depth"] + 1
    assert any(s != 0 for s in shift)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_record_gets_the_umasks_mode_as_any_written_file_does(tmp_path, umask, mode):
    """In a shared results folder, mkstemp's 0600 left records unreadable to the others while logs were 0644."""
    old = os.umask(umask)
    try:
        results.write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_divergence_is_a_failed_record_and_exit_code_0(tmp_path, capsys):
    assert cli.main(["train", "--protocol", "smoke", "--norm", "linear", "--set", "lr=10000", "--out",
                     str(tmp_path), "--quiet"]) == 0
    [record] = results.load_records(tmp_path)
    assert record["status"] == "failed" and record["top1"] is None
    assert record["failure"]["kind"] in ("nan", "diverged") and record["failure"]["reason"]
    assert record["failure"]["step"] < 20 and "failed at step" in capsys.readouterr().out
    assert f"failed: {record['failure']['kind']} at update" in results.log_path(Path(record["path"])).read_text()
    assert "recorded earlier" not in capsys.readouterr().out
    assert cli.main(["train", "--protocol", "smoke", "--norm", "linear", "--set", "lr=10000", "--out",
                     str(tmp_path), "--quiet"]) == 0                   # the same command again: the record as it is
    assert capsys.readouterr().out.endswith(f"-> {record['path']} (recorded earlier, not trained again)\n")


def test_a_crash_is_the_last_line_of_the_log(tmp_path, monkeypatch):
    def crash(self, epoch):
        raise RuntimeError("out of memory (simulated)")
    monkeypatch.setattr(train.Trainer, "_end_epoch", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        train.run(config.load("smoke"), "erf", tmp_path, progress=False)
    [log] = tmp_path.glob("*.log")
    assert "stopped at update 16: RuntimeError: out of memory (simulated)" in log.read_text().splitlines()[-1]


def test_a_run_that_never_leaves_chance_is_failed_no_learning(tmp_path):
    record = train.run(config.load("smoke", ["lr=0", "epochs=2"]), "erf", tmp_path, progress=False)
    assert record["status"] == "failed" and record["failure"]["kind"] == "no_learning"
    assert "chance" in record["failure"]["reason"] and record["top1"] is not None
    best, threshold, chance, margin = map(float, re.fullmatch(
        r"best top-1 ([\d.]+)% never above ([\d.]+)% \(chance ([\d.]+)% \+ 3 sigma = ([\d.]+) points\)",
        record["failure"]["reason"]).groups())
    assert best <= threshold == pytest.approx(chance + margin, abs=0.01) and chance == 10.0


@pytest.mark.parametrize("epochs, warns", [(1, True), (2, False)])
def test_a_run_shorter_than_its_warmup_says_its_learning_rate_never_decays(tmp_path, epochs, warns):
    """smoke warms up for 1 epoch: epochs=1 (to try a recipe) is all warmup, which timm's scheduler does not say."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _trainer(tmp_path, [f"epochs={epochs}"])
    said = [str(w.message) for w in seen if "whole run is warmup" in str(w.message)]
    assert said == ([f"schedule.warmup_epochs (1) >= schedule.epochs ({epochs}): the whole run is warmup, the learning "
                     "rate peaks at its last update and never decays"] if warns else [])


def test_imagenet_folder_cell_trains_end_to_end(jpeg_folder, tmp_path):
    cfg = config.load("smoke", [f"data_path={jpeg_folder}", "data.kind=imagefolder", "data.num_classes=3",
                                "data.workers=0", "batch_size=6", "epochs=2", "aug.auto_augment=rand-m9-mstd0.5-inc1",
                                "aug.reprob=0.25", "aug.mixup=0.8", "aug.cutmix=1.0"])
    record = train.run(cfg, "erf", tmp_path / "out", progress=False)
    assert record["num_classes"] == 3 and record["history"][-1]["step"] == 6 and record["top1"] is not None
    assert record["images"] == {"train": 18, "val": 6}      # the folder's, not the config's data.train_size


@pytest.mark.parametrize("loss, gnorm, kind, words", [
    (float("nan"), 1.0, "nan", "non-finite loss"), (2.0, float("inf"), "nan", "non-finite gradient norm"),
    (2.0, 3e5, "diverged", "grad norm 3e+05 > limit 1e+04"), (7.5, 1.0, "diverged", "loss 7.5 > 3 x initial 2.3"),
    (6.0, 9e3, None, None)])
def test_failure_rules(loss, gnorm, kind, words):
    trainer = SimpleNamespace(cfg=config.load("smoke"), state={"initial_loss": 2.3})
    verdict = train.Trainer._check(trainer, 5, loss, gnorm)
    assert verdict is None if kind is None else (verdict["kind"] == kind and words in verdict["reason"])


@pytest.mark.parametrize("argv, word", [(["--protocol", "nonesuch", "--norm", "erf"], "nonesuch"),
                                        (["--protocol", "smoke", "--norm", "erff"], "erff"),
                                        (["--protocol", "smoke", "--norm", "erf", "--set", "lrr=1"], "lrr"),
                                        (["--protocol", "smoke", "--norm", "erf", "--set", "compile_mode=fast"],
                                         "reduce-overhead")])
def test_bad_input_exits_non_zero_naming_it(tmp_path, capsys, argv, word):
    assert cli.main(["train", *argv, "--out", str(tmp_path)]) != 0
    assert word in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_a_table_is_one_of_the_papers_or_a_table_of_your_own(tmp_path, capsys):
    """--table is only recorded, and a record of 'table9' belongs to no table."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--protocol", "smoke", "--norm", "erf", "--table", "table9", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "unknown table 'table9'" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("norm, ok", [("sin", False), ("erf|hshift=3", False), ("erf|vshift=0.5", True),
                                      ("layernorm", True), ("ERF|VSHIFT=.5", True)])   # a cell, spelled otherwise
def test_a_norm_not_in_its_table_is_refused_before_training(tmp_path, monkeypatch, capsys, norm, ok):
    """--table names the table a cell belongs to: a norm it has no cell for is an error listing its cells (the
    LayerNorm baseline is every table's)."""
    monkeypatch.setattr(train, "run", lambda cfg, norm, out, **_: {"failure": None, "top1": 1.0, "top1_ema": 1.0,
                                                                   "spec": norm, "protocol": "smoke", "path": out})
    code = cli.main(["train", "--protocol", "smoke", "--norm", norm, "--table", "table1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert (code == 0) == ok and not any(tmp_path.iterdir())
    if not ok:
        assert f"{norm!r} is not a cell of table1" in err and "erf|vshift=0.5" in err


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    """compile_mode=reduce-overhead (CUDA graphs for the launch-bound proxy) is torch.compile's mode argument."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda net, mode: seen.append(mode) or net)
    cfg = config.load("smoke", ["compile=true", "compile_mode=reduce-overhead"])
    train.Trainer(cfg, "erf", tmp_path / "r.json", 0, 1, torch.device("cpu"))
    assert seen == ["reduce-overhead"]


def test_timed_checkpoints_follow_rank_0s_clock_and_see_settled_updates(tmp_path, monkeypatch):
    """A timed checkpoint is due when rank 0's clock says so (ranks that disagree would deadlock in _save), and it is
    taken only when every queued update has been judged and booked."""
    cfg = config.load("smoke", ["epochs=1", "checkpoint.every_minutes=1e-9", "checkpoint.every_steps=0"])
    trainer = train.Trainer(cfg, "erf", tmp_path / "r.json", 0, 1, torch.device("cpu"))
    queued, saves = [], []
    update = trainer._update
    monkeypatch.setattr(trainer, "_update", lambda step, micro: queued.append(step) or update(step, micro))
    monkeypatch.setattr(trainer, "_save", lambda: saves.append((trainer.state["step"], len(queued))))
    trainer.fit(False, None)
    assert len(saves) >= trainer.steps_per_epoch // 2 and all(settled == n for settled, n in saves)
    _, micro = next(trainer.data.train_batches(0))
    assert update(0, micro)[2] > 0                  # rank 0: due (every_minutes=1e-9)
    trainer.rank = 1
    assert update(0, micro)[2] == 0                 # any other rank's clock is not asked
    trainer.rank, trainer.cfg["checkpoint"]["every_minutes"] = 0, 0
    assert update(0, micro)[2] == 0                 # 0 minutes: off, as 0 steps is


@pytest.mark.parametrize("visible, local_rank, slurm, chosen", [(8, 3, False, "cuda:3"), (1, 3, True, "cuda:0"),
                                                                 (1, 3, False, "1 CUDA GPU(s)"),
                                                                 (2, 3, True, "2 CUDA GPU(s)")])
def test_each_rank_takes_its_own_gpu_or_the_one_it_is_given(monkeypatch, visible, local_rank, slurm, chosen):
    """cuda:LOCAL_RANK on a node whose ranks see all its GPUs; cuda:0 for a SLURM task bound to one GPU
    (gpus_per_task), which it sees as cuda:0; an error for a rank beyond the GPUs it sees, as torchrun's second rank
    on a one-GPU machine is (not a second run on cuda:0, which NCCL refuses at the first collective)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    if slurm:
        monkeypatch.setenv("SLURM_JOB_ID", "7")
    else:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if chosen.startswith("cuda"):
        assert train.resolve_device("auto") == train.resolve_device("cuda") == torch.device(chosen)
    else:
        with pytest.raises(ValueError, match=re.escape(chosen)):
            train.resolve_device("cuda")


@pytest.mark.parametrize("device, compiled, warned", [("auto", False, True), ("auto", True, True),
                                                      ("cpu", False, False)])
def test_device_auto_without_a_gpu_says_the_run_trains_on_the_cpu(tmp_path, monkeypatch, device, compiled, warned):
    """...and that compiling (the proxy's default) costs minutes there before the first update."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config.load("smoke", [f"device={device}", f"compile={str(compiled).lower()}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train.Trainer(cfg, "erf", tmp_path / "r.json", 0, 1, train.resolve_device(cfg["device"]))
    said = [str(w.message) for w in caught if "found no CUDA GPU" in str(w.message)]
    assert len(said) == warned and trainer.device.type == "cpu"
    assert [("--set compile=false" in w) for w in said] == [compiled] * warned
    assert ("protocol smoke trains on the CPU" in trainer.log_file.read_text()) is warned


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_in_the_log_and_keeps_the_config(tmp_path, monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cfg = config.load("smoke", ["precision=bf16"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train.Trainer(cfg, "erf", tmp_path / "r.json", 0, 1, torch.device("cpu"))
    said = [str(w.message) for w in caught if "precision bf16 on this CPU" in str(w.message)]
    assert len(said) == (0 if native else 1) and trainer.cfg["precision"] == "bf16"
    assert ("--set precision=fp32" in trainer.log_file.read_text()) is not native


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_adamw_is_fused_and_a_cell_trains(tmp_path):
    cfg = config.load("smoke", ["device=cuda", "precision=bf16"])
    trainer = train.Trainer(cfg, "erf", tmp_path / "r.json", 0, 1, torch.device("cuda"))
    assert trainer.optimizer.defaults["fused"]
    assert train.run(cfg, "erf", tmp_path, progress=False)["status"] == "ok"


def test_a_cell_another_process_is_training_is_refused_not_trained_twice(tmp_path, monkeypatch):
    """Two sweeps on one results folder, or a SLURM job submitted again while the first trains the cell: the second
    is told, instead of training the cell beside the first; a DDP run's rank 0 asks for all its ranks."""
    cfg = config.load("smoke", ["epochs=1"])
    path = results.record_path(tmp_path, "erf", cfg)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from lab import train; "
                               "lock = train._sole_trainer(Path(sys.argv[1]), 0, 1); lock.__enter__(); "
                               "print(flush=True); time.sleep(60)", str(path)], stdout=subprocess.PIPE, env=_env(),
                              cwd=ROOT)
    try:
        holder.stdout.readline()        # the other process holds the cell's lock
        with pytest.raises(ValueError, match="another process is training this cell now"):
            train.run(cfg, "erf", tmp_path, progress=False)
        [cell] = sweep.plan(["erf"], "smoke", tmp_path, overrides=["epochs=1"])
        assert sweep._run_cell(cell) == ("error", f"{path.name}: another process is training this cell now (its log: "
                                                  f"{results.log_path(path)}); run again once it has finished")
        with train._sole_trainer(results.record_path(tmp_path, "tanh", cfg), 0, 1):
            pass                        # one lock file, each cell its own byte of it: another cell is free
        told = []
        monkeypatch.setattr(train.dist, "broadcast_object_list",
                            lambda objs, src, device=None: told.append((list(objs), src)))
        with pytest.raises(train.CellBusy), train._sole_trainer(path, 0, 2):
            pass                        # rank 0 of a DDP run finds the cell held...
        assert told == [([True, None, None], 0)]    # ...and tells its other ranks, which do not ask the lock:
        monkeypatch.setattr(train.dist, "broadcast_object_list",
                            lambda objs, src, device=None: objs.__setitem__(0, True))
        with pytest.raises(train.CellBusy), train._sole_trainer(results.record_path(tmp_path, "tanh", cfg), 1, 2):
            pass                        # (tanh's byte is free, so only rank 0's word can stop rank 1)
        done = {"spec": "tanh", "status": "ok"}     # rank 0 read the record; rank 1 does not see it yet
        monkeypatch.setattr(train.dist, "broadcast_object_list",
                            lambda objs, src, device=None: objs.__setitem__(slice(None), [False, done, None]))
        with train._sole_trainer(results.record_path(tmp_path, "tanh", cfg), 1, 2) as record:
            assert record == done
        cut = results.record_path(tmp_path, "tanh", cfg)
        cut.write_text('{"spec": "tanh", "sta')      # rank 0 cannot read the record: no rank waits for it
        monkeypatch.setattr(train.dist, "broadcast_object_list",
                            lambda objs, src, device=None: told.append(list(objs)))
        with pytest.raises(ValueError, match="not readable JSON"), train._sole_trainer(cut, 0, 2):
            pass
        assert told[-1][:2] == [False, None] and "not readable JSON" in told[-1][2]
        cut.unlink()
    finally:
        holder.kill()
        holder.wait()
    assert not path.exists() and not results.log_path(path).exists()
    assert train.run(cfg, "erf", tmp_path, progress=False)["status"] in ("ok", "failed")      # once it has let go
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cells.lock", path.name, results.log_path(path).name]


@pytest.mark.parametrize("content", [b"", b"garbage\n", None])
def test_an_unreadable_checkpoint_or_record_is_named_with_the_fix(tmp_path, content):
    cfg = config.load("smoke", ["epochs=1"])
    path = results.record_path(tmp_path, "erf", cfg)
    if content is None:      # a record cut off mid-write by a full disk, say
        path.write_text('{"spec": "erf", "status": "ok", "top')
        culprit, fix = f"record {path}", "delete it to train its cell again"
    else:
        results.checkpoint_path(path).write_bytes(content)
        culprit, fix = f"checkpoint {results.checkpoint_path(path)}", "delete it to start the cell over"
    with pytest.raises(ValueError, match="cannot be read|is not readable JSON") as err:
        train.run(cfg, "erf", tmp_path, progress=False)
    assert str(err.value).startswith(culprit) and str(err.value).endswith(fix)


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A stop during torch.save leaves neither a half checkpoint nor its temporary file (gigabytes for ViT-B)."""
    trainer = train.Trainer(config.load("smoke"), "erf", tmp_path / "r.json", 0, 1, torch.device("cpu"))
    trainer._save()
    saved = trainer.ckpt.read_bytes()

    def stopped(blob, f):
        f.write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        trainer._save()
    assert trainer.ckpt.read_bytes() == saved and [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_a_half_checkpoint_of_a_killed_process_is_removed_when_the_cell_starts_again(tmp_path):
    """A SIGKILL during torch.save leaves its temporary file (each writer's name is its own), of the checkpoint or of
    the kept weights: the next run of the cell removes it rather than let one pile up per kill."""
    trainer = train.Trainer(config.load("smoke", ["epochs=1"]), "erf", tmp_path / "r.json", 0, 1, torch.device("cpu"))
    half = trainer.ckpt.with_name(f".{trainer.ckpt.name}.4242.0badc0de.tmp")
    half_weights = tmp_path / f".{results.weights_path(trainer.path).name}.4242.0badc0de.tmp"
    other = tmp_path / f".other.{trainer.ckpt.name}.1.2.tmp"      # not this cell's
    for path in (half, half_weights, other):
        path.write_bytes(b"half")
    trainer.fit(False, None)
    assert not half.exists() and not half_weights.exists() and other.exists()


@pytest.mark.slow
def test_sigkill_and_rerun_ends_with_exactly_the_uninterrupted_metrics(tmp_path):
    overrides = ["epochs=4", "checkpoint.every_steps=3"]
    cfg = config.load("smoke", overrides)
    clean = train.run(cfg, "erf", tmp_path / "clean", progress=False)
    out = tmp_path / "killed"
    ckpt = results.checkpoint_path(results.record_path(out, "erf", cfg))
    argv = [sys.executable, "-m", "lab", "train", "--protocol", "smoke", "--norm", "erf", "--out", str(out),
            "--quiet", *(a for o in overrides for a in ("--set", o))]
    proc = subprocess.Popen(argv, env=_env(), cwd=ROOT)
    try:
        deadline = time.time() + 60
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert ckpt.exists() and not results.load_records(out), "killed too late: no checkpoint, or already done"
    assert torch.load(ckpt, weights_only=False)["state"]["step"] > 0
    resumed = train.run(cfg, "erf", out, progress=False)
    for key in ("status", "top1", "top1_ema", "history", "loss_curve"):
        assert resumed[key] == clean[key], key
    assert not ckpt.exists()
    log = results.log_path(Path(resumed["path"])).read_text()     # the killed attempt's lines, then the resumed one's
    assert log.count("start erf") == 2 and "resumed at update" in log
    assert log.splitlines()[-1].split("s  ", 1)[1].startswith("finished" if resumed["status"] == "ok" else "failed")


@pytest.mark.slow
def test_two_process_gloo_ddp_run(tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "lab", "train", "--protocol", "smoke", "--norm", "erf", "--out", str(tmp_path), "--quiet",
            "--set", "checkpoint.keep_weights=true"]
    done = subprocess.run(argv, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    [record] = results.load_records(tmp_path)
    assert record["status"] == "ok" and record["world_size"] == 2 and record["top1"] > 2 * record["chance_top1"]
    assert done.stdout.count("top-1") == 1          # only rank 0 reports
    assert lab.trained_model(record).head.weight.shape == (record["num_classes"], record["config"]["model"]["embed_dim"])


def test_the_commit_is_dirty_for_changed_content_not_for_a_lost_file_mode(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    script = tmp_path / "run.sh"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    git("init", "-q")
    git("add", "run.sh")
    git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    script.chmod(0o644)                 # as a copy to the GPU machine may leave it
    (tmp_path / "untracked.json").write_text("{}")      # records written beside the code
    assert results.git_commit(tmp_path) == head
    script.write_text("echo changed\n")
    assert results.git_commit(tmp_path) == f"{head}+dirty"


# --- the recipe reaches the optimizer, the failure limits are the config's, and the record/resume keep what they owe --
def test_a_stop_asked_mid_run_saves_at_the_next_update_and_a_rerun_ends_as_if_uninterrupted(tmp_path, monkeypatch):
    """STOP (a SLURM task's time-limit signal sets it) makes the run save once the update in flight is booked, stop
    with Stopped, and resume from there when run again, to exactly the uninterrupted metrics."""
    import threading
    cfg = config.load("smoke", ["epochs=2", "checkpoint.every_minutes=0"])
    clean = train.run(cfg, "erf", tmp_path / "clean", progress=False)
    monkeypatch.setattr(train, "STOP", threading.Event())
    update = train.Trainer._update
    monkeypatch.setattr(train.Trainer, "_update",
                        lambda self, step, micro: (step == 5 and train.STOP.set()) or update(self, step, micro))
    out = tmp_path / "stopped"
    with pytest.raises(train.Stopped, match="checkpoint at update 7 of 32"):
        train.run(cfg, "erf", out, progress=False)
    path = results.record_path(out, "erf", cfg)
    assert not path.exists() and torch.load(results.checkpoint_path(path), weights_only=False)["state"]["step"] == 7
    assert "stopped at update 7: Stopped: asked to stop" in results.log_path(path).read_text()
    train.STOP.clear()
    resumed = train.run(cfg, "erf", out, progress=False)
    for key in ("status", "top1", "top1_ema", "history", "loss_curve"):
        assert resumed[key] == clean[key], key
    late = tmp_path / "late"            # asked during the last updates: the run has nothing left but its record
    monkeypatch.setattr(train.Trainer, "_update",
                        lambda self, step, micro: (step == 30 and train.STOP.set()) or update(self, step, micro))
    assert train.run(cfg, "erf", late, progress=False)["top1"] == clean["top1"]
    assert "checkpoint at" not in results.log_path(results.record_path(late, "erf", cfg)).read_text()


def _trainer(tmp_path, overrides=(), spec="erf", name="r.json"):
    return train.Trainer(config.load("smoke", list(overrides)), spec, tmp_path / name, 0, 1, torch.device("cpu"))


def _grads_at_step(trainer):
    """Record the gradients the optimizer steps with (after accumulation, unscaling and clipping)."""
    seen, step = [], trainer.optimizer.step

    def spy(*args, **kwargs):
        seen.append([p.grad.clone() for p in trainer.model.parameters()])
        return step(*args, **kwargs)
    trainer.optimizer.step = spy
    return seen


def test_micro_batches_make_the_same_update_as_the_whole_batch(tmp_path):
    """optim.micro_batch is not hashed because accumulating K micro-batches is one whole-batch update: the same loss,
    gradient norm and gradients reach the optimizer (each micro-batch's loss divided by K), and the parameters after
    the step agree. (AdamW's first step is about lr x sign(gradient): float noise flips the step of entries whose
    gradient is ~eps, and a gradient K times too large would move the parameters the same; the gradients tell.)"""
    overrides = ["epochs=1", "warmup_epochs=0", "checkpoint.every_minutes=0"]     # lr > 0 at update 0
    whole = _trainer(tmp_path, overrides, name="whole.json")
    split = _trainer(tmp_path, [*overrides, "optim.micro_batch=16"], name="split.json")
    _, [(x, y)] = next(whole.data.train_batches(0))
    _, own = next(split.data.train_batches(0))
    assert len(own) == 4 and all(len(xs) == 16 for xs, _ in own)        # the config reaches the data plan
    for a, b in zip(whole.model.parameters(), split.model.parameters()):
        assert torch.equal(a, b)                                       # same seed, same start
    with torch.no_grad():
        whole.model.train()
        expected_loss = whole.criterion(whole.model(x), y).item()      # the whole batch's mean loss
    got_whole, got_split = _grads_at_step(whole), _grads_at_step(split)
    done_whole = whole._update(0, [(x, y)]).tolist()
    done_split = split._update(0, [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]).tolist()
    assert done_whole[0] == pytest.approx(expected_loss, rel=1e-5)
    assert done_split[0] == pytest.approx(expected_loss, rel=1e-5)             # reported loss: the batch mean
    assert done_split[1] == pytest.approx(done_whole[1], rel=1e-4)             # gradient norm of the batch mean
    [g_whole], [g_split] = got_whole, got_split
    for (name, _), a, b in zip(whole.model.named_parameters(), g_whole, g_split):
        assert torch.allclose(b, a, rtol=1e-3, atol=1e-4 * a.abs().max().item() + 1e-12), name
    for (name, a), b, g in zip(whole.model.named_parameters(), split.model.parameters(), g_whole):
        sure = g.abs() > 100 * whole.cfg["optim"]["eps"]        # the same step wherever the gradient is not ~0
        assert torch.allclose(a[sure], b[sure], rtol=0, atol=1e-6), name


@pytest.mark.parametrize("factor, kind", [(1.01, "diverged"), (0.99, None)])
def test_the_grad_norm_limit_is_failure_max_grad_norm_itself(factor, kind):
    cfg = config.load("smoke")
    limit = cfg["failure"]["max_grad_norm"]
    trainer = SimpleNamespace(cfg=cfg, state={"initial_loss": 2.3})
    verdict = train.Trainer._check(trainer, 5, 2.3, factor * limit)
    assert (verdict and verdict["kind"]) == kind


def test_weight_decay_reaches_the_optimizer_for_matrices_only(tmp_path):
    trainer = _trainer(tmp_path)
    decay = trainer.cfg["optim"]["weight_decay"]
    assert decay > 0
    group_of = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    skip = trainer.model.no_weight_decay()
    for name, p in trainer.model.named_parameters():
        expected = 0.0 if p.ndim <= 1 or name in skip else decay     # norms, biases, α, tokens: none
        assert group_of[id(p)]["weight_decay"] == expected, name
    assert any(g["weight_decay"] == decay for g in trainer.optimizer.param_groups)


def test_lr_warms_up_linearly_then_follows_a_cosine_over_the_remaining_updates(tmp_path):
    trainer = _trainer(tmp_path)
    o, s = trainer.cfg["optim"], trainer.cfg["schedule"]
    spe = 1024 // 64                             # smoke: 1024 train images, batches of 64
    total, warmup = s["epochs"] * spe, round(s["warmup_epochs"] * spe)
    assert (trainer.steps_per_epoch, trainer.total, warmup) == (16, 128, 16)
    lr, lo, w0 = o["lr"], s["min_lr"], s["warmup_lr"]

    def by_hand(k):
        if k < warmup:
            return w0 + k * (lr - w0) / warmup
        return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))

    for k in (0, 1, 8, 15, 16, 40, 72, 100, 127):
        trainer.scheduler.step_update(k)
        for g in trainer.optimizer.param_groups:
            assert g["lr"] == pytest.approx(by_hand(k), rel=1e-9, abs=1e-12), k
    assert by_hand(0) == w0 and by_hand(16) == lr and by_hand(127) < 2 * lo     # the shape checked above


def test_clip_grad_clips_the_gradient_the_optimizer_steps_with(tmp_path):
    clip = 0.05
    trainer = _trainer(tmp_path, [f"optim.clip_grad={clip}", "checkpoint.every_minutes=0"])
    seen = _grads_at_step(trainer)
    _, micro = next(trainer.data.train_batches(0))
    raw = trainer._update(0, micro)[1].item()             # the norm before clipping (the failure verdict reads it)
    [grads] = seen
    stepped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert raw > 2 * clip and stepped == pytest.approx(clip, rel=1e-3)


def test_the_record_reports_the_last_evaluations_raw_and_ema_top1_apart(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.state["step"] = trainer.total
    trainer.state["history"] = [{"epoch": 1, "step": 16, "val_top1": 31.0, "val_top1_ema": 12.5},
                                {"epoch": 2, "step": 32, "train_loss": 1.0},
                                {"epoch": 3, "step": 48, "val_top1": 61.0, "val_top1_ema": 47.5},
                                {"epoch": 4, "step": 64, "train_loss": 0.9}]
    record = trainer._finish("table1")
    assert record["status"] == "ok" and (record["top1"], record["top1_ema"]) == (61.0, 47.5)
    saved = json.loads(Path(record["path"]).read_text())
    assert (saved["top1"], saved["top1_ema"]) == (61.0, 47.5)


def test_a_resume_after_a_finished_epoch_keeps_its_history(tmp_path, monkeypatch, capsys):
    cfg = config.load("smoke", ["epochs=2", "checkpoint.every_steps=16"])     # a checkpoint at each epoch's end
    first = tmp_path / "epoch1.ckpt"
    save = train.Trainer._save

    def keep_first(self):
        save(self)
        if not first.exists():
            first.write_bytes(self.ckpt.read_bytes())
    monkeypatch.setattr(train.Trainer, "_save", keep_first)
    clean = train.run(cfg, "erf", tmp_path, progress=False)
    monkeypatch.setattr(train.Trainer, "_save", save)
    path = Path(clean["path"])
    assert torch.load(first, weights_only=False)["state"]["step"] == 16
    path.unlink()
    results.checkpoint_path(path).write_bytes(first.read_bytes())        # as if stopped after epoch 1
    resumed = train.run(cfg, "erf", tmp_path, progress=True)
    assert f"erf: resumed at update 16 of 32 from {results.checkpoint_path(path)}" in capsys.readouterr().err
    assert [h["epoch"] for h in resumed["history"]] == [1, 2] and resumed["steps"] == 32
    assert resumed["history"][0] == clean["history"][0]
    for key in ("top1", "top1_ema", "loss_curve"):
        assert resumed[key] == clean[key], key


@pytest.mark.parametrize("other", [{"seed": 1}, {"spec": "tanh"}, {"overrides": ["lr=1e-3"]}])
def test_a_checkpoint_of_another_run_is_refused_not_resumed(tmp_path, other):
    _trainer(tmp_path)._save()
    cfg = config.load("smoke", [*other.get("overrides", []), f"seed={other.get('seed', 0)}"])
    trainer = train.Trainer(cfg, other.get("spec", "erf"), tmp_path / "r.json", 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="belongs to another run"):
        trainer._resume()
    assert trainer.state["step"] == 0


@pytest.mark.parametrize("world", [1, 2])
def test_a_finished_failed_record_is_returned_not_trained_again(tmp_path, monkeypatch, world):
    """A failure is a result: rerunning the cell (alone or as one rank of a DDP run) returns the failed record."""
    cfg = config.load("smoke")
    path = results.record_path(tmp_path, "erf", cfg)
    failed = {"spec": "erf", "status": "failed", "failure": {"step": 3, "kind": "diverged", "reason": "r"},
              "top1": None, "created": "earlier"}
    path.write_text(json.dumps(failed))
    monkeypatch.setattr(train, "_init_distributed", lambda: (0, world, False))

    def no_training(*args, **kwargs):
        raise AssertionError("trained a finished cell again")
    monkeypatch.setattr(train, "Trainer", no_training)
    record = train.run(cfg, "erf", tmp_path, progress=False)
    assert record["status"] == "failed" and record["created"] == "earlier"
    assert json.loads(path.read_text()) == failed


def test_no_learning_reads_the_best_of_raw_and_ema_top1(tmp_path, monkeypatch):
    """A run whose raw top-1 stays at chance while its EMA learned (or the reverse) has learned: not no_learning."""
    monkeypatch.setattr(train, "git_commit", lambda: "abc")
    trainer = _trainer(tmp_path)
    assert trainer.data.num_classes == 10           # chance 10 %, + 3 sigma of 500 images: about 14 %
    trainer.state["step"] = trainer.total
    for raw, ema, kind in ((10.0, 40.0, None), (40.0, 10.0, None), (10.0, 11.0, "no_learning")):
        trainer.state["history"] = [{"epoch": 2, "step": 32, "val_top1": raw, "val_top1_ema": ema}]
        failure = trainer._finish("table1")["failure"]
        assert (failure and failure["kind"]) == kind, (raw, ema)


def test_one_pass_over_the_validation_set_scores_the_model_and_its_ema_each_on_its_own(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    passes, batches = [], trainer.data.val_batches
    monkeypatch.setattr(trainer.data, "val_batches", lambda size: passes.append(size) or batches(size))

    class Predicts(torch.nn.Module):
        """Always class 0, or (right=True) the right class: the validation labels in the order of its batches."""
        def __init__(self, right=False):
            super().__init__()
            self.labels = iter(torch.cat([y for _, y in batches(trainer.cfg["eval"]["batch_size"])]).tolist())
            self.right = right

        def forward(self, x):
            said = [next(self.labels) if self.right else 0 for _ in range(len(x))]
            return torch.nn.functional.one_hot(torch.tensor(said), trainer.data.num_classes).float()
    assert trainer._evaluate(Predicts(), Predicts(right=True)) == pytest.approx([10.0, 100.0]) and len(passes) == 1
    assert trainer._evaluate(Predicts(right=True), Predicts()) == pytest.approx([100.0, 10.0]) and len(passes) == 2


def test_the_loss_curve_averages_each_window_and_the_epoch_entry_the_whole_epoch(tmp_path):
    """A loss-curve point is the mean of its log_every updates (the last one's is noise), the epoch's train_loss the
    mean of all its updates, its grad_norm_max their maximum; a window cut by the epoch's end is flushed there."""
    trainer = _trainer(tmp_path, ["log_every=5"])
    trainer.checkpoint_due, trainer.epoch_mark = False, (time.time(), 0)
    losses = [2.0 + (k % 7) * 0.1 + k * 0.01 for k in range(trainer.steps_per_epoch)]
    gnorms = [1.0 + (k * 5 % 16) for k in range(trainer.steps_per_epoch)]
    for k, (loss, gnorm) in enumerate(zip(losses, gnorms)):
        assert trainer._settle(k, torch.tensor([loss, gnorm, 0.0, 0.0]))
    expected = [[end, sum(losses[end - len(w):end]) / len(w)]
                for end, w in ((5, range(5)), (10, range(5)), (15, range(5)), (16, range(1)))]
    assert [s for s, _ in trainer.state["loss_curve"]] == [s for s, _ in expected]
    for (_, got), (_, want) in zip(trainer.state["loss_curve"], expected):
        assert got == pytest.approx(want, rel=1e-6)
    trainer._end_epoch(0)                               # epoch 1 of smoke: not evaluated (every 2 epochs)
    [entry] = trainer.state["history"]
    assert entry["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert entry["grad_norm_max"] == max(gnorms) and "val_top1" not in entry


def test_a_ddp_update_reports_the_mean_of_the_ranks_loss_and_grad_norm(tmp_path, monkeypatch):
    """With N ranks the loss and gradient norm the failure verdict and the record read are the ranks' mean, not their
    sum (N x the loss curve, and a grad-norm limit met N x too early), and a stop asked of one rank is every rank's.
    One process, another rank faked by all_reduce."""
    trainer = _trainer(tmp_path, ["checkpoint.every_minutes=1e-9"])
    trainer.mark = time.time() - 1
    other = torch.tensor([3.0, 7.0, 0.0, 1.0])      # rank 1's (loss, grad norm, not due, asked to stop)
    seen = []

    def all_reduce(t):
        seen.append(t.clone())
        t += other
    monkeypatch.setattr(train.dist, "all_reduce", all_reduce)
    trainer.world = 2
    _, micro = next(trainer.data.train_batches(0))
    values = trainer._update(0, micro)
    [own] = seen
    assert own[2] == 1 and own[3] == 0 and torch.allclose(values, (own + other) / 2)
    assert values[2] > 0                            # rank 0's clock says due: due on every rank
    assert values[3] > 0                            # rank 1 was asked to stop: every rank stops


def test_kept_weights_rebuild_the_model_and_the_ema_that_scored_the_record(tmp_path, capsys, monkeypatch):
    """checkpoint.keep_weights leaves a timm checkpoint beside the record; lab.trained_model rebuilds the model from
    the record and scores the record's top-1 with them, and the EMA's top-1 with the EMA's weights."""
    from lab import data
    from timm.models import load_checkpoint
    cfg = config.load("smoke", ["checkpoint.keep_weights=true"])
    write_record = train.write_json_atomic

    def weights_first(path, record):            # the record marks the cell done: its weights must be there by then
        assert results.weights_path(path).exists()
        return write_record(path, record)
    monkeypatch.setattr(train, "write_json_atomic", weights_first)
    record = train.run(cfg, "erf|hshift=0.5", tmp_path, progress=False)
    kept = results.weights_path(Path(record["path"]))
    assert record["status"] == "ok" and kept.exists() and kept.suffix == ".pth"
    assert record["weights"] == kept.name == json.loads(Path(record["path"]).read_text())["weights"]
    assert results.log_path(kept).read_text().splitlines()[-1].endswith(f"· weights kept: {kept.name}")
    assert cli.main(["train", "--protocol", "smoke", "--norm", "erf|hshift=0.5", "--set", "checkpoint.keep_weights=true",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.endswith(f"-> {record['path']} + {kept.name} (recorded earlier, not trained again)\n")
    val = data.build(cfg, torch.device("cpu"))
    scores = {}
    for ema in (False, True):
        model = lab.trained_model(record["path"], ema=ema)
        assert not model.training and lab.count_norms(model) == {"PointwiseNorm": 2 * cfg["model"]["depth"] + 1}
        with torch.no_grad():
            right = sum((model(x).argmax(-1) == y).sum().item() for x, y in val.val_batches(64))
        scores[ema] = 100.0 * right / val.val_size
    assert scores == {False: record["top1"], True: record["top1_ema"]}
    assert record["top1"] != record["top1_ema"]     # so that the two sets of weights are told apart
    timm_model = lab.trained_model(record)          # the record itself, as train.run returns it
    load_checkpoint(timm_model, str(kept), use_ema=True)       # timm's own loader reads the EMA's
    ema_model = lab.trained_model(kept, ema=True)              # the weights' path names their record
    assert all(torch.equal(a, b) for a, b in zip(timm_model.state_dict().values(), ema_model.state_dict().values()))
    elsewhere = tmp_path / "copied" / Path(record["path"]).name        # a record beside weights of another run
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({**record, "created": "2026-01-01T00:00:00+00:00"}))
    results.weights_path(elsewhere).write_bytes(kept.read_bytes())
    with pytest.raises(ValueError, match=rf"{re.escape(kept.name)} holds the weights of a run recorded at "
                                         rf"{re.escape(record['created'])}, not of "):
        lab.trained_model(elsewhere)


def test_a_run_that_kept_no_weights_says_how_to_keep_them_and_ignores_an_earlier_runs(tmp_path, capsys):
    """Weights left by an earlier run of the cell (its record deleted to train it again) are not this run's."""
    tiny = ["epochs=1", "warmup_epochs=0", "data.train_size=128", "data.val_size=64"]
    earlier = train.run(config.load("smoke", [*tiny, "checkpoint.keep_weights=true"]), "erf", tmp_path, progress=False)
    Path(earlier["path"]).unlink()
    record = train.run(config.load("smoke", tiny), "erf", tmp_path, progress=False)
    assert record["weights"] is None and results.weights_path(record["path"]).exists()
    with pytest.raises(ValueError, match=r"erf\.smoke-.*: its run kept no weights \(its config did not set "
                                         r"checkpoint.keep_weights\); to keep them, delete the record and train the "
                                         r"cell again with --set checkpoint.keep_weights=true"):
        lab.trained_model(record["path"])
    assert cli.main(["train", "--protocol", "smoke", "--norm", "erf", "--out", str(tmp_path), "--quiet",
                     *[a for o in tiny for a in ("--set", o)]]) == 0
    assert capsys.readouterr().out.endswith(f"-> {record['path']} (recorded earlier, not trained again)\n")
    with pytest.warns(UserWarning, match=r"erf\.smoke-.* was recorded earlier without its weights, and a finished "
                                         r"cell is not trained again: delete the record"):
        again = train.run(config.load("smoke", [*tiny, "checkpoint.keep_weights=true"]), "erf", tmp_path)
    assert again["created"] == record["created"]


def test_a_config_from_before_keep_weights_keeps_none(tmp_path):
    """A SLURM cell's pickled config from before the setting existed trains to its record, without weights."""
    cfg = config.load("smoke", ["epochs=1", "warmup_epochs=0", "data.train_size=128", "data.val_size=64"])
    del cfg["checkpoint"]["keep_weights"]
    assert train.run(cfg, "erf", tmp_path, progress=False)["weights"] is None and not list(tmp_path.glob("*.pth"))


def test_a_run_that_fails_with_nan_keeps_no_weights(tmp_path):
    cfg = config.load("smoke", ["epochs=1", "lr=50", "checkpoint.keep_weights=true"])
    record = train.run(cfg, "linear", tmp_path, progress=False)
    assert record["failure"]["kind"] == "nan" and record["weights"] is None and not list(tmp_path.glob("*.pth"))
    with pytest.raises(ValueError, match=r"its run kept no weights \(its run failed with nan\)"):
        lab.trained_model(record)
    with warnings.catch_warnings():             # training it again would not keep them either: no advice to
        warnings.simplefilter("error")
        assert train.run(cfg, "linear", tmp_path, progress=False)["created"] == record["created"]


def test_a_non_finite_grad_norm_in_fp32_is_nan_not_an_fp16_overflow(tmp_path):
    """Only a GradScaler (fp16) skips an overflowed step; in fp32 an infinite gradient norm at a finite loss ends the
    run as nan at that update."""
    trainer = _trainer(tmp_path)
    trainer.checkpoint_due = False
    assert not trainer.scaler.is_enabled()
    assert trainer._settle(0, torch.tensor([2.3, 1.0, 0.0, 0.0]))
    assert not trainer._settle(1, torch.tensor([2.3, float("inf"), 0.0, 0.0]))
    assert trainer.state["failure"]["kind"] == "nan" and trainer.state["failure"]["step"] == 1
    assert trainer.state["step"] == 1


def test_each_epoch_entry_holds_that_epochs_updates_only(tmp_path):
    """The second epoch's train_loss and grad_norm_max are its own, not a running mean/max since the start."""
    trainer = _trainer(tmp_path, ["log_every=4"])
    trainer.checkpoint_due, trainer.epoch_mark = False, (time.time(), 0)
    spe = trainer.steps_per_epoch
    for k in range(2 * spe):
        first = k < spe
        assert trainer._settle(k, torch.tensor([4.0 if first else 2.0, 50.0 if first else 3.0, 0.0, 0.0]))
        if k % spe == spe - 1:
            trainer._end_epoch(k // spe)
    assert [(h["train_loss"], h["grad_norm_max"]) for h in trainer.state["history"]] == [(4.0, 50.0), (2.0, 3.0)]


def test_no_learning_is_judged_on_the_val_sets_size_and_the_best_evaluation(tmp_path, monkeypatch):
    """Chance + 3 binomial sigmas of the 500 val images (14.02 % for smoke's 10 classes, not the 1024 training
    images' 12.81 %), against the best evaluation of the run, not its last."""
    monkeypatch.setattr(train, "git_commit", lambda: "abc")
    trainer = _trainer(tmp_path)
    trainer.state["step"] = trainer.total
    margin = 3 * 100 * math.sqrt(0.1 * 0.9 / 500)
    for history, kind in (([(13.5, 13.5)], "no_learning"), ([(10.0 + margin + 0.1, 10.0)], None),
                          ([(40.0, 35.0), (10.0, 10.0)], None)):
        trainer.state["history"] = [{"epoch": 2 * i + 2, "step": 32 * (i + 1), "val_top1": raw, "val_top1_ema": ema}
                                    for i, (raw, ema) in enumerate(history)]
        record = trainer._finish("table1")
        assert (record["failure"] and record["failure"]["kind"]) == kind, history
        if kind:
            assert f"never above {10.0 + margin:.2f}%" in record["failure"]["reason"]


def test_evaluation_runs_the_models_in_eval_mode(tmp_path):
    """Drop path and dropout are off when scoring (the paper protocol trains with drop path)."""
    trainer = _trainer(tmp_path)
    modes = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            modes.append(self.training)
            return torch.zeros(len(x), trainer.data.num_classes)
    models = [Spy().train(), Spy().train()]
    trainer._evaluate(*models)
    assert modes and not any(modes)


def test_each_update_runs_at_the_schedules_learning_rate_for_that_update(tmp_path):
    """Update k steps with the scheduler's lr at k: smoke's first update at warmup_lr (0), the first after warmup at
    the peak lr."""
    trainer = _trainer(tmp_path, ["checkpoint.every_minutes=0"])
    lrs = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: lrs.append(trainer._lr()) or step(*a, **k)
    _, micro = next(trainer.data.train_batches(0))
    for k in (0, 16):
        trainer._update(k, micro)
    assert lrs == [trainer.cfg["schedule"]["warmup_lr"], trainer.cfg["optim"]["lr"]]


def test_ranks_start_from_the_same_weights_with_their_own_augmentation_streams(tmp_path):
    """Every rank builds the same model (seeded alike), then draws its augmentations from a stream of its own (else
    all ranks would crop and flip their shards alike)."""
    streams, weights = [], []
    for rank in (0, 1):
        trainer = train.Trainer(config.load("smoke"), "erf", tmp_path / f"r{rank}.json", rank, 1, torch.device("cpu"))
        streams.append(torch.get_rng_state())
        weights.append(trainer.model.state_dict())
    assert all(torch.equal(a, weights[1][k]) for k, a in weights[0].items())
    assert not torch.equal(*streams)


def test_the_first_updates_ema_is_the_model_itself(tmp_path):
    """The EMA warms up with the update counter (timm: decay 0 at the first updates), so its early top-1 is not that
    of a 0.9 blend with the random initialisation."""
    trainer = _trainer(tmp_path, ["warmup_epochs=0", "checkpoint.every_minutes=0"])     # lr > 0 at update 0
    before = [p.clone() for p in trainer.model.parameters()]
    _, micro = next(trainer.data.train_batches(0))
    trainer._update(0, micro)
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    for (name, a), b in zip(trainer.model.state_dict().items(), trainer.ema.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_resumed_rank_takes_back_its_own_random_state_and_the_failure_baseline(tmp_path, monkeypatch):
    """A DDP checkpoint holds every rank's RNG states: rank 1 resumes with rank 1's (not rank 0's), and every run
    keeps the first update's loss as its divergence baseline (a resumed run judging against its later, lower loss
    would fail on noise)."""
    saver = _trainer(tmp_path)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(train._rng_state())
    monkeypatch.setattr(train.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), states))
    monkeypatch.setattr(train.dist, "barrier", lambda: None)
    saver.world, saver.state["initial_loss"], saver.state["step"] = 2, 2.3, 5
    saver._save()
    monkeypatch.setattr(train.dist, "all_reduce", lambda t: t.mul_(2))       # both ranks see the checkpoint
    resumer = _trainer(tmp_path)
    resumer.rank, resumer.world = 1, 2
    resumer._resume()
    assert torch.equal(torch.get_rng_state(), states[1]["torch"])
    assert resumer.state["step"] == 5 and resumer.state["initial_loss"] == 2.3


def test_the_checkpoint_outlives_a_record_that_could_not_be_written(tmp_path, monkeypatch):
    """The checkpoint goes only once the record is written: a full disk (or a kill) at the record keeps the work."""
    def full_disk(path, record):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(train, "write_json_atomic", full_disk)
    cfg = config.load("smoke", ["epochs=1", "warmup_epochs=0", "checkpoint.every_steps=1", "data.train_size=128",
                                "data.val_size=64"])
    with pytest.raises(OSError, match="No space"):
        train.run(cfg, "erf", tmp_path, progress=False)
    ckpt = results.checkpoint_path(results.record_path(tmp_path, "erf", cfg))
    assert torch.load(ckpt, weights_only=False)["state"]["step"] == 2


def test_a_failed_record_counts_the_updates_it_ran(tmp_path):
    record = train.run(config.load("smoke", ["lr=10000"]), "linear", tmp_path, progress=False)
    assert record["status"] == "failed" and record["steps"] == record["failure"]["step"] < 8 * 16


def test_wall_s_counts_the_training_before_each_checkpoint_too(tmp_path, monkeypatch):
    """The record's wall_s is the whole training's time, also when checkpoints cut it into pieces. A fake clock on
    which each update takes a minute and nothing else takes any."""
    clock = [1000.0]
    monkeypatch.setattr(train, "time", SimpleNamespace(time=lambda: clock[0]))
    update = train.Trainer._update

    def a_minute(self, step, micro):
        clock[0] += 60.0
        return update(self, step, micro)
    monkeypatch.setattr(train.Trainer, "_update", a_minute)
    cfg = config.load("smoke", ["epochs=2", "checkpoint.every_steps=1", "checkpoint.every_minutes=0",
                                "data.train_size=128", "data.val_size=64"])
    record = train.run(cfg, "erf", tmp_path, progress=False)
    assert record["steps"] == 4 and record["wall_s"] == 4 * 60.0


@pytest.mark.parametrize("write", ["write", "link"])
def test_a_file_is_on_disk_whole_before_it_takes_its_name_and_the_name_before_what_follows(tmp_path, monkeypatch,
                                                                                          write):
    """write_atomic fsyncs the complete temporary file before os.replace (a rename can reach the disk before the data),
    and both it and link_atomic fsync the folder after it: a finished run removes its checkpoint once its record has
    its name, and a power loss must not keep the removal without the record."""
    source = tmp_path / "kept" / "source"
    source.parent.mkdir()
    source.write_text("weights")
    events, fsync, replace = [], os.fsync, os.replace

    def spy(fd):
        stat = os.fstat(fd)
        events.append(("fsync folder",) if S_ISDIR(stat.st_mode) else ("fsync file", stat.st_size))
        return fsync(fd)
    monkeypatch.setattr(results.os, "fsync", spy)
    monkeypatch.setattr(results.os, "replace", lambda a, b: events.append(("replace", b)) or replace(a, b))
    text = "x" * 1000                  # less than a write buffer: flushed before the fsync, or the fsync is of nothing
    path = tmp_path / "r.json"
    if write == "write":
        results.write_text_atomic(path, text)
        assert events == [("fsync file", len(text)), ("replace", path), ("fsync folder",)]
    else:
        results.link_atomic(source, path)
        assert events == [("replace", path), ("fsync folder",)]


def test_a_resumed_fp16_run_keeps_its_loss_scale(tmp_path):
    """The GradScaler's scale (lowered at each overflow, grown after quiet stretches) is checkpointed and restored:
    restarting it at 65536 would skip the first updates after every resume as overflows."""
    saver = _trainer(tmp_path, ["precision=fp16"])
    assert saver.scaler.is_enabled()
    saver.scaler.load_state_dict({**saver.scaler.state_dict(), "scale": 512.0, "_growth_tracker": 7})
    saver._save()
    resumer = _trainer(tmp_path, ["precision=fp16"])
    resumer._resume()
    assert resumer.scaler.state_dict() == saver.scaler.state_dict()
    assert resumer.scaler.state_dict()["scale"] == 512.0


def test_a_stop_read_at_an_epochs_end_still_saves_before_stopping(tmp_path, monkeypatch):
    """A stop asked during an epoch's last update is read when that update is settled for the evaluation, after the
    update's save decision: the run saves at the next update, and never stops without a checkpoint."""
    import threading
    monkeypatch.setattr(train, "STOP", threading.Event())
    update = train.Trainer._update
    monkeypatch.setattr(train.Trainer, "_update",
                        lambda self, step, micro: (step == 15 and train.STOP.set()) or update(self, step, micro))
    cfg = config.load("smoke", ["epochs=2", "checkpoint.every_minutes=0"])
    with pytest.raises(train.Stopped, match="checkpoint at update 17 of 32"):
        train.run(cfg, "erf", tmp_path, progress=False)
    ckpt = results.checkpoint_path(results.record_path(tmp_path, "erf", cfg))
    assert torch.load(ckpt, weights_only=False)["state"]["step"] == 17


def test_the_record_and_the_log_say_how_the_run_shared_its_device(tmp_path):
    cfg = config.load("smoke", ["epochs=1", "warmup_epochs=0", "data.train_size=128", "data.val_size=64"])
    record = train.run(cfg, "erf", tmp_path, progress=False, pool={"workers": 2, "mps": False})
    assert record["pool"] == json.loads(Path(record["path"]).read_text())["pool"] == {"workers": 2, "mps": False}
    assert "2 runs at once on the CPU" in results.log_path(Path(record["path"])).read_text().splitlines()[0]


def _lock_elsewhere(path) -> str:
    """What another process (a fork: POSIX locks belong to a process) is told when it asks for the cell's lock."""
    pid = os.fork()
    if pid == 0:
        told = "error"
        try:
            with train._sole_trainer(path, 0, 1):
                told = "free"
        except train.CellBusy:
            told = "busy"
        finally:
            os._exit(("free", "busy", "error").index(told))
    return ("free", "busy", "error")[os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]


def test_a_cell_run_lets_go_of_its_lock_when_it_ends(tmp_path):
    """A pool's worker lives on after its cell: the cell's byte of .cells.lock must be free again once its run ends,
    or another process (a second sweep, a SLURM job) would be told the cell is busy for as long as that worker lives."""
    path = results.record_path(tmp_path, "erf", config.load("smoke"))
    with train._sole_trainer(path, 0, 1):
        assert _lock_elsewhere(path) == "busy"
    assert _lock_elsewhere(path) == "free"
