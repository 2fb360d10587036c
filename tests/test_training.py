import gc
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from charlm import data, model as models, training as train
from charlm.engine import mx, nd
from charlm.errors import CharlmError, Interrupted


class Records:
    """A callback that keeps the epoch records fit reports."""

    def __init__(self):
        self.records = []

    def on_epoch(self, record, samples):
        self.records.append(record)


def fit_records(s):
    """fit s without a run directory; return its epoch records."""
    kept = Records()
    train.fit(s, None, callbacks=[kept])
    return kept.records


def test_loss_falls_on_a_small_corpus(tiny_cfg):
    tiny_cfg.train.epochs = 4
    s = train.setup(tiny_cfg, mx.cpu())
    losses = [r["train_loss"] for r in fit_records(s)]
    assert losses[-1] < losses[0] - 0.5
    assert losses[0] < math.log(len(s.vocab)) + 0.2  # starts near uniform guessing


def test_training_leaves_no_pile_of_mxnets_reference_cycles(tiny_cfg):
    tiny_cfg.train.epochs = 5  # about 300 batches, each leaving some 20 unreachable objects in cycles
    gc.collect()
    fit_records(train.setup(tiny_cfg, mx.cpu()))
    assert gc.collect() < 400  # collected as training goes: about 160 left (without: 800 to 950, holding arrays)


def test_fit_records_every_metric(tiny_cfg):
    record = fit_records(train.setup(tiny_cfg, mx.cpu()))[0]
    for key in ["epoch", "train_loss", "train_ppl", "val_loss", "val_ppl", "val_bpc", "tokens_per_s", "elapsed_s"]:
        assert key in record
    assert record["val_ppl"] == pytest.approx(math.exp(record["val_loss"]))
    assert record["val_bpc"] == pytest.approx(record["val_loss"] / math.log(2))


def test_evaluate_is_exp_of_mean_nll_over_all_tokens(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    ids = s.val_ids
    tiny_cfg.data.batch_size, tiny_cfg.data.seq_len = 3, 5
    nll, tokens = train.evaluate(s.model, ids, tiny_cfg, s.vocab, mx.cpu())
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
    X, Y = next(iter(data.RandomBatches(s.train_ids, 4, 8, np.random.default_rng(0))))
    flat = [[p.grad().reshape((-1,)) for p in params]]
    _, norm, _ = train.train_step(s, train.objective_of(s), flat, [(nd.array(X), nd.array(Y))], [s.model.begin_state(4, mx.cpu())])
    return float(norm.asscalar()), grad_norm(params)


def test_weight_drop_updates_the_kept_weights_by_the_masked_gradient(tiny_cfg):
    tiny_cfg.model.weight_drop, tiny_cfg.model.dropout, tiny_cfg.train.grad_clip = 0.5, 0.0, 0
    tiny_cfg.train.optimizer, tiny_cfg.train.lr = "sgd", 0.1
    s = train.setup(tiny_cfg, mx.cpu())
    layer = s.model.rnn
    X, Y = next(iter(data.RandomBatches(s.train_ids, 4, 8, np.random.default_rng(0))))
    before = layer.parameters.data().asnumpy()
    flat = [[p.grad().reshape((-1,)) for p in s.model.collect_params().values() if p.grad_req != "null"]]
    drop = models.WeightDrop.of(s.model, [mx.cpu()])
    train.train_step(s, train.objective_of(s), flat, [(nd.array(X), nd.array(Y))], [s.model.begin_state(4, mx.cpu())],
                     drop)
    grad = layer.parameters.grad().asnumpy()
    h2h = np.concatenate([grad[begin:end] for name, _, begin, end in layer.spans() if name.endswith("h2h_weight")])
    assert 0.3 < (h2h == 0).mean() < 0.7  # the dropped weights have no gradient
    np.testing.assert_allclose(layer.parameters.data().asnumpy(), before - 0.1 * grad, rtol=1e-5, atol=1e-7)


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

    def spy(s, objective, grads, batch, states, drop=None):
        seen.append(float(sum(abs(h).sum().asscalar() for h in states[0])))
        return real_step(s, objective, grads, batch, states, drop)

    monkeypatch.setattr(train, "train_step", spy)
    train.fit(s, None)
    assert seen[0] == 0 and all(v > 0 for v in seen[1:3])


def test_same_seed_gives_the_same_run(tiny_cfg):
    runs = []
    for _ in range(2):
        runs.append([r["train_loss"] for r in fit_records(train.setup(tiny_cfg, mx.cpu()))])
    assert runs[0] == runs[1]


def test_divergence_stops_with_a_clear_error(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    s.model.decoder.bias.set_data(nd.full(s.model.decoder.bias.shape, float("nan")))  # a NaN, as overflow makes
    kept = Records()
    with pytest.raises(CharlmError, match=r"diverged at step 1 \(epoch 1\)"):
        train.fit(s, None, callbacks=[kept])
    assert kept.records == []  # no epoch finished, so nothing was checkpointed


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

    train.fit(s, run, callbacks=[SimpleNamespace(on_epoch=poison_once)])
    records = run.metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["lr"] == tiny_cfg.train.lr and records[1]["lr"] == tiny_cfg.train.lr / 2
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert run.read_state()["lr_scale"] == 0.5  # a resume keeps the halved rate


def test_a_rollback_keeps_its_halved_learning_rate_in_state_json_before_any_later_checkpoint(tiny_cfg, tmp_path,
                                                                                               monkeypatch):
    """Divergence that never recovers: each rollback's rate is in state.json at once, so a resume keeps it."""
    from charlm.run import Run
    tiny_cfg.train.on_divergence = "rollback"
    s = train.setup(tiny_cfg, mx.cpu())
    run = Run.create(tmp_path, "r")
    run.start(tiny_cfg, s.vocab)
    real = train.Sums.end_stretch

    def always_bad(sums, start, first):
        real(sums, start, first)
        return first

    monkeypatch.setattr(train.Sums, "end_stretch", always_bad)
    with pytest.raises(CharlmError, match="diverged"):
        train.fit(s, run)
    assert run.read_state()["lr_scale"] == 0.5 ** train.MAX_ROLLBACKS
    progress = train.restore(s, run)
    assert (progress.epoch, progress.step, progress.lr_scale) == (0, 0, 0.5 ** train.MAX_ROLLBACKS)


def test_rollback_gives_up_after_three_tries(tiny_cfg, monkeypatch):
    tiny_cfg.train.on_divergence = "rollback"
    s = train.setup(tiny_cfg, mx.cpu())
    real, tries = train.Sums.end_stretch, []

    def always_bad(sums, start, first):
        tries.append(1)
        real(sums, start, first)
        return first

    monkeypatch.setattr(train.Sums, "end_stretch", always_bad)
    with pytest.raises(CharlmError, match="diverged at step 1"):
        train.fit(s, None)
    assert len(tries) == 1 + train.MAX_ROLLBACKS


def train_in(tiny_cfg, path, stop_after=None):
    """Train tiny_cfg into run directory path, stopping before batch `stop_after` (counted over the run)."""
    from charlm.run import Run
    s = train.setup(tiny_cfg, mx.cpu())
    run = Run.create(path.parent, path.name) if not path.exists() else Run(path)
    if path.joinpath("state.json").exists():
        progress = train.restore(s, run)
    else:
        run.start(tiny_cfg, s.vocab)
        progress = None
    seen = []
    try:
        train.fit(s, run, progress, callbacks=[SimpleNamespace(on_batch=lambda *a: seen.append(1))],
                  stop=lambda: stop_after is not None and len(seen) == stop_after)
    except Interrupted:
        return run, None
    return run, [v.data().asnumpy() for v in s.model.collect_params().values()]


@pytest.mark.parametrize("dropout, every, stop_after", [
    (0.3, 10, 30),   # at a checkpoint boundary: dropout masks replay too
    (0.0, 10, 44),   # anywhere else (Ctrl-C): exact when there is no dropout to replay
    (0.0, 0, 80),    # in the second epoch without checkpoint_every: Ctrl-C still saves where it stopped
])
def test_a_run_stopped_mid_epoch_resumes_exactly(tiny_cfg, tmp_path, dropout, every, stop_after):
    tiny_cfg.data.iterator, tiny_cfg.model.dropout, tiny_cfg.train.checkpoint_every = "sequential", dropout, every
    whole, expected = train_in(tiny_cfg, tmp_path / "whole")
    cut, stopped = train_in(tiny_cfg, tmp_path / "cut", stop_after)
    assert stopped is None
    state = cut.read_state()
    per_epoch = len(data.SequentialBatches(train.setup(tiny_cfg, mx.cpu()).train_ids, 4, 8, np.random.default_rng(0)))
    assert (state["epoch"], state["step"]) == divmod(stop_after, per_epoch)
    assert sorted(p.name for p in cut.path.glob("last-*")) == [
        f"last-e{state['epoch']}-s{state['step']}.{ext}" for ext in ("hidden", "optim", "params")]
    _, got = train_in(tiny_cfg, tmp_path / "cut")
    for a, b in zip(whole.metrics(), cut.metrics(), strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mid_epoch_checkpoints_do_not_change_training_without_dropout(tiny_cfg, tmp_path):
    tiny_cfg.model.dropout = 0.0
    _, plain = train_in(tiny_cfg, tmp_path / "plain")
    tiny_cfg.train.checkpoint_every = 7
    run, checkpointed = train_in(tiny_cfg, tmp_path / "every7")
    for a, b in zip(plain, checkpointed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert run.read_state()["last"] == "e2-s0" and len(list(run.path.glob("last-*"))) == 2  # old ones removed


def test_rollback_goes_back_to_a_mid_epoch_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    """A NaN after a mid-epoch checkpoint rolls back to it, not to the start of the epoch."""
    tiny_cfg.train.on_divergence, tiny_cfg.train.checkpoint_every, tiny_cfg.train.epochs = "rollback", 20, 1
    real, starts = train.Sums.end_stretch, []

    def nan_once_at_40(sums, start, first):
        starts.append(first)
        bad = real(sums, start, first)
        return 45 if first == 40 and starts.count(40) == 1 else bad

    monkeypatch.setattr(train.Sums, "end_stretch", nan_once_at_40)
    run, _ = train_in(tiny_cfg, tmp_path / "r")
    assert starts[:5] == [0, 20, 40, 40, 60]
    assert run.read_state()["lr_scale"] == 0.5 and [r["epoch"] for r in run.metrics()] == [1]


def test_sums_add_up_on_the_host_and_find_the_first_non_finite_batch():
    sums = train.Sums.of({"nll": 1.5, "grad_norm": 0.5, "tokens": 10, "train_s": 2.0})  # a mid-epoch checkpoint's
    batches = [(2.0, 1.0), (3.0, float("nan")), (float("inf"), 2.0), (4.0, 1.0)]
    for total, norm in batches[:2]:
        sums.add(nd.array([total]), nd.array([norm]), 5)
    assert sums.mean_loss() == pytest.approx((1.5 + 2.0 + 3.0) / 20)
    assert sums.end_stretch(time.perf_counter(), first=7) == 8  # the stretch's second batch
    for total, norm in batches[2:]:
        sums.add(nd.array([total]), nd.array([norm]), 5)
    assert sums.end_stretch(time.perf_counter(), first=9) == 9
    read = sums.read()
    assert read["tokens"] == 30 and read["train_s"] >= 2.0
    assert read["nll"] == float("inf") and math.isnan(read["grad_norm"])
    clean = train.Sums()
    clean.add(nd.array([2.0]), nd.array([1.0]), 4)
    assert clean.end_stretch(time.perf_counter(), first=0) is None
    assert clean.end_stretch(time.perf_counter(), first=1) is None  # an empty stretch
    assert clean.read()["nll"] == 2.0 and clean.read()["grad_norm"] == 1.0
