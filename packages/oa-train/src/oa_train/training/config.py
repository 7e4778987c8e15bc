"""``LoopConfig``: the options of the shared training loop. Every method's ``train:`` model extends it
(``class SFTConfig(LoopConfig)``), so schedule, optimizer, checkpoint, evaluation, NaN and logging options
mean the same for every method. Pure pydantic: no torch at import."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Tracker = Literal["none", "tensorboard", "wandb", "mlflow"]
Beta = Annotated[float, Field(ge=0, lt=1)]


class LoopConfig(BaseModel):
    """Options of the training loop. Batch sizes are per device; one optimizer step sees
    ``per_device_batch_size × gradient_accumulation_steps × num_processes`` examples."""

    model_config = ConfigDict(extra="forbid")

    # schedule
    num_epochs: int = Field(1, ge=1, description="passes over the training data (unless max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides num_epochs")
    per_device_batch_size: int = Field(1, ge=1, description="examples (or packed rows) per micro-batch per device")
    per_device_eval_batch_size: int | None = Field(
        None, ge=1, description="examples per evaluation micro-batch per device; default: per_device_batch_size")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")

    # optimisation
    optimizer: Literal["adamw", "sgd", "adafactor"] = Field(
        "adamw", description="adamw: torch AdamW (adam_betas, adam_epsilon); sgd: plain SGD, no momentum; "
        "adafactor: transformers' Adafactor at learning_rate (no relative step)")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (not on biases and norm weights)")
    adam_betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1)")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon")
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = Field(
        "cosine", description="learning-rate schedule (transformers' get_scheduler), after the warm-up: linear, "
        "cosine: decay to 0 at the last step; cosine_with_restarts: cosine with hard restarts (one cycle); "
        "polynomial: linear decay to 1e-7; constant_with_warmup: constant; inverse_sqrt: inverse square-root decay; "
        "constant: constant from the first step (no warm-up allowed)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="warm-up as a fraction of all steps")
    warmup_steps: int = Field(0, ge=0, description="warm-up steps (give this or warmup_ratio)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip gradients to this norm (null: no clipping)")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="no: compute in the dtype the weights load in (model.dtype); bf16, fp16: accelerate's mixed "
        "precision in that dtype (fp16 with a loss scaler)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward to save memory")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="on a non-finite loss or gradient: stop with an error, or skip the update"
    )
    max_skipped_steps: int = Field(10, ge=1, description="with nan_policy: skip, stop after this many in a row")

    # checkpoints and evaluation
    save_steps: int | None = Field(500, ge=1, description="checkpoint every N steps (null: only at the end)")
    save_total_limit: int | None = Field(
        None, ge=1, description="keep the K best checkpoints by metric_for_best (the K newest when none has it) "
        "+ the latest; null: keep all")
    metric_for_best: str = Field("eval_loss", description="eval metric ranking checkpoints: eval_loss, eval_accuracy, eval_bleu, ...")
    greater_is_better: bool | None = Field(None, description="default: false for *loss, true otherwise")
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (default: save_steps)")
    resume_from: str | None = Field(None, description="a checkpoint folder, or 'auto' (latest in output_dir)")

    # logging
    logging_steps: int = Field(10, ge=1, description="log the mean loss and metrics every N steps")
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["none"],
        description="experiment trackers through accelerate: none, tensorboard, wandb, mlflow (one name or a list)")
    project: str = Field("oa", description="tracker project name")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> LoopConfig:
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("give at most one of 'warmup_ratio' and 'warmup_steps'")
        if self.lr_scheduler == "constant" and (self.warmup_ratio or self.warmup_steps):
            raise ValueError("lr_scheduler 'constant' has no warm-up: use 'constant_with_warmup', or drop the warm-up")
        if not self.metric_for_best.startswith("eval_"):
            raise ValueError(f"metric_for_best must name an eval metric (eval_...), got '{self.metric_for_best}'")
        return self

    @property
    def higher_is_better(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return not self.metric_for_best.endswith("loss")
