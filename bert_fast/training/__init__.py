"""Training pieces shared by pretraining and fine-tuning: optimizers, schedules, mixed precision."""

from .optim import Lamb, build_optimizer, linear_schedule, parameter_groups
from .precision import Precision

__all__ = ["Lamb", "Precision", "build_optimizer", "linear_schedule", "parameter_groups"]
