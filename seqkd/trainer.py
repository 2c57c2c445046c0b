"""The training loop every stage runs, whatever the method.

See docs/architecture.md for why this is a small loop of our own rather than fairseq2's
``Trainer``: resuming must never unpickle (fairseq2 0.8.1 restores trainer, optimizer and
data-reader state with ``weights_only=False``), and the whole step fits on one screen.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqkd import distributed
from seqkd.checkpoint import atomic_save, safe_load
from seqkd.fileio import atomic_write_text
from seqkd.errors import SeqkdError
from seqkd.method import Method
from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.base import TaskAdapter
from seqkd.training_config import TrainingConfig

ensure_fairseq2()

from fairseq2.optim.lr_schedulers import CosineAnnealingLR, MyleLR, PolynomialDecayLR  # noqa: E402


class TrainingError(SeqkdError):
    pass


@dataclass
class TrainResult:
    steps: int
    best_valid_loss: float | None
    stopped_early: bool


class Progress:
    """One live line on a terminal (step, loss, tokens/s, ETA); plain lines when piped.

    In a multi-process run only rank 0 prints.
    """

    def __init__(self, label: str, total: int, stream=sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.live = stream.isatty()
        self.enabled = distributed.is_main()

    def update(self, step: int, start_step: int, elapsed: float, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta_txt = f"{int(eta // 60)}m{int(eta % 60):02d}s" if math.isfinite(eta) else "?"
        text = (
            f"[{self.label}] step {step}/{self.total}  loss {stats['loss']:.3f}  "
            f"{stats['tokens_per_s']:.0f} tok/s  lr {stats['lr']:.2e}  ETA {eta_txt}"
        )
        if self.live:
            self.stream.write("\r" + text.ljust(100))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        self.stream.write(("\n" if self.live else "") + f"[{self.label}] {text}\n")
        self.stream.flush()


def _step_of(line: str) -> float:
    """The step of a metrics record; a torn last line (a crash mid-write) counts as past any step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class MetricLog:
    """metrics.jsonl (truncated on resume to the checkpoint's step) and TensorBoard scalars."""

    def __init__(self, stage_dir: Path, resume_step: int) -> None:
        self.path = stage_dir / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text(errors="replace").splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(stage_dir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        for key, value in values.items():
            self.tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.tensorboard.close()


class NoMetricLog:
    """What ranks other than 0 log to: nothing, so no two processes write one file."""

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def build_optimizer(params: list[torch.nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig):
    """fairseq2's schedulers: inverse-sqrt is fairseq's (MyleLR); linear is polynomial decay (power 1)
    to 0 at max_steps, constant the same decay to ``lr`` itself; cosine one annealing cycle."""
    if config.schedule == "inverse_sqrt":
        return MyleLR(optimizer, num_warmup_steps=config.warmup_steps)
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, cycle_len=config.max_steps - config.warmup_steps, num_warmup_steps=config.warmup_steps)
    final = 0.0 if config.schedule == "linear" else config.lr  # constant: a "decay" that ends where it starts
    return PolynomialDecayLR(optimizer, num_steps=config.max_steps, num_warmup_steps=config.warmup_steps, final_lr=final)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``training.precision`` on ``device`` (None for fp32: no autocast).

    Refuses fp16 off CUDA: CPU autocast in fp16 is slow and untested here, and fp16's range needs
    the CUDA loss scaler; bf16 has fp32's exponent range, needs no scaling and runs on CPU too.
    """
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        why = "" if torch.cuda.is_available() else " (no CUDA device is available)"
        raise TrainingError(f"training.precision is fp16, which needs a CUDA device, but training runs on {device.type}{why}; use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainingError("training.precision is bf16, which this CUDA device does not support; use fp16 or fp32")
    return AUTOCAST_DTYPES[precision]


class Trainer:
    def __init__(
        self,
        *,
        method: Method,
        task: TaskAdapter,
        student: torch.nn.Module,
        config: TrainingConfig,
        stage_dir: Path,
        device: torch.device,
        label: str,
    ) -> None:
        self.method, self.task, self.student, self.cfg = method, task, student, config
        self.stage_dir, self.device = stage_dir, device
        self.last_path = stage_dir / "checkpoints" / "last.pt"
        self.best_path = stage_dir / "checkpoints" / "best.pt"
        # the student's trainable weights and the method's own modules (projections, generators, ...)
        self.params = [p for m in (student, method.modules) for p in m.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError(f"method {method.name!r} left nothing to train (no parameter requires a gradient)")
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        # Mixed precision: forward passes and losses under autocast, weights and optimizer state in
        # fp32. fp16 gradients underflow without loss scaling; bf16 keeps fp32's range and needs none.
        self.amp_dtype = autocast_dtype(config.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.reader = method.train_reader(config.max_tokens, config.seed)
        if distributed.world_size() > 1:
            self.reader = distributed.RankShard(self.reader)
        self.progress = Progress(label, config.max_steps)
        self.step = 0
        self.best_valid: float | None = None
        self.bad_validations = 0

    # -- checkpoints --------------------------------------------------------------------------

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),
        }

    def _save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint; it holds every rank's random state (``rank_rng``) so that
        dropout continues on each rank as if never interrupted. Model, optimizer and reader state
        are the same on every rank."""
        rank_rng = distributed.all_gather(self._rng_state())
        if not distributed.is_main():
            return
        atomic_save(
            {
                "step": self.step,
                "student": self.student.state_dict(),
                "method_modules": self.method.modules.state_dict(),
                "method_state": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                **({"grad_scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
                "reader": self.reader.state_dict(),
                **rank_rng[0],
                **({"rank_rng": rank_rng} if len(rank_rng) > 1 else {}),
                "best_valid": self.best_valid,
                "bad_validations": self.bad_validations,
            },
            self.last_path,
        )

    def _resume(self) -> None:
        state = safe_load(self.last_path)
        if "student" not in state:
            raise TrainingError(f"{self.last_path} was written by a seqkd before plugin API 2; remove the stage folder (or use --force) to retrain it")
        self.student.load_state_dict(state["student"])
        self.method.modules.load_state_dict(state["method_modules"])
        self.method.load_state_dict(state["method_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and "grad_scaler" in state:  # the loss scale (and its growth count) goes on
            self.scaler.load_state_dict(state["grad_scaler"])
        self.reader.load_state_dict(state["reader"])
        rank_rng = state.get("rank_rng", [])
        # With another number of processes than the checkpoint's, each rank continues rank 0's stream.
        rng = rank_rng[distributed.rank()] if len(rank_rng) == distributed.world_size() else state
        torch.set_rng_state(rng["torch_rng"])
        if rng["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda_rng"])
        version, internal, gauss = rng["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        self.step = state["step"]
        self.best_valid = state["best_valid"]
        self.bad_validations = state["bad_validations"]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of forward passes and losses: autocast at ``training.precision``."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- validation ---------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, batches: list[Any]) -> float:
        """The mean validation NLL per target; each rank scores every W-th batch and the sums are added."""
        self.student.eval()
        self.method.modules.eval()
        total, count = 0.0, 0
        for batch in batches[distributed.rank() :: distributed.world_size()]:
            with self.autocast():
                loss, n = self.task.nll(self.method.student_forward(batch.to(self.device)), 0.0)
            total, count = total + loss.item(), count + n
        self.student.train()
        self.method.modules.train()
        total, count = distributed.sum_values([total, count], self.device)
        return total / max(count, 1)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg = self.cfg
        # Each rank draws its own dropout masks; rank 0 (and a single process) uses the seed itself.
        torch.manual_seed(cfg.seed + distributed.rank())
        random.seed(cfg.seed + distributed.rank())
        self.student.to(self.device).train()
        self.method.modules.to(self.device).train()
        if self.last_path.exists():
            self._resume()
            self.progress.message(f"resuming from step {self.step} ({self.last_path})")
        distributed.broadcast_parameters(self.student)
        distributed.broadcast_parameters(self.method.modules)
        metrics = MetricLog(self.stage_dir, self.step) if distributed.is_main() else NoMetricLog()
        valid_batches = self.task.valid_batches(cfg.max_tokens)
        batches = iter(self.reader)
        self.reducer = distributed.GradientReducer(self.params)
        start_step, start_time = self.step, time.perf_counter()
        window = {"loss": 0.0, "targets": 0, "time": time.perf_counter()}
        parts: dict[str, float] = {}
        stopped_early = False
        try:
            while self.step < cfg.max_steps and not stopped_early:
                group = [next(batches) for _ in range(cfg.accumulate)]
                # Normalise by the update's targets on all ranks: summing the ranks' gradients
                # then gives exactly the gradient of one process that read every rank's batches.
                num_targets = int(distributed.sum_values([sum(b.num_target_elements for b in group)], self.device)[0])
                self.optimizer.zero_grad(set_to_none=True)
                for i, batch in enumerate(group):
                    with self.autocast():  # the method's teacher passes too
                        out = self.method.loss(batch.to(self.device), self.step)
                    if not torch.isfinite(out.loss):
                        raise TrainingError(self._non_finite("loss", out.loss.item()))
                    if i == len(group) - 1:
                        self.reducer.arm()  # this backward pass finishes the gradients: sum them as they come
                    self.scaler.scale(out.loss / num_targets).backward()  # unscaled unless fp16
                    window["loss"] += out.loss.item()
                    for key, value in out.parts.items():
                        parts[key] = parts.get(key, 0.0) + value
                window["targets"] += num_targets
                self.reducer.finish()
                self.scaler.unscale_(self.optimizer)  # clipping sees the true gradients
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
                if not torch.isfinite(grad_norm) and not self._overflow_to_skip():
                    raise TrainingError(self._non_finite("gradient norm", grad_norm.item()))
                self.scaler.step(self.optimizer)  # fp16: skipped after an overflow
                self.scaler.update()
                self.scheduler.step()
                self.step += 1

                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    n = max(window["targets"], 1)
                    keys = sorted(parts)
                    loss_sum, *part_sums = distributed.sum_values([window["loss"], *(parts[k] for k in keys)], self.device)
                    stats = {
                        "loss": loss_sum / n,
                        **{k: v / n for k, v in zip(keys, part_sums)},
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm.item(),
                        "tokens_per_s": window["targets"] / max(now - window["time"], 1e-9),
                        **({"loss_scale": self.scaler.get_scale()} if self.scaler.is_enabled() else {}),
                    }
                    metrics.write("train", self.step, stats)
                    self.progress.update(self.step, start_step, now - start_time, stats)
                    window = {"loss": 0.0, "targets": 0, "time": now}
                    parts = {}
                if self.step % cfg.validate_every == 0 or self.step == cfg.max_steps:
                    stopped_early = self._validate_and_keep_best(valid_batches, metrics)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps or stopped_early:
                    self._save_checkpoint()
        finally:
            metrics.close()
            self.reducer.close()
        if stopped_early:
            self.progress.message(f"early stop at step {self.step}: no improvement in {cfg.patience} validations")
        return TrainResult(self.step, self.best_valid, stopped_early)

    def _validate_and_keep_best(self, valid_batches: list[Any], metrics: MetricLog) -> bool:
        loss = self.validate(valid_batches)
        improved = self.best_valid is None or loss < self.best_valid
        if improved:
            self.best_valid, self.bad_validations = loss, 0
            if distributed.is_main():
                atomic_save(self.method.student_state_dict(), self.best_path)
        else:
            self.bad_validations += 1
        metrics.write("valid", self.step, {"nll": loss, "best_nll": self.best_valid})
        self.progress.message(f"step {self.step}: valid nll {loss:.4f} (best {self.best_valid:.4f})")
        return self.cfg.patience is not None and self.bad_validations >= self.cfg.patience

    def _overflow_to_skip(self) -> bool:
        """fp16: non-finite gradients at a loss scale above 1 are an overflow of the scaling, not of
        the training; the scaler skips the update and halves the scale. At a scale of 1 or less
        they are the training's own, and stop it like in fp32."""
        return self.scaler.is_enabled() and self.scaler.get_scale() > 1.0

    def _non_finite(self, what: str, value: float) -> str:
        kept = f"the last good checkpoint is kept at {self.last_path}" if self.last_path.exists() else "no checkpoint had been written yet"
        return f"non-finite {what} ({value}) at step {self.step + 1}; training stopped; {kept}"

    def best_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights with the best validation loss (the last ones if never validated)."""
        if self.best_path.exists():
            return safe_load(self.best_path)
        return self.method.student_state_dict()
