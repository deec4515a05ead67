"""Input checks that need a second device: a batch on the CPU for a model on the GPU is a clear error."""

import pytest
import torch

import bert_fast
from bert_fast import InputError
from tests.model.conftest import tiny_config

pytestmark = pytest.mark.gpu


def test_device_mix():
    model = bert_fast.BertModel(tiny_config()).cuda()
    with pytest.raises(InputError, match="is on cpu but the model is on cuda"):
        model(torch.zeros(1, 4, dtype=torch.long))
