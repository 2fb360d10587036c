import math
from types import SimpleNamespace

import numpy as np
import pytest

from charlm import lines, model as models, training as train, vocab as vocabs
from charlm.engine import mx, nd

BOS, EOS = 0, 1


def test_each_line_is_a_sequence_from_line_start_to_line_end():
    ids = np.array([5, 6, EOS, 7, EOS, 8, 9, 9, EOS], dtype=np.uint8)
    batches = lines.LineBatches(ids, BOS, EOS, batch_size=4, buckets=[4])
    X, Y = batches[0]
    assert X.shape == (4, 4)
    assert X[:, 0].tolist() == [BOS, 5, 6, 0] and Y[:, 0].tolist() == [5, 6, EOS, lines.PAD]
    assert X[:, 1].tolist() == [BOS, 7, 0, 0] and Y[:, 1].tolist() == [7, EOS, lines.PAD, lines.PAD]
    assert Y[:, 2].tolist() == [8, 9, 9, EOS]
    assert (Y[:, 3] == lines.PAD).all()  # a short last batch is filled with empty rows, never dropped


def test_lines_go_to_the_smallest_bucket_that_fits_and_long_ones_are_split():
    ids = np.array([5, EOS] + [6] * 9 + [EOS] + [7, 7, 7, EOS], dtype=np.uint8)
    batches = lines.LineBatches(ids, BOS, EOS, batch_size=8, buckets=[2, 4])
    assert batches.num_split == 1
    targets = []
    for X, Y in batches:
        for n in range(X.shape[1]):
            targets.append([int(t) for t in Y[:, n] if t != lines.PAD])
    # every target appears exactly once: the 10 targets of the long line as 4 + 4 + 2
    assert sorted(map(tuple, filter(None, targets))) == sorted([(5, EOS), (6,) * 4, (6,) * 4, (6, EOS), (7, 7, 7, EOS)])
    assert {X.shape[0] for X, _ in batches} == {2, 4}


def test_a_bucket_longer_than_any_line_pads_only_to_the_longest_line():
    """Padding past the longest line is all padding: [4, 10**11] pads as [4, 10] (it allocated 11.6 TiB)."""
    ids = np.array([5, EOS] + [6] * 9 + [EOS] + [7, 7, 7, EOS], dtype=np.uint8)
    batches = lines.LineBatches(ids, BOS, EOS, batch_size=8, buckets=[4, 10**11])
    assert batches.buckets == [4, 10] and batches.num_split == 0
    assert {X.shape[0] for X, _ in batches} == {4, 10}


def test_a_text_without_a_final_line_end_gets_one():
    X, Y = lines.LineBatches(np.array([5, 6], dtype=np.uint8), BOS, EOS, 1, [3])[0]
    assert X[:, 0].tolist() == [BOS, 5, 6] and Y[:, 0].tolist() == [5, 6, EOS]


def test_shuffling_changes_the_order_not_the_content():
    rng = np.random.default_rng(0)
    ids = np.concatenate([np.append(rng.integers(2, 9, rng.integers(1, 30)), EOS) for _ in range(200)]).astype(np.uint8)
    fixed = lines.LineBatches(ids, BOS, EOS, 8)
    shuffled = lines.LineBatches(ids, BOS, EOS, 8, rng=np.random.default_rng(1))

    def columns(b):
        return sorted(tuple(Y[:, n][Y[:, n] != lines.PAD]) for X, Y in b for n in range(Y.shape[1]))
    assert columns(fixed) == columns(shuffled)
    assert [Y.tolist() for _, Y in fixed] != [Y.tolist() for _, Y in shuffled]


def test_auto_buckets_cover_the_lengths_in_multiples_of_8():
    lengths = np.array([3] * 50 + [20] * 40 + [70] * 9 + [75])
    buckets = lines.auto_buckets(lengths)
    assert buckets == sorted(buckets) and all(b % 8 == 0 for b in buckets) and buckets[-1] == 80
    assert lines.auto_buckets(np.array([10] * 999 + [5000]))[-1] == 40  # an outlier is split, not padded to


def test_validation_split_falls_on_a_line_end():
    ids = np.array([5, 5, EOS, 6, 6, EOS, 7, 7, EOS, 8, EOS], dtype=np.uint8)
    train_ids, val_ids = lines.split(ids, 0.5, EOS)
    assert train_ids.tolist() == [5, 5, EOS, 6, 6, EOS] and val_ids.tolist() == [7, 7, EOS, 8, EOS]


@pytest.mark.parametrize("cell", ["lstm", "scratch-gru"])
def test_the_loss_of_a_padded_batch_is_the_loss_of_its_lines_one_by_one(cell, tiny_model):
    """Masking proven: padding adds nothing to the loss, and so nothing to the gradient."""
    model = tiny_model(cell, 10, dropout=0.0)
    ids = np.array([5, 6, 7, EOS, 8, EOS, 9, 9, 9, 9, 9, EOS], dtype=np.uint8)
    X, Y = lines.LineBatches(ids, BOS, EOS, batch_size=4, buckets=[6])[0]
    loss_fn = models.TokenNLL(masked=True)
    logits, _ = model(nd.array(X), model.begin_state(4, mx.cpu()))
    padded = float(loss_fn(logits, nd.array(Y)).sum().asscalar())
    one_by_one = 0.0
    for line in ([5, 6, 7], [8], [9] * 5):
        x, y = nd.array([BOS] + line).reshape((-1, 1)), nd.array(line + [EOS]).reshape((-1, 1))
        out, _ = model(x, model.begin_state(1, mx.cpu()))
        one_by_one += float(loss_fn(out, y).sum().asscalar())
    assert padded == pytest.approx(one_by_one, rel=1e-5)


def test_lines_mode_trains_and_evaluates_per_real_token(tiny_cfg):
    tiny_cfg.data.mode, tiny_cfg.data.batch_size, tiny_cfg.train.epochs = "lines", 2, 5
    s = train.setup(tiny_cfg, mx.cpu())
    assert s.vocab.tokens[s.vocab.bos] == vocabs.BOS and s.vocab.tokens[s.vocab.eos] == "\n"
    assert s.train_ids[-1] == s.vocab.eos  # the split falls on a line end
    records = []
    train.fit(s, None, callbacks=[SimpleNamespace(on_epoch=lambda record, samples: records.append(record))])
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.3
    nll, tokens = train.evaluate(s.model, s.val_ids, tiny_cfg, s.vocab, mx.cpu())
    assert tokens == len(s.val_ids)  # every line's characters and its line end, no padding, no line start
    assert math.isclose(nll / tokens, records[-1]["val_loss"], rel_tol=1e-6)
