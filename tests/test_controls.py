"""The training controls against references: time limit, cosine schedule and warmup, early stopping, weight
decay, the weights' moving average, the text's case and TensorBoard events."""
import json
import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import checkpoint, optim, parallel, text, training as train
from charlm.cli import main
from charlm.configs import DataConfig
from charlm.engine import mx, nd
from test_training import train_in
from conftest import FIXED_FLAGS, TINY_FLAGS

TINY = [*FIXED_FLAGS, *TINY_FLAGS, "--sample-every", "0", "--dropout", "0"]


class Clock:
    """A stand-in for time.perf_counter that moves `tick` seconds at each reading, or only when told."""

    def __init__(self, tick=0.0):
        self.now, self.tick = 1000.0, tick

    def perf_counter(self):
        self.now += self.tick
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock(tick=0.5)
    monkeypatch.setattr(train, "time", fake)
    monkeypatch.setattr(parallel, "time", fake)
    return fake


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def params(model):
    return [p.data().asnumpy() for p in model.collect_params().values()]


class Seen:
    """A callback that keeps, after every step, the learning rate and the model's weights."""

    def __init__(self, s, trainer):
        self.s, self.trainer, self.lrs, self.weights = s, trainer, [], [params(s.model)]

    def on_batch(self, done, total, tokens, mean_loss):
        self.lrs.append(self.trainer.learning_rate)
        self.weights.append(params(self.s.model))


def fit_seen(cfg, clock=None, tick=0.0):
    """fit cfg without a run directory; return (setup, Seen); the fake clock, if any, moves tick per step."""
    s = train.setup(cfg, mx.cpu())
    seen = Seen(s, s.trainer)
    advance = SimpleNamespace(on_batch=lambda *a: setattr(clock, "now", clock.now + tick)) if clock else None
    train.fit(s, None, callbacks=[seen] + ([advance] if advance else []))
    return s, seen


@pytest.mark.parametrize("warmup", [0, 7])
def test_cosine_over_the_epochs_follows_its_formula_with_warmup(tiny_cfg, warmup):
    tiny_cfg.train.lr_schedule, tiny_cfg.train.warmup, tiny_cfg.train.lr = "cosine", warmup, 0.01
    s, seen = fit_seen(tiny_cfg)
    total = len(seen.lrs)
    expected = [0.01 * (min(1, u / warmup) if warmup else 1) * (1 + math.cos(math.pi * (u - 1) / total)) / 2
                for u in range(1, total + 1)]
    np.testing.assert_allclose(seen.lrs, expected, rtol=1e-12)


def test_cosine_over_a_time_limit_follows_the_clock_and_stops_there(tiny_cfg, monkeypatch):
    fake = Clock()
    monkeypatch.setattr(train, "time", fake)
    monkeypatch.setattr(parallel, "time", fake)
    tiny_cfg.train.lr_schedule, tiny_cfg.train.time_limit, tiny_cfg.train.epochs = "cosine", "1m", 100
    _, seen = fit_seen(tiny_cfg, fake, tick=2.0)  # each step takes 2 s of the 60
    assert len(seen.lrs) == 30
    np.testing.assert_allclose(seen.lrs, [3e-3 * (1 + math.cos(math.pi * 2 * k / 60)) / 2 for k in range(30)])


def test_the_default_schedule_decays_per_epoch_and_warmup_ramps_it(tiny_cfg):
    tiny_cfg.train.warmup, tiny_cfg.train.lr_decay = 5, 0.5
    _, seen = fit_seen(tiny_cfg)
    per_epoch = len(seen.lrs) // 2
    ramp = [3e-3 * u / 5 for u in range(1, 6)]
    assert seen.lrs == pytest.approx(ramp + [3e-3] * (per_epoch - 5) + [1.5e-3] * per_epoch, rel=1e-12)


def test_the_constant_schedule_holds_the_rate_after_warmup_and_ignores_the_per_epoch_decay(tiny_cfg):
    tiny_cfg.train.lr_schedule, tiny_cfg.train.warmup, tiny_cfg.train.lr_decay = "constant", 5, 0.5
    _, seen = fit_seen(tiny_cfg)
    assert len(seen.lrs) > 10
    assert seen.lrs == pytest.approx([3e-3 * u / 5 for u in range(1, 6)] + [3e-3] * (len(seen.lrs) - 5), rel=1e-12)


def test_the_average_is_numpys_moving_average_of_the_weights_over_the_steps(tiny_cfg):
    tiny_cfg.train.ema, tiny_cfg.train.epochs = 0.9, 1
    s, seen = fit_seen(tiny_cfg)
    average = [w.astype(np.float64) for w in seen.weights[0]]
    for step in seen.weights[1:]:
        average = [0.9 * a + 0.1 * w for a, w in zip(average, step)]
    for got, want in zip((a.asnumpy() for a in s.ema.values), average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_the_average_is_kept_when_better_and_both_losses_are_recorded(tiny_cfg, tmp_path):
    tiny_cfg.train.ema, tiny_cfg.train.epochs = 0.5, 1
    result, _ = train_in(tiny_cfg, tmp_path / "r")
    [record] = result.metrics()
    assert record["val_loss"] == min(record["val_loss_raw"], record["val_loss_ema"])
    s = train.setup(tiny_cfg, mx.cpu())
    best = checkpoint.load_model(result, mx.cpu())
    expected = record["val_loss_ema"] if record["val_loss_ema"] < record["val_loss_raw"] else record["val_loss_raw"]
    assert train.val_loss(s, best) == pytest.approx(expected, rel=1e-6)
    assert sorted(p.name for p in result.path.glob("last-*")) == ["last-e1-s0.ema", "last-e1-s0.optim",
                                                                   "last-e1-s0.params"]


def test_a_run_with_an_average_stopped_mid_epoch_resumes_it_exactly(tiny_cfg, tmp_path):
    tiny_cfg.train.ema, tiny_cfg.model.dropout, tiny_cfg.train.epochs = 0.8, 0.0, 3
    whole, _ = train_in(tiny_cfg, tmp_path / "whole")
    stopped, _ = train_in(tiny_cfg, tmp_path / "cut", stop_after=100)
    state = stopped.read_state()
    assert state["step"] and (stopped.path / f"last-e{state['epoch']}-s{state['step']}.ema").exists()
    cut, _ = train_in(tiny_cfg, tmp_path / "cut")
    for a, b in zip(whole.metrics(), cut.metrics(), strict=True):
        for key in ("train_loss", "val_loss", "val_loss_raw", "val_loss_ema"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


def scripted_validation(monkeypatch, losses):
    """Make the validation losses `losses`, keeping the weights each was of."""
    kept, it = [], iter(losses)

    def fake(s, model):
        kept.append(params(model))
        return next(it)
    monkeypatch.setattr(train, "val_loss", fake)
    return kept


def test_patience_stops_after_epochs_without_improvement_and_keeps_the_best_epochs_weights(tiny_cfg, tmp_path,
                                                                                           monkeypatch):
    tiny_cfg.train.patience, tiny_cfg.train.epochs = 2, 10
    kept = scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.0, 1.0])
    run, _ = train_in(tiny_cfg, tmp_path / "r")
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3, 4]  # 3 and 4 are no better than 2: stop
    assert run.read_state()["best_epoch"] == 2
    for got, want in zip(params(checkpoint.load_model(run, mx.cpu())), kept[1], strict=True):
        np.testing.assert_array_equal(got, want)


# (weights, average) validation losses per epoch: the weights' best is epoch 2, the average's lowest epoch 4
WEIGHTS_THEN_AVERAGE = [3.0, 4.0, 2.0, 3.5, 2.5, 3.0, 2.6, 2.8, 2.7, 2.9, 2.8, 3.0]


def test_patience_waits_for_an_average_still_improving_after_the_weights_stopped(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.train.patience, tiny_cfg.train.epochs, tiny_cfg.train.ema = 2, 10, 0.9
    scripted_validation(monkeypatch, WEIGHTS_THEN_AVERAGE)
    run, _ = train_in(tiny_cfg, tmp_path / "r")
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3, 4, 5, 6]  # 5 and 6 lower neither: stop
    assert run.read_state()["best_epoch"] == 2


def test_a_resumed_run_keeps_counting_its_patience_from_the_average(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.train.patience, tiny_cfg.train.epochs, tiny_cfg.train.ema = 2, 5, 0.9
    scripted_validation(monkeypatch, WEIGHTS_THEN_AVERAGE)
    train_in(tiny_cfg, tmp_path / "r")
    tiny_cfg.train.epochs = 10
    run, _ = train_in(tiny_cfg, tmp_path / "r")  # resumes after epoch 5, one after the average's lowest: one more
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3, 4, 5, 6]


def test_patience_off_trains_every_epoch(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg.train.epochs = 4
    scripted_validation(monkeypatch, [3.0, 3.0, 3.0, 3.0])
    assert [r["epoch"] for r in train_in(tiny_cfg, tmp_path / "r")[0].metrics()] == [1, 2, 3, 4]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_time_limited_run_ends_normally_with_a_checkpoint_that_resumes_exactly(corpus, tmp_path, clock):
    runs = tmp_path / "runs"
    args = ["--data", corpus, "--runs-dir", runs, *TINY, "--epochs", 3]
    assert invoke("train", *args, "--name", "whole").exit_code == 0
    result = invoke("train", *args, "--name", "cut", "--time-limit", "50s")
    assert result.exit_code == 0, result.output
    assert "time limit 50s reached in epoch" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("done | best val ppl")
    state = json.loads((runs / "cut" / "state.json").read_text())
    assert state["status"] == "finished" and state["step"] > 0 and state["epoch"] < 3
    spent = state["partial"]["elapsed_s"]
    assert 50 <= spent <= 52  # the clock moves 0.5 s a reading: stopped at the first batch past the limit

    again = invoke("train", "--resume", runs / "cut")
    assert again.exit_code == 0 and "give a longer --time-limit to extend it" in again.stdout
    longer = invoke("train", "--resume", runs / "cut", "--time-limit", "1h")
    assert longer.exit_code == 0, longer.output
    assert f"and {state['step']} batches of epoch {state['epoch'] + 1}" in longer.stdout
    at_limit = [r for r in records(runs / "cut") if "step" in r]
    assert [(r["epoch"], r["step"]) for r in at_limit] == [(state["epoch"] + 1, state["step"])]
    ends = [r for r in records(runs / "cut") if "step" not in r]
    for a, b in zip(records(runs / "whole"), ends, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert "time_limit: 1h" in (runs / "cut" / "config.yaml").read_text()


def test_a_time_limit_within_the_first_epoch_scores_and_keeps_the_weights_it_stopped_at(corpus, tmp_path, clock):
    result = invoke("train", "--data", corpus, "--runs-dir", tmp_path, "--name", "r", *TINY, "--time-limit", "3s")
    assert result.exit_code == 0, result.output
    [record] = records(tmp_path / "r")
    assert record["epoch"] == 1 and 0 < record["step"]
    assert f"epoch 1 to batch {record['step']} (time limit)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"done | best val ppl {record['val_ppl']:.3f}")
    state = json.loads((tmp_path / "r" / "state.json").read_text())
    assert state["best_epoch"] == 1 and state["step"] == record["step"]
    assert (tmp_path / "r" / "params-best.params").exists()


@pytest.mark.parametrize("given, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 45), ("1.5h", 5400)])
def test_durations_read_as_seconds(given, seconds):
    from charlm.configs import duration
    assert duration(given) == seconds


def adam_reference(w, grads, lr, decay, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW in NumPy (float64): the weight shrinks by lr * decay, then Adam's step."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w * (1 - lr * decay)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


def test_adam_with_weight_decay_is_adamw_decoupled_from_the_moments():
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=5), [rng.normal(size=5) for _ in range(4)]
    opt = optim.create("adam", 0.01, weight_decay=0.1)
    updater, weight = mx.optimizer.get_updater(opt), nd.array(w0)
    for g in grads:
        updater(0, nd.array(g), weight)
    np.testing.assert_allclose(weight.asnumpy(), adam_reference(w0, grads, 0.01, 0.1), rtol=1e-5)
    assert not np.allclose(adam_reference(w0, grads, 0.01, 0.1), adam_reference(w0, grads, 0.01, 0.0))


@pytest.mark.parametrize("factor", [None, 0.5])
def test_sgd_weight_decay_is_l2_and_clipping_scales_only_the_gradient(factor):
    w0, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.5, -1.0])
    opt = optim.create("sgd", 0.1, weight_decay=0.01)
    opt.grad_scale = nd.array([factor]) if factor else None
    weight = nd.array(w0)
    mx.optimizer.get_updater(opt)([0], [nd.array(g)], [weight])
    np.testing.assert_allclose(weight.asnumpy(), w0 - 0.1 * ((factor or 1) * g + 0.01 * w0), rtol=1e-6)


def test_a_users_text_keeps_its_case_and_the_bundled_book_is_lowercased(corpus, tmp_path):
    assert text.normalise("The Time", DataConfig()) == "the time"
    assert text.normalise("The Time", DataConfig(path=str(corpus))) == "The Time"
    assert text.normalise("The Time", DataConfig(path=str(corpus), lowercase=True)) == "the time"
    result = invoke("train", "--data", corpus, "--runs-dir", tmp_path, "--name", "own", *TINY, "--epochs", 1)
    assert "case kept" in result.stdout.splitlines()[0]
    assert "lowercase: false" in (tmp_path / "own" / "config.yaml").read_text()  # recorded: the run reproduces
    book = invoke("train", "--max-chars", 3000, "--runs-dir", tmp_path, "--name", "book", *TINY, "--epochs", 1)
    assert book.exit_code == 0 and "lowercased" in book.stdout.splitlines()[0]
    assert "lowercase: true" in (tmp_path / "book" / "config.yaml").read_text()


def events(path):
    """The events of a TensorBoard file: TFRecords of Event protos (length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event
    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        (size,) = struct.unpack("<Q", raw[at:at + 8])
        out.append(Event.FromString(raw[at + 12:at + 12 + size]))
        at += 12 + size + 4
    return out


def test_tensorboard_gets_each_epochs_metrics_and_samples(corpus, tmp_path):
    pytest.importorskip("tensorboardX")
    result = invoke("train", "--data", corpus, "--runs-dir", tmp_path / "runs", "--name", "r", *TINY,
                    "--epochs", 2, "--sample-every", 1, "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    [path] = (tmp_path / "tb" / "r").iterdir()
    values = [(v.tag, e.step, v.simple_value) for e in events(path) if e.HasField("summary") for v in e.summary.value]
    for r in records(tmp_path / "runs" / "r"):
        assert ("val_loss", r["epoch"], pytest.approx(r["val_loss"], rel=1e-6)) in values
        assert ("train_ppl", r["epoch"], pytest.approx(r["train_ppl"], rel=1e-6)) in values
    assert {tag for tag, _, _ in values if tag.startswith("sample")}


def test_each_sweep_point_gets_its_own_time_limit(tmp_path):
    import yaml
    from charlm import configs, sweep as sweeps
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "parameters": {"train.time_limit": {"values": ["90s", "2m"]}}}))
    plan = sweeps.load(path)
    limits = []
    for name, point in sweeps.plan(plan):
        line = sweeps.command(plan, tmp_path, name, point, "new")
        limits.append(configs.resolve(sets=[line[line.index("--set") + 1]]).train.time_limit)
    assert limits == ["90s", "2m"]
