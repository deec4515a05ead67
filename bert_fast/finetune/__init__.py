"""Fine-tuning and feature extraction: data readers, SQuAD windows and span search, metrics, the runner.

Importing this package needs scikit-learn, scipy and seqeval only where their metrics are computed
(`pip install bert-fast[finetune]`).
"""

from ..errors import DataError
from .features import ScalarMix, combine_layers, extract_features
from .issues import Issues
from .runner import FinetuneConfig, finetune, predict_file
from .tasks import TASKS

__all__ = ["TASKS", "DataError", "FinetuneConfig", "Issues", "ScalarMix", "combine_layers", "extract_features",
           "finetune", "predict_file"]
