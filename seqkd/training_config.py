"""The ``training:`` section of a recipe (and of each stage's ``training:`` override)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from seqkd.hashing import AddedFields


class TrainingConfig(AddedFields):
    model_config = ConfigDict(extra="forbid")
    added_fields = ("precision",)  # left out of stage hashes at fp32: runs from before it stay valid

    max_steps: int = Field(1000, ge=1, description="Optimizer updates to run.")
    max_tokens: int = Field(4096, ge=16, description="Target tokens per batch (length-bucketed).")
    accumulate: int = Field(1, ge=1, description="Batches per optimizer update (gradient accumulation).")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="AdamW (decoupled weight decay) or Adam (L2 penalty in the gradient).")
    schedule: Literal["inverse_sqrt", "linear", "cosine", "constant"] = Field(
        "inverse_sqrt", description="After the warm-up: inverse-sqrt decay, linear or cosine decay to 0 at max_steps, or constant."
    )
    warmup_steps: int = Field(1000, ge=0, description="Linear warm-up from 0 to `lr` over this many updates.")
    betas: tuple[float, float] = Field((0.9, 0.98), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    clip_norm: float = Field(1.0, ge=0, description="Gradient clipping max norm; 0 turns clipping off.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the task loss.")
    seed: int = Field(1, description="Seeds parameters, dropout and data order.")
    log_every: int = Field(50, ge=1, description="Steps between progress lines and metric records.")
    validate_every: int = Field(500, ge=1, description="Steps between validations (best checkpoint kept).")
    checkpoint_every: int = Field(500, ge=1, description="Steps between resumable checkpoints.")
    patience: int | None = Field(
        None, ge=1, description="Stop after this many validations without improvement; null never stops early."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Compute precision of the forward passes (student and teachers) and losses: bf16 and fp16 run them "
        "under autocast, with weights and optimizer state kept in fp32 (losses over probabilities are computed in "
        "fp32). fp16 needs CUDA and scales the loss (GradScaler, checkpointed); bf16 also runs on CPU. Validation "
        "runs in this precision too; evaluation and prediction in fp32.",
    )

    @model_validator(mode="after")
    def _schedule_fits(self) -> "TrainingConfig":
        if self.schedule == "inverse_sqrt" and self.warmup_steps < 1:
            raise ValueError("warmup_steps: the inverse_sqrt schedule needs at least 1 warm-up step (it decays as sqrt(warmup / step)); use schedule: constant for none")
        if self.schedule in ("linear", "cosine") and self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps}) for a decaying schedule")
        return self

    @field_validator("precision")
    @classmethod
    def _precision_fits_device(cls, precision: str, info: ValidationInfo) -> str:
        # device: auto is checked when the stage starts (seqkd.trainer.autocast_dtype), on the machine that trains
        if precision == "fp16" and info.data.get("device") == "cpu":
            raise ValueError("fp16 needs a CUDA device and training.device is cpu; use bf16 (or fp32) on CPU")
        return precision
