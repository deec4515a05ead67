import pytest
import torch

from bert_fast.data.masking import MaskingSettings, choose_positions, mask_tokens

VOCAB, MASK_ID, SPECIAL_IDS = 1000, 4, (0, 1, 2, 3, 4)


def _batch(batch=256, seq=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, seq + 1, (batch,), generator=g)
    lengths[0], lengths[1] = seq, 5  # a full row and a very short one
    ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
    pos = torch.arange(seq)
    len_a = (lengths - 3) // 2
    ids[:, 0] = 2
    ids[torch.arange(batch), len_a + 1] = 3
    ids[torch.arange(batch), lengths - 1] = 3
    ids[pos[None] >= lengths[:, None]] = 0
    special = (pos[None] >= lengths[:, None]) | (pos[None] == 0) | (pos[None] == (len_a + 1)[:, None]) | \
        (pos[None] == (lengths - 1)[:, None])
    word_start = torch.rand(batch, seq, generator=g) < 0.6  # words of 1-several pieces
    return ids, special, word_start


def _mask(ids, special, word_start, settings, seed=1):
    replacement = torch.tensor([i for i in range(VOCAB) if i not in SPECIAL_IDS])
    return mask_tokens(ids, special, word_start, replacement, MASK_ID, settings, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_statistics(whole_word):
    ids, special, word_start = _batch()
    out, labels = _mask(ids, special, word_start, MaskingSettings(whole_word=whole_word))
    chosen = labels != -100
    real = ~special
    assert not (chosen & special).any()  # never [CLS], [SEP] or padding
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == -100).all()
    assert torch.equal(out[~chosen], ids[~chosen])
    per_row = chosen.sum(1).float() / real.sum(1).float()
    assert (chosen.sum(1) >= 1).all()
    share = chosen.sum().item() / real.sum().item()
    if whole_word:
        assert 0.12 <= share <= 0.155, share  # whole words fill the budget from below
    else:
        assert abs(share - 0.15) < 0.005, share  # round(15%) per row
        assert ((per_row - 0.15).abs()[2:] <= 0.5 / real.sum(1)[2:] + 1e-6).all()
    n = chosen.sum().item()
    masked = (out == MASK_ID) & chosen
    kept = (out == ids) & chosen
    replaced = chosen & ~masked & ~kept
    # 80/10/10 (a random replacement equal to the original counts as kept: rare with 1000 ids).
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(replaced.sum().item() / n - 0.1) < 0.025
    assert abs(kept.sum().item() / n - 0.1) < 0.025
    assert not torch.isin(out[replaced], torch.tensor(SPECIAL_IDS)).any()  # random tokens are never specials


def test_whole_word_groups_are_masked_together():
    ids, special, word_start = _batch(batch=64, seq=64, seed=5)
    _, labels = _mask(ids, special, word_start, MaskingSettings(whole_word=True), seed=9)
    chosen = labels != -100
    groups = (word_start | special).long().cumsum(1)
    for row in range(ids.shape[0]):
        for g in groups[row][chosen[row]].unique():
            members = (groups[row] == g) & ~special[row]
            assert chosen[row][members].all(), (row, g)  # every piece of a chosen word is chosen


def test_pieces_alone_without_whole_word():
    ids, special, word_start = _batch(batch=64, seq=64, seed=5)
    chosen = choose_positions(special, word_start, MaskingSettings(), torch.Generator().manual_seed(2))
    groups = (word_start | special).long().cumsum(1)
    split_words = 0
    for row in range(ids.shape[0]):
        for g in groups[row][chosen[row]].unique():
            members = (groups[row] == g) & ~special[row]
            split_words += int(not chosen[row][members].all())
    assert split_words > 0  # per-piece masking does break words: the whole-word test above is not vacuous


def test_masks_depend_only_on_the_seed():
    ids, special, word_start = _batch(batch=16, seq=32)
    a = _mask(ids, special, word_start, MaskingSettings(), seed=3)
    b = _mask(ids, special, word_start, MaskingSettings(), seed=3)
    c = _mask(ids, special, word_start, MaskingSettings(), seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_bad_settings():
    with pytest.raises(ValueError, match="mlm_probability"):
        MaskingSettings(mlm_probability=0).validate()
    with pytest.raises(ValueError, match="sum to at most 1"):
        MaskingSettings(mask_fraction=0.9, random_fraction=0.2).validate()
