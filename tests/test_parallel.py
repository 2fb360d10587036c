import os
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import configs as config, optim, parallel, recipe, training as train
from charlm.cli import main
from charlm.engine import gluon, mx, nd
from charlm.errors import CharlmError, Interrupted
from charlm.launch import DMLC_ENV
from charlm.run import Run
from conftest import FIXED_FLAGS, TINY_FLAGS, without

TWO = [mx.cpu(0), mx.cpu(1)]


def curve(cfg, ctx):
    records = []
    train.fit(train.setup(cfg, ctx, parallel.connect(cfg, ctx)), None,
              callbacks=[SimpleNamespace(on_epoch=lambda record, samples: records.append(record))])
    return [(r["train_loss"], r["val_loss"], r["grad_norm"]) for r in records]


@pytest.mark.parametrize("cell, iterator, reduction, clip", [("lstm", "sequential", "mean", 0.05),
                                                            ("lstm", "random", "sum", 1.0),
                                                            ("scratch-gru", "sequential", "mean", 0.05)])
def test_two_cpu_contexts_follow_the_loss_curve_of_one(tiny_cfg, cell, iterator, reduction, clip):
    """Batch 2B split over 2 devices trains like batch 2B on one: same losses, same (clipped) gradient norms."""
    tiny_cfg.model.cell = cell
    tiny_cfg.data.iterator, tiny_cfg.train.loss_reduction, tiny_cfg.train.grad_clip = iterator, reduction, clip
    tiny_cfg.model.dropout, tiny_cfg.train.epochs = 0.0, 3  # dropout masks come from other random streams
    one, two = curve(tiny_cfg, mx.cpu()), curve(tiny_cfg, TWO)
    assert one[0][2] > clip  # the clip is active, so the norm it uses matters
    assert np.allclose(two, one, rtol=1e-5, atol=0)


def test_weight_drop_on_two_devices_keeps_their_weights_alike_and_trains(tiny_cfg):
    """Each device drops its own weights for a step and puts them back before the summed update."""
    tiny_cfg.model.weight_drop, tiny_cfg.train.epochs = 0.5, 2
    s = train.setup(tiny_cfg, TWO, parallel.connect(tiny_cfg, TWO))
    before = s.model.rnn.parameters.data(TWO[0]).asnumpy()
    records = []
    train.fit(s, None, callbacks=[SimpleNamespace(on_epoch=lambda record, samples: records.append(record))])
    first, second = (p.data(ctx).asnumpy() for p in [s.model.rnn.parameters] for ctx in TWO)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, before) and records[-1]["train_loss"] < records[0]["train_loss"]


def test_one_device_in_one_process_is_the_trivial_case(tiny_cfg):
    one = parallel.connect(tiny_cfg, mx.cpu(), "local")
    assert (one.ctxs, one.spread, one.share) == ([mx.cpu()], False, 1)
    X, Y, state = nd.zeros((3, 4)), nd.ones((3, 4)), [nd.ones((1, 4, 2))]
    assert one.split(X, Y) == [(X, Y)] and one.split_state(None, state) == [state]
    workers = parallel.connect(tiny_cfg, TWO, "device")
    assert workers.ctxs == TWO and (workers.rank, workers.num_workers, workers.spread, workers.share) == (0, 1, True, 2)


@pytest.mark.parametrize("summed", [False, True])
def test_clip_clips_the_gradient_summed_over_devices(summed):
    """Before the kvstore's sum (dist_async pushes), the norm is of the devices' sum; after it (summed), each
    device holds that sum already. Either way every device's gradient is scaled by the same factor."""
    rng = np.random.default_rng(0)
    parts = [[rng.normal(size=12), rng.normal(size=5)] for _ in TWO]
    if summed:
        parts = [[a + b for a, b in zip(*parts)]] * 2
    grads = [[nd.array(g, ctx=ctx) for g in device] for device, ctx in zip(parts, TWO)]
    whole = [a + b for a, b in zip(*parts)] if not summed else parts[0]
    max_norm, norm_of_whole = 0.5, np.sqrt(sum((w ** 2).sum() for w in whole))
    norm = optim.clip(None, grads, max_norm, summed=summed).asscalar()
    assert norm == pytest.approx(norm_of_whole, rel=1e-5) and norm > max_norm
    for device, original in zip(grads, parts):
        for got, want in zip(device, original):
            np.testing.assert_allclose(got.asnumpy(), want * max_norm / norm_of_whole, rtol=1e-4)


@pytest.mark.parametrize("kvstore, val_parts", [("dist_sync", 3), ("dist_async", 1)])
def test_shards_are_equal_contiguous_parts(kvstore, val_parts):
    ids, val = np.arange(100), np.arange(100, 130)
    shards = []
    for rank in range(3):
        workers = parallel.Workers([mx.cpu()], kvstore, SimpleNamespace(rank=rank, num_workers=3))
        shards.append(workers.shards(ids, val))
    assert [list(t) for t, _ in shards] == [list(range(33 * r, 33 * (r + 1))) for r in range(3)]
    vals = [list(v) for _, v in shards]
    assert vals == ([list(val)] * 3 if val_parts == 1 else [list(val[10 * r:10 * (r + 1)]) for r in range(3)])


CLUSTER = {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": "9", "DMLC_NUM_SERVER": "1",
           "DMLC_NUM_WORKER": "2"}


@pytest.mark.parametrize("env, ctx, kvstore, change, message", [
    ({}, TWO, "local", ("data", "batch_size", 3), "batch_size 3 does not split evenly over 2 devices"),
    ({}, mx.cpu(), "dist_sync", None, "missing: " + ", ".join(DMLC_ENV)),
    ({**CLUSTER, "DMLC_PS_ROOT_PORT": ""}, mx.cpu(), "dist_sync", None, r"missing: DMLC_PS_ROOT_PORT\)"),
    (CLUSTER, mx.cpu(), "dist_sync", ("train", "on_divergence", "rollback"), "use --on-divergence stop"),
    (CLUSTER, mx.cpu(), "dist_async", None, "pass --lr-decay 1"),
    (CLUSTER, mx.cpu(), "local", None, r"DMLC_ROLE=worker\) with --kvstore local"),
    ({}, mx.cpu(), "nccl", None, "unknown kvstore 'nccl'"),
])
def test_connect_refuses_what_it_cannot_train(env, ctx, kvstore, change, message):
    cfg = recipe.fixed(config.Config())
    if change:
        setattr(getattr(cfg, change[0]), change[1], change[2])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True), pytest.raises(CharlmError, match=message):
        parallel.connect(cfg, ctx, kvstore)


@pytest.mark.parametrize("ema", ["0.0", "0.8"])
def test_a_two_device_run_resumes_exactly_and_generates(corpus, tmp_path, ema):
    runs = tmp_path / "runs"
    args = [*without(FIXED_FLAGS, "--ema"), "--ema", ema, "--data", str(corpus), "--runs-dir", str(runs),
            *TINY_FLAGS, "--sample-every", "0", "--dropout", "0.3",
            "--ctx", "cpu:0,cpu:1"]
    for name, epochs in [("whole", "3"), ("cut", "2")]:
        result = CliRunner().invoke(main, ["train", *args, "--name", name, "--epochs", epochs])
        assert result.exit_code == 0, result.output
    assert "1 worker(s) x 2 device(s), kvstore local" in result.stdout
    result = CliRunner().invoke(main, ["train", "--resume", str(runs / "cut"), "--epochs", "3", "--ctx", "cpu:0,cpu:1"])
    assert result.exit_code == 0, result.output
    whole, cut = (Run(runs / name).metrics() for name in ("whole", "cut"))
    assert [r["epoch"] for r in cut] == [1, 2, 3]
    for a, b in zip(whole, cut):
        assert (a["train_loss"], a["val_loss"]) == pytest.approx((b["train_loss"], b["val_loss"]), abs=1e-6)
        assert a.get("val_loss_ema", 0.0) == pytest.approx(b.get("val_loss_ema", 0.0), abs=1e-6)
    assert ("val_loss_ema" in cut[-1]) == (ema != "0.0")
    generated = CliRunner().invoke(main, ["generate", "the", "--length", "5", "--run", str(runs / "cut")])
    assert generated.exit_code == 0 and generated.stdout.startswith("the") and len(generated.stdout) == 3 + 5 + 1


def test_a_two_device_run_checkpointed_mid_epoch_resumes_exactly(tiny_cfg, tmp_path):
    """The carried state of several devices is saved whole and split again on resume."""
    from charlm import parallel, training as train
    from charlm.engine import mx
    tiny_cfg.data.iterator, tiny_cfg.train.checkpoint_every, tiny_cfg.model.dropout = "sequential", 10, 0.3
    ctxs = [mx.cpu(0), mx.cpu(1)]

    def fit(name, stop_after=None):
        s = train.setup(tiny_cfg, ctxs, parallel.connect(tiny_cfg, ctxs))
        path = tmp_path / name
        run = Run(path) if path.exists() else Run.create(tmp_path, name)
        progress = train.restore(s, run) if (path / "state.json").exists() else None
        if progress is None:
            run.start(tiny_cfg, s.vocab)
        seen = []
        try:
            train.fit(s, run, progress, callbacks=[SimpleNamespace(on_batch=lambda *a: seen.append(1))],
                      stop=lambda: len(seen) == stop_after)
        except Interrupted:
            return run
        return run

    whole = fit("whole")
    cut = fit("cut", stop_after=30)
    assert cut.read_state()["step"] == 30 and list(cut.path.glob("last-*.hidden"))
    fit("cut")
    for a, b in zip(whole.metrics(), cut.metrics(), strict=True):
        assert (a["train_loss"], a["val_loss"]) == pytest.approx((b["train_loss"], b["val_loss"]), abs=1e-6)
