"""One cell: train a ViT with one norm under one config and write its result record; resumable, DDP-ready.

Everything standard comes from timm/torch: optimizer parameter groups (no weight decay on 0-/1-d parameters: norms,
biases, α, s), per-update cosine schedule with warmup, Mixup/CutMix soft targets with label smoothing, drop path,
model EMA, autocast, torch.compile, DDP. What is ours: the failure verdict, exact resume and the record.

Failure is a result (status "failed", process exit 0), checked after every update on values all ranks agree on
(read once the next update is queued, so that the device never idles waiting for the verdict):
- kind "nan":         the loss or the gradient norm is not finite (an fp16 overflow the GradScaler skips is not);
- kind "diverged":    the gradient norm exceeds failure.max_grad_norm, or the train loss exceeds
                      failure.loss_factor x the loss of the first update (the untrained model's, about ln C);
- kind "no_learning": training finished but the best val top-1 (raw or EMA, over all evaluations) never rose above
                      chance + failure.chance_sigmas binomial standard deviations of the val set.
The point-wise layer has finite analytic gradients everywhere, so "nan" means the numbers really overflowed.

Exact resume: a checkpoint holds the model, EMA, optimizer, scheduler, scaler, every RNG state of every rank, the
update counter (which fixes the data position, see lab.data.Plan), the history and the failure baseline; it is taken
right after an update (and after the evaluation that may follow), so the resumed run replays the same numbers on
the embedded data (augmented on the device from those RNG states). With an image folder the resumed run sees the same
images in the same order, but its augmentation draws differ: the DataLoader's workers and its iterator's seed start
mid-epoch (same distribution, not the same numbers).

Asked to stop (STOP set, from a signal handler: a SLURM task's time limit or preemption, lab.sweep.SlurmCell), a run
saves a checkpoint after its next update, at the same update on every rank, and raises Stopped; run again, it resumes.
"""
import errno
import hashlib
import math
import os
import platform
import random
import sys
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

try:
    import fcntl
except ImportError:     # Windows
    fcntl = None

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from tqdm import tqdm

from . import data as data_mod
from .config import config_hash
from .layers import PointwiseNorm, canonical_norm
from .models import from_config
from .results import (checkpoint_path, finished, git_commit, log_path, pool_text, record_path, remove_temporaries,
                      weights_path, write_atomic, write_json_atomic)

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}    # config.CHOICES["precision"]
STOP = threading.Event()
"""Set (a signal handler may) to have the running cell save a checkpoint at its next update and raise Stopped."""


class Stopped(Exception):
    """The run saved a checkpoint and stopped because STOP was set: the same cell run again resumes from it."""


def run(cfg: dict, norm: str, out_dir, *, table: str | None = None, progress: bool = True,
        pool: dict | None = None) -> dict:
    """Train `norm` under `cfg`, write the record to lab.results.record_path and return it (with its "path").

    An existing finished record is returned as is (with a warning if `cfg` asks for weights it did not keep); an
    existing checkpoint is resumed. `cfg` comes from lab.config.load, which has checked it.
    pool: how the run shares its device, recorded as is (lab.sweep's pool: {"workers": N, "mps": bool}; None: alone).
    """
    spec = canonical_norm(norm)
    path = record_path(out_dir, spec, cfg)
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 and (record := finished(path)) is not None:
        return _earlier(record, cfg)    # (the ranks of a DDP run ask rank 0, which sees for all: _sole_trainer)
    rank, world, owned = _init_distributed()
    path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    try:
        device = _device(cfg["device"])
        with _sole_trainer(path, rank, world, device) as record:
            if record is not None:
                return _earlier(record, cfg)    # finished by another process while this one waited to start it
            if cfg.get("threads"):
                torch.set_num_threads(int(cfg["threads"]))
            return Trainer(cfg, spec, path, rank, world, device, pool).fit(progress and rank == 0, table)
    finally:
        torch.set_num_threads(threads)
        if owned:
            dist.destroy_process_group()


def _keeps_weights(cfg: dict, failure: dict | None) -> bool:
    """Whether a finished run keeps its weights: its config asks (checkpoint.keep_weights; a config from before the
    setting does not), unless it failed with nan (its weights are NaN)."""
    return bool(cfg["checkpoint"].get("keep_weights")) and (failure or {}).get("kind") != "nan"


def _earlier(record: dict, cfg: dict) -> dict:
    """A finished record, returned as is: a config that now asks for its weights is told that they were not kept
    (not after a nan failure: training it again would keep none either)."""
    if _keeps_weights(cfg, record.get("failure")) and not record.get("weights"):
        warnings.warn(f"{Path(record['path']).name} was recorded earlier without its weights, and a finished cell is "
                      "not trained again: delete the record to train it again and keep them", stacklevel=3)
    return record


class CellBusy(ValueError):
    """Another process is training the cell (see _sole_trainer)."""


@contextmanager
def _sole_trainer(path: Path, rank: int, world: int, device: torch.device | None = None):
    """Hold a lock while a run trains the cell, and yield the cell's record if it finished meanwhile (else None): a
    second run asked for the same cell (two sweeps on one results folder, a SLURM job submitted again while the first
    still trains) is refused, instead of training it twice and racing for its checkpoint. A POSIX lock on one byte of
    the folder's `.cells.lock`, at an offset drawn from the record's name (one file for all cells): the kernel drops it
    when the process ends, however it ends, and forked DataLoader workers do not inherit it. A DDP run's rank 0 holds
    it and reads the record for all its ranks, and tells them both (ranks that decided apart, on a filesystem one node
    sees later than another, would hang in their first collective). A folder that cannot be locked (no fcntl, a
    filesystem without locks) is not locked."""
    try:
        fd = os.open(path.parent / ".cells.lock", os.O_RDWR | os.O_CREAT, 0o666) if rank == 0 and fcntl else None
    except OSError:
        fd = None
    try:
        busy = False
        if fd is not None:
            offset = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:6], "big")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as err:
                busy = err.errno in (errno.EACCES, errno.EAGAIN)
                if not busy:
                    warnings.warn(f"{path.parent / '.cells.lock'}: cannot lock ({err}); two processes could train "
                                  f"{path.name} at once")
        record, unreadable = None, None
        if rank == 0 and not busy:
            try:
                record = finished(path)
            except ValueError as err:       # a record cut off: told to every rank, which would wait for rank 0 else
                unreadable = str(err)
        if world > 1:
            told = [busy, record, unreadable]
            dist.broadcast_object_list(told, src=0, device=device if device and device.type == "cuda" else None)
            busy, record, unreadable = told
        if unreadable:
            raise ValueError(unreadable)
        if busy:
            raise CellBusy(f"{path.name}: another process is training this cell now (its log: {log_path(path)}); run "
                           "again once it has finished")
        yield record
    finally:
        if fd is not None:
            os.close(fd)


class Trainer:
    def __init__(self, cfg, spec, path, rank, world, device, pool=None):
        self.cfg, self.spec, self.path, self.rank, self.world, self.device = cfg, spec, path, rank, world, device
        self.pool = pool
        self.ckpt, self.log_file, self.born = checkpoint_path(path), log_path(path), time.time()
        self.seed = int(cfg["seed"])
        _seed_everything(self.seed)
        self.data = data_mod.build(cfg, device, rank, world)
        self.model = from_config(cfg, spec, self.data.num_classes).to(device)
        self.pointwise_layers = [mod for mod in self.model.modules() if isinstance(mod, PointwiseNorm)]
        self.ema = ModelEmaV3(self.model, decay=cfg["ema"]["decay"], use_warmup=cfg["ema"]["warmup"])
        o, s = cfg["optim"], cfg["schedule"]
        fused = {"fused": True} if device.type == "cuda" and o["opt"] in ("adam", "adamw") else {}  # 1 kernel a step
        self.optimizer = create_optimizer_v2(self.model, opt=o["opt"], lr=o["lr"], weight_decay=o["weight_decay"],
                                             betas=tuple(o["betas"]), eps=o["eps"], layer_decay=o["layer_decay"],
                                             **fused)
        self.steps_per_epoch = self.data.steps_per_epoch
        self.total = int(s["epochs"]) * self.steps_per_epoch
        warmup = min(round(s["warmup_epochs"] * self.steps_per_epoch), max(self.total - 1, 0))
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=max(self.total - warmup, 1),
                                           lr_min=s["min_lr"], warmup_t=warmup, warmup_lr_init=s["warmup_lr"],
                                           warmup_prefix=True, t_in_epochs=False)
        self.dtype = AUTOCAST[cfg["precision"]]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.criterion = SoftTargetCrossEntropy() if self.data.mixup is not None else \
            LabelSmoothingCrossEntropy(cfg["aug"]["smoothing"])
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=None if device.index is None else [device.index]) if world > 1 else None
        net = self.ddp or self.model
        self.net = torch.compile(net, mode=cfg["compile_mode"]) if cfg.get("compile") else net
        if rank:
            _seed_everything(self.seed + 1000 * rank)   # each rank its own augmentation stream
        self.stopping = False       # STOP was set on some rank: save at the next update, then stop
        self.state = {"step": 0, "history": [], "loss_curve": [], "initial_loss": None, "wall_s": 0.0,
                      "failure": None, "epoch_losses": [], "epoch_gnorm": 0.0, "window": []}
        self._log(f"start {spec} · {cfg['protocol']}-{config_hash(cfg)} seed {self.seed} · {_device_name(device)} · "
                  f"torch {torch.__version__} · {self.total} updates, {self.steps_per_epoch} an epoch"
                  + (f" · compiled ({cfg['compile_mode']})" if cfg.get("compile") else "")
                  + (f" · {pool_text(pool, device.type)}" if pool else ""))
        for note in (_cpu_fallback(cfg, device), _emulated_precision(device, self.dtype), _all_warmup(s)):
            if note:
                warnings.warn(note, stacklevel=2)
                self._log(note)

    def _log(self, line: str):
        """Append one line to the cell's log (rank 0), stamped with the seconds since this process took the cell."""
        if self.rank == 0:
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(f"{time.time() - self.born:9.1f} s  {line}\n")

    # --- the loop ---------------------------------------------------------------------------------------------
    def fit(self, progress: bool, table) -> dict:
        try:
            return self._fit(progress, table)
        except BaseException as err:        # a crash or Ctrl-C: the log says where the run stopped
            self._log(f"stopped at update {self.state['step']}: {type(err).__name__}: {err}")
            raise

    def _fit(self, progress: bool, table) -> dict:
        self._resume()
        self.epoch_mark = (time.time(), self.state["step"])    # the throughput of each epoch line
        t0, s0 = time.time(), self.state["step"]      # throughput base
        if s0 and progress:
            print(f"{self.spec}: resumed at update {s0} of {self.total} from {self.ckpt}", file=sys.stderr)
        self.mark, self.checkpoint_due = time.time(), False       # wall time since, and rank 0's clock says save
        images, every = self.cfg["optim"]["batch_size"], self.cfg["checkpoint"]
        bar = tqdm(total=self.total, initial=s0, disable=not progress, desc=self.spec, unit="step",
                   dynamic_ncols=True, leave=False)
        while self.state["step"] < self.total and self.state["failure"] is None:
            epoch, start = divmod(self.state["step"], self.steps_per_epoch)
            pending = None     # the update whose verdict is not read yet: read after the next one is queued
            for update, micro in self.data.train_batches(epoch, start):
                step = epoch * self.steps_per_epoch + update
                queued = (step, self._update(step, micro))
                if pending and not self._settle(*pending):
                    break
                pending = queued
                last = update == self.steps_per_epoch - 1
                save = bool(every["every_steps"] and (step + 1) % every["every_steps"] == 0) or self.checkpoint_due
                if last or save:       # evaluation and checkpoints see settled updates only
                    if not self._settle(*pending):
                        break
                    pending = None
                if last:
                    self._end_epoch(epoch)
                if save:
                    self.state["wall_s"] += time.time() - self.mark
                    self.mark, self.checkpoint_due = time.time(), False
                    self._save()
                if self.stopping and save and self.state["step"] < self.total:     # else: finish, write the record
                    raise Stopped(f"asked to stop: checkpoint at update {self.state['step']} of {self.total}, which "
                                  "the cell resumes from when run again")
                bar.update(self.state["step"] - bar.n)
                curve = self.state["loss_curve"]
                bar.set_postfix(loss=f"{curve[-1][1]:.3f}" if curve else "–", lr=f"{self._lr():.2e}",
                                img_s=f"{(step + 1 - s0) * images / max(time.time() - t0, 1e-9):.0f}", refresh=False)
        bar.close()
        self.state["wall_s"] += time.time() - self.mark
        return self._finish(table)

    def _settle(self, step: int, values: torch.Tensor) -> bool:
        """Read update `step`'s (loss, grad norm, checkpoint due, stop asked), judge it, and book it; False when it is a
        failure."""
        loss, gnorm, due, stop = values.tolist()
        self.stopping |= stop > 0
        self.checkpoint_due |= due > 0 or (self.stopping and step + 2 < self.total)   # not with no update left after
        if self.scaler.is_enabled() and math.isfinite(loss) and not math.isfinite(gnorm):
            gnorm = None        # an fp16 overflow: the GradScaler skipped the step and lowered its scale
        self.state["failure"] = self._check(step, loss, gnorm)
        if self.state["failure"]:
            return False
        self.state["step"] = step + 1
        self.state["epoch_losses"].append(loss)
        self.state["epoch_gnorm"] = max(self.state["epoch_gnorm"], gnorm or 0.0)
        window = self.state["window"]
        window.append(loss)
        if len(window) == self.cfg["log_every"] or (step + 1) % self.steps_per_epoch == 0:
            self.state["loss_curve"].append([step + 1, sum(window) / len(window)])
            window.clear()
        return True

    def _update(self, step: int, micro) -> torch.Tensor:
        """Queue one update (no wait for the device); its (loss, grad norm, checkpoint due, stop asked) as a device
        tensor for _settle. A non-finite update is applied too: it ends the run as soon as _settle reads it. Whether a
        timed checkpoint is due is rank 0's clock, and a stop any rank's STOP, all-reduced with the rest: ranks that
        disagree would deadlock in _save."""
        self.scheduler.step_update(step)
        self.model.train()
        total = torch.zeros((), device=self.device)
        for i, (x, target) in enumerate(micro):
            sync = i == len(micro) - 1 or self.world == 1
            if self.cfg.get("compile"):
                torch.compiler.cudagraph_mark_step_begin()   # CUDA graphs (reduce-overhead) may reuse last step's memory
            with (nullcontext() if sync else self.ddp.no_sync()), self._autocast():
                loss = self.criterion(self.net(x), target) / len(micro)
            self.scaler.scale(loss).backward()
            total += loss.detach().float()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg["optim"]["clip_grad"]
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else float("inf"))
        minutes = self.cfg["checkpoint"]["every_minutes"]
        due = self.rank == 0 and minutes > 0 and time.time() - self.mark > 60 * minutes
        flags = (float(due), float(STOP.is_set()))
        values = torch.stack([total, gnorm.float(), *(total.new_full((), flag) for flag in flags)])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        self.scaler.step(self.optimizer)    # fp16: GradScaler skips an overflowed step and lowers its scale
        self.scaler.update()
        self.ema.update(self.model, step=step)
        self.optimizer.zero_grad(set_to_none=True)
        return values

    def _check(self, step: int, loss: float, gnorm: float):
        """The failure verdict of one update (see the module docstring), or None."""
        f = self.cfg["failure"]
        if not math.isfinite(loss):
            return {"step": step, "kind": "nan", "reason": f"non-finite loss ({loss})"}
        if gnorm is None:      # fp16 overflow, handled by the GradScaler
            gnorm = 0.0
        if not math.isfinite(gnorm):
            return {"step": step, "kind": "nan", "reason": f"non-finite gradient norm ({gnorm}) at loss {loss:.3g}"}
        if self.state["initial_loss"] is None:
            self.state["initial_loss"] = loss
        if gnorm > f["max_grad_norm"]:
            return {"step": step, "kind": "diverged",
                    "reason": f"grad norm {gnorm:.3g} > limit {f['max_grad_norm']:.3g}"}
        if loss > f["loss_factor"] * self.state["initial_loss"]:
            return {"step": step, "kind": "diverged",
                    "reason": f"loss {loss:.3g} > {f['loss_factor']:g} x initial {self.state['initial_loss']:.3g}"}
        return None

    def _no_learning(self):
        """The failure verdict of a run that ran through: none of its evaluations (raw or EMA) rose `chance_sigmas`
        binomial standard errors above chance on the validation set."""
        chance, sigmas = 100.0 / self.data.num_classes, self.cfg["failure"]["chance_sigmas"]
        best = max(max(h["val_top1"], h["val_top1_ema"]) for h in self.state["history"] if "val_top1" in h)
        p = 1.0 / self.data.num_classes
        margin = sigmas * 100 * math.sqrt(p * (1 - p) / self.data.val_size)
        if best > chance + margin:
            return None
        return {"step": self.state["step"], "kind": "no_learning",
                "reason": f"best top-1 {best:.2f}% never above {chance + margin:.2f}% (chance {chance:.2f}% + "
                          f"{sigmas:g} sigma = {margin:.2f} points)"}

    def _end_epoch(self, epoch: int):
        losses = self.state["epoch_losses"]
        entry = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                 "train_loss": sum(losses) / max(len(losses), 1), "grad_norm_max": self.state["epoch_gnorm"],
                 "lr": self._lr()}
        self.state["epoch_losses"], self.state["epoch_gnorm"] = [], 0.0
        every = self.cfg["eval"]["every_epochs"]
        then, step0 = self.epoch_mark      # this epoch's training alone: the mark is set after the last evaluation
        speed = (entry["step"] - step0) * self.cfg["optim"]["batch_size"] / max(time.time() - then, 1e-9)
        if (every and (epoch + 1) % every == 0) or epoch + 1 == self.cfg["schedule"]["epochs"]:
            entry["val_top1"], entry["val_top1_ema"] = self._evaluate(self.model, self.ema.module)
            # how each layer's input scale α adapted (calibration reads it: saturation, drift)
            if self.pointwise_layers:
                entry["alpha"] = [round(m.alpha.item(), 5) for m in self.pointwise_layers]
                if self.pointwise_layers[0].shift is not None:     # Derf: where each layer's learnable shift s went
                    entry["shift"] = [round(m.shift.item(), 5) for m in self.pointwise_layers]
        self.state["history"].append(entry)
        self._log(f"epoch {epoch + 1}/{self.cfg['schedule']['epochs']} · update {entry['step']} · loss "
                  f"{entry['train_loss']:.4f} · grad norm ≤ {entry['grad_norm_max']:.3g} · lr {entry['lr']:.2e} · "
                  f"{speed:.0f} img/s" + (f" · top-1 {entry['val_top1']:.2f} (EMA {entry['val_top1_ema']:.2f})"
                                          if "val_top1" in entry else ""))
        self.epoch_mark = time.time(), entry["step"]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    @torch.no_grad()
    def _evaluate(self, *models) -> list[float]:
        """Top-1 (%) of each model on this rank's share of the validation set, summed over ranks: one pass over the
        images for all (on ImageNet, decoding 50k images is most of an evaluation)."""
        counts = torch.zeros(len(models) + 1, device=self.device)
        for model in models:
            model.eval()
        for x, y in self.data.val_batches(self.cfg["eval"]["batch_size"]):
            with self._autocast():
                for i, model in enumerate(models):
                    counts[i] += (model(x).argmax(-1) == y).sum()
            counts[-1] += len(y)
        if self.world > 1:
            dist.all_reduce(counts)
        return [100.0 * c / counts[-1].item() for c in counts[:-1].tolist()]

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # --- checkpoint -------------------------------------------------------------------------------------------
    def _save(self):
        """Atomic checkpoint (rank 0 writes; every rank's RNG states are gathered into it)."""
        rng = _rng_state()
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        if self.rank == 0:
            blob = {"config_hash": config_hash(self.cfg), "spec": self.spec, "seed": self.seed, "world": self.world,
                    "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(), "rng": rngs, "state": self.state}
            write_atomic(self.ckpt, lambda f: torch.save(blob, f))
            self._log(f"checkpoint at update {self.state['step']}")
        if self.world > 1:
            dist.barrier()

    def _resume(self):
        if self.rank == 0:      # of a process killed while saving
            for path in (self.ckpt, weights_path(self.path)):
                remove_temporaries(path)
        found = self.ckpt.exists()
        if self.world > 1:
            seen = torch.tensor([float(found)], device=self.device)
            dist.all_reduce(seen)
            if seen.item() not in (0, self.world):
                raise RuntimeError(f"only some ranks see {self.ckpt}: the results folder must be shared by all nodes")
        if not found:
            return
        try:
            blob = torch.load(self.ckpt, map_location=self.device, weights_only=False)
            owner = (blob["config_hash"], blob["spec"], blob["seed"])
        except (OSError, torch.OutOfMemoryError):
            raise                   # the file may be whole (a full GPU, a network filesystem): no advice to delete it
        except Exception as err:    # cut off, empty, or not a checkpoint: the cell would fail on every rerun
            raise ValueError(f"checkpoint {self.ckpt} cannot be read ({type(err).__name__}: {err}); delete it to "
                             "start the cell over") from None
        if owner != (config_hash(self.cfg), self.spec, self.seed):
            raise ValueError(f"checkpoint {self.ckpt} belongs to another run; delete it to start over")
        self.model.load_state_dict(blob["model"])
        self.ema.load_state_dict(blob["ema"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        self.state = blob["state"]
        if blob["world"] == self.world:   # otherwise the run continues, but not bit for bit
            _set_rng_state(blob["rng"][self.rank])
        self._log(f"resumed at update {self.state['step']} from {self.ckpt.name}")

    # --- the record -------------------------------------------------------------------------------------------
    def _finish(self, table) -> dict:
        st, cfg = self.state, self.cfg
        last = next((h for h in reversed(st["history"]) if "val_top1" in h), {})
        failure = st["failure"] or (self._no_learning() if last else None)
        ran_through = st["failure"] is None     # no nan or divergence: its last top-1 (no_learning's too) is kept
        keep = _keeps_weights(cfg, st["failure"])
        created = [datetime.now(timezone.utc).isoformat(timespec="seconds")]
        if self.world > 1:      # every rank returns rank 0's record, whose stamp its weights carry
            dist.broadcast_object_list(created, src=0)
        record = {
            "spec": self.spec, "table": table, "protocol": cfg["protocol"],
            "status": "failed" if failure else "ok", "failure": failure,
            "top1": last.get("val_top1") if ran_through else None,
            "top1_ema": last.get("val_top1_ema") if ran_through else None,
            "num_classes": self.data.num_classes, "chance_top1": 100.0 / self.data.num_classes,
            "images": {"train": self.data.train_size, "val": self.data.val_size},    # an image folder's too
            "history": st["history"], "loss_curve": st["loss_curve"],
            "config": cfg, "config_hash": config_hash(cfg), "seed": self.seed, "commit": git_commit(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
            "device": _device_name(self.device),
            "world_size": self.world, "pool": self.pool, "steps": st["step"], "wall_s": round(st["wall_s"], 3),
            "created": created[0], "weights": weights_path(self.path).name if keep else None,
        }
        if self.rank == 0:
            if keep:                    # before the record, which marks the cell done
                self._keep_weights(record["created"])
            write_json_atomic(self.path, record)
            self.ckpt.unlink(missing_ok=True)
        kept = f" · weights kept: {record['weights']}" if record["weights"] else ""
        self._log((f"failed: {failure['kind']} at update {failure['step']}: {failure['reason']}" if failure else
                   f"finished: top-1 {record['top1']:.2f} (EMA {record['top1_ema']:.2f}) · {st['wall_s']:.0f} s of "
                   f"training · {self.path.name}") + kept)
        if self.world > 1:
            dist.barrier()
        return {**record, "path": str(self.path)}

    def _keep_weights(self, created: str):
        """The final weights and the EMA's, under the keys of timm's CheckpointSaver (timm.models.load_checkpoint reads
        either), named by the record that rebuilds their model (lab.trained_model), as of its `created`: a record
        written later for the cell, by a run that kept none, does not take them for its own."""
        blob = {"state_dict": self.model.state_dict(), "state_dict_ema": self.ema.module.state_dict(),
                "arch": self.cfg["model"]["name"], "spec": self.spec, "config_hash": config_hash(self.cfg),
                "seed": self.seed, "record": self.path.name, "created": created}
        write_atomic(weights_path(self.path), lambda f: torch.save(blob, f))


# --- process-level helpers --------------------------------------------------------------------------------------
def _init_distributed() -> tuple[int, int, bool]:
    """(rank, world, whether we created the process group) from torchrun's environment (nccl on GPUs, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1, False
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, owned


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def resolve_device(name: str) -> torch.device:
    """The device a config's `device` names on this machine (auto: cuda:LOCAL_RANK if GPUs are visible, cuda:0 for a
    SLURM task that sees one, else cpu); ValueError if it has none such (torchrun's ranks beyond the GPUs there are,
    say). Touches no GPU: a sweep asks it once before any cell starts."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":     # a SLURM task bound to one GPU (gpus_per_task) sees it as cuda:0 whatever its rank
        bound = "SLURM_JOB_ID" in os.environ and torch.cuda.is_available() and torch.cuda.device_count() == 1
        name = f"cuda:{0 if bound else int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"device {name!r}: no CUDA GPU is visible (use device=cpu or auto)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: {count} CUDA GPU(s) visible, cuda:0 to cuda:{count - 1}")
    return device


def _device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _cpu_fallback(cfg: dict, device: torch.device) -> str | None:
    """Why this run will be slow, where device auto found no GPU: the proxy and paper protocols are sized for one (a
    proxy cell takes minutes on a GPU; on 2 CPU cores its first epoch's pace said about 14 hours). device=cpu says the
    CPU is meant."""
    if cfg["device"] == "auto" and device.type == "cpu":
        return (f"device auto found no CUDA GPU: protocol {cfg['protocol']} trains on the CPU, which can take many "
                "hours a cell (--set device=cpu to say that is meant; the smoke protocol is sized for a CPU)"
                + ("; torch.compile spends minutes on the CPU before the first update (--set compile=false)"
                   if cfg["compile"] else ""))
    return None


def _emulated_precision(device: torch.device, dtype) -> str | None:
    """Why this run will be slow, where bf16 autocast runs on a CPU without bf16 matrix instructions (emulated, about
    10x slower than fp32 for the proxy's model on such a CPU): the config keeps its precision, the user may not."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not _native_cpu_bf16():
        return ("precision bf16 on this CPU, which has no bf16 matrix instructions, is emulated and many times "
                "slower than fp32: --set precision=fp32 (another config hash) unless the bf16 numbers are the point")
    return None


def _native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (oneDNN's answer; a torch built without oneDNN: assume so)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _all_warmup(schedule: dict) -> str | None:
    """Why the learning rate never decays, where a short run (epochs=1 to try the paper's recipe) is all warmup."""
    if schedule["warmup_epochs"] >= schedule["epochs"]:
        return (f"schedule.warmup_epochs ({schedule['warmup_epochs']:g}) >= schedule.epochs ({schedule['epochs']}): "
                "the whole run is warmup, the learning rate peaks at its last update and never decays")
    return None


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

