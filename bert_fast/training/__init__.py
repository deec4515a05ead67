"""Training pieces shared by pretraining and fine-tuning: optimizers, schedules, mixed precision, atomic
checkpoints with keep-last-K, RNG capture for exact resume, metrics logging and a progress bar.

Pretraining itself: `bert_fast.training.trainer.pretrain(PretrainConfig)` (imported on demand: it pulls in the
data pipeline).
"""

from ..errors import CheckpointWriteError
from .checkpointing import CheckpointManager
from .metrics import MetricsLogger, Progress, read_metrics
from .optim import Lamb, build_optimizer, linear_schedule, parameter_groups
from .precision import Precision
from .rng import rng_state, seed_everything, set_rng_state

__all__ = [
    "CheckpointManager",
    "CheckpointWriteError",
    "Lamb",
    "MetricsLogger",
    "Precision",
    "Progress",
    "build_optimizer",
    "linear_schedule",
    "parameter_groups",
    "read_metrics",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]
