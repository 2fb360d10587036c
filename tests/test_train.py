import math

import numpy as np
import pytest

from charlm import data, model as models, train
from charlm.engine import mx, nd
from charlm.errors import CharlmError


class NoRun:
    """Stands in for a run directory: records what fit asks to save."""

    def __init__(self):
        self.records = []

    def save_checkpoint(self, model, trainer, record, is_best, lr_scale=1.0):
        self.records.append((record, is_best))


def test_loss_falls_on_a_small_corpus(tiny_cfg):
    tiny_cfg.train.epochs = 4
    s = train.setup(tiny_cfg, mx.cpu())
    run = NoRun()
    train.fit(s, run)
    losses = [r["train_loss"] for r, _ in run.records]
    assert losses[-1] < losses[0] - 0.5
    assert losses[0] < math.log(len(s.vocab)) + 0.2  # starts near uniform guessing


def test_fit_records_every_metric(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    run = NoRun()
    train.fit(s, run)
    record, is_best = run.records[0]
    assert is_best
    for key in ["epoch", "train_loss", "train_ppl", "val_loss", "val_ppl", "val_bpc", "tokens_per_s", "elapsed_s"]:
        assert key in record
    assert record["val_ppl"] == pytest.approx(math.exp(record["val_loss"]))
    assert record["val_bpc"] == pytest.approx(record["val_loss"] / math.log(2))


def test_evaluate_is_exp_of_mean_nll_over_all_tokens(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    ids = s.val_ids
    nll, tokens = train.evaluate(s.model, ids, 3, 5, mx.cpu())
    # Reference: the whole of each stream in one call, scored in NumPy.
    streams = data.eval_batches(ids, 3, 5)
    logits, _ = s.model(nd.array(streams.x), s.model.begin_state(3, mx.cpu()))
    logits = logits.asnumpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.take_along_axis(log_probs, streams.y[..., None].astype(int), -1).sum()
    assert tokens == streams.x.size
    assert nll == pytest.approx(ref, rel=1e-4)


def grad_norm(params):
    return math.sqrt(sum(float((p.grad() ** 2).sum().asscalar()) for p in params))


def one_step(tiny_cfg, clip, reduction="mean"):
    tiny_cfg.train.grad_clip, tiny_cfg.train.loss_reduction = clip, reduction
    s = train.setup(tiny_cfg, mx.cpu())
    params = [p for p in s.model.collect_params().values() if p.grad_req != "null"]
    trainer = train.make_trainer(s.model, tiny_cfg.train)
    X, Y = next(iter(data.RandomBatches(s.train_ids, 4, 8, np.random.default_rng(0))))
    _, norm, _ = train.train_step(s.model, models.TokenNLL(), trainer, [p.grad() for p in params],
                                  nd.array(X), nd.array(Y), s.model.begin_state(4, mx.cpu()), tiny_cfg.train)
    return float(norm.asscalar()), grad_norm(params)


def test_clipping_bounds_the_norm_and_reports_the_norm_before(tiny_cfg):
    unclipped, after = one_step(tiny_cfg, 0)
    assert after == pytest.approx(unclipped, rel=1e-4)
    clip = unclipped / 4
    before, after = one_step(tiny_cfg, clip)
    assert before == pytest.approx(unclipped, rel=1e-4)
    assert after == pytest.approx(clip, rel=1e-3)


def test_sum_reduction_scales_the_gradient_by_the_token_count(tiny_cfg):
    """The tutorial's scaling: the gradient of the summed loss is T*N times that of the mean."""
    mean_norm, _ = one_step(tiny_cfg, 0, "mean")
    sum_norm, _ = one_step(tiny_cfg, 0, "sum")
    assert sum_norm == pytest.approx(mean_norm * 8 * 4, rel=1e-4)


def test_sequential_training_carries_state_between_batches(tiny_cfg, monkeypatch):
    tiny_cfg.data.iterator = "sequential"
    s = train.setup(tiny_cfg, mx.cpu())
    seen = []
    real_step = train.train_step

    def spy(model, loss_fn, trainer, grads, X, Y, state, tcfg):
        seen.append(float(sum(abs(h).sum().asscalar() for h in state)))
        return real_step(model, loss_fn, trainer, grads, X, Y, state, tcfg)

    monkeypatch.setattr(train, "train_step", spy)
    train.fit(s, NoRun())
    assert seen[0] == 0 and all(v > 0 for v in seen[1:3])


def test_same_seed_gives_the_same_run(tiny_cfg):
    runs = []
    for _ in range(2):
        run = NoRun()
        train.fit(train.setup(tiny_cfg, mx.cpu()), run)
        runs.append([r["train_loss"] for r, _ in run.records])
    assert runs[0] == runs[1]


def test_divergence_stops_with_a_clear_error(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    s.model.decoder.bias.set_data(nd.full(s.model.decoder.bias.shape, float("nan")))  # a NaN, as overflow makes
    run = NoRun()
    with pytest.raises(CharlmError, match=r"diverged at step 1 \(epoch 1\)"):
        train.fit(s, run)
    assert run.records == []  # nothing written over the checkpoints of earlier epochs


def test_rollback_reloads_the_last_checkpoint_with_half_the_learning_rate(tiny_cfg, tmp_path):
    from charlm.run import Run
    tiny_cfg.train.on_divergence, tiny_cfg.train.epochs, tiny_cfg.train.lr_decay = "rollback", 3, 1.0
    s = train.setup(tiny_cfg, mx.cpu())
    run = Run.create(tmp_path, "r")
    run.start(tiny_cfg, s.vocab)
    poisoned = []

    def poison_once(record, samples):  # a real NaN in the weights after epoch 1: epoch 2 diverges
        if not poisoned:
            poisoned.append(record["epoch"])
            s.model.decoder.bias.set_data(nd.full(s.model.decoder.bias.shape, float("nan")))

    train.fit(s, run, on_epoch=poison_once)
    records = run.metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["lr"] == tiny_cfg.train.lr and records[1]["lr"] == tiny_cfg.train.lr / 2
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert run.read_state()["lr_scale"] == 0.5  # a resume keeps the halved rate


def test_rollback_gives_up_after_three_tries(tiny_cfg, monkeypatch):
    tiny_cfg.train.on_divergence = "rollback"
    s = train.setup(tiny_cfg, mx.cpu())
    real, tries = train.train_epoch, []

    def always_bad(*args):
        tries.append(1)
        return {**real(*args), "first_bad_batch": 0}

    monkeypatch.setattr(train, "train_epoch", always_bad)
    with pytest.raises(CharlmError, match="diverged at step 1"):
        train.fit(s, NoRun())
    assert len(tries) == 1 + train.MAX_ROLLBACKS
