"""The feature-based use: layer combinations against transformers' hidden states, and the features command."""

import numpy as np
import pytest
import torch
import transformers

import bert_fast
from bert_fast import cli
from bert_fast.finetune.features import ScalarMix, combine_layers, extract_features


@pytest.fixture(scope="module")
def pair():
    config = transformers.BertConfig(vocab_size=97, hidden_size=16, num_hidden_layers=5, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=32, attn_implementation="eager")
    hf = transformers.BertModel(config).eval()
    ours = bert_fast.BertModel(bert_fast.BertConfig.from_dict(config.to_dict()), impl="reference").eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


def test_combinations_match_transformers_hidden_states(pair):
    hf, ours = pair
    ids = torch.randint(1, 97, (2, 9))
    with torch.no_grad():
        want = hf(input_ids=ids, output_hidden_states=True).hidden_states  # embeddings + 5 layers
        got = ours(ids, output_hidden_states=True).hidden_states
    cases = {
        "embeddings": want[0],
        "last": want[-1],
        "second-to-last": want[-2],
        "sum-last-four": want[-4] + want[-3] + want[-2] + want[-1],
        "concat-last-four": torch.cat(want[-4:], dim=-1),
        "weighted-sum-all": sum(want[1:]) / 5,  # uniform scalar mix over the encoder layers
    }
    for how, expected in cases.items():
        out = combine_layers(got, how)
        assert out.shape == expected.shape, how
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=how)
    torch.testing.assert_close(combine_layers(got, [1, -1], combine="mean"), (want[1] + want[-1]) / 2)
    weights = [0.0, 0.0, 0.0, 0.0, float(np.log(3.0))]  # softmax -> 1/7 each, 3/7 on the last
    torch.testing.assert_close(combine_layers(got, "weighted-sum-all", weights=weights),
                               sum(want[1:5]) / 7 + 3 * want[5] / 7, atol=1e-5, rtol=1e-5)


def test_combination_errors(pair):
    _, ours = pair
    states = ours(torch.randint(1, 97, (1, 4)), output_hidden_states=True).hidden_states
    with pytest.raises(ValueError, match="not one of"):
        combine_layers(states, "middle")
    with pytest.raises(ValueError, match=r"layer indices \[9\]"):
        combine_layers(states, [9])
    with pytest.raises(ValueError, match="needs at least 4 layers"):
        combine_layers(states[:3], "concat-last-four")
    with pytest.raises(ValueError, match="5 layers but 2 weights"):
        ScalarMix(5, [1.0, 2.0])


def test_scalar_mix_is_trainable():
    mix = ScalarMix(3)
    layers = [torch.randn(2, 4) for _ in range(3)]
    mix(layers).sum().backward()
    assert mix.weights.grad is not None and mix.gamma.grad is not None


def test_extract_features_pools_and_keeps_real_tokens(tiny_model):
    model = bert_fast.BertModel.from_pretrained(tiny_model, impl="reference")
    tokenizer = bert_fast.BertTokenizer.from_pretrained(tiny_model)
    texts = ["bad", "the movie was good", "fine"]  # batched longest first, returned in this order
    tokens, ids = extract_features(model, tokenizer, texts, "last", batch_size=2)
    assert [t.shape for t in tokens] == [(len(i), 128) for i in ids]
    assert ids == [tokenizer.encode(t)["input_ids"] for t in texts]
    with torch.no_grad():
        alone = model(torch.tensor([ids[0]])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(tokens[0], alone, atol=1e-5)  # padding in the batch changes nothing
    pooled, _ = extract_features(model, tokenizer, texts, "last", pooling="mean")
    np.testing.assert_allclose(pooled[1], tokens[1].mean(0), atol=1e-6)


def test_features_command(tiny_model, tmp_path):
    out = tmp_path / "f.npz"
    # the tiny model has 2 layers: the last two, concatenated
    assert cli.main(["features", "--model", str(tiny_model), "--layers=-1,-2", "--output", str(out),
                     "hello world", "the movie was good"]) == 0
    data = np.load(out)
    assert data["features"].shape == (data["offsets"][-1], 256) and len(data["offsets"]) == 3
    assert len(data["input_ids"]) == data["offsets"][-1]
    assert cli.main(["features", "--model", str(tiny_model), "--layers", "last", "--pooling", "cls",
                     "--output", str(out), "a", "b", "c"]) == 0
    assert np.load(out)["features"].shape == (3, 128)
    with pytest.raises(SystemExit, match="needs at least 4 layers"):
        cli.main(["features", "--model", str(tiny_model), "--layers", "sum-last-four", "--output", str(out), "a"])
