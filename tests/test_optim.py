import numpy as np
import pytest

from charlm import optim
from charlm.engine import gluon, mx, nd

SHAPES = [(6, 4), (4,), (3, 5), (5,), (2, 2)]  # five: SGD's updater aggregates four at a time


def params(seed):
    rng = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate(SHAPES):
        p = gluon.Parameter(f"p{i}", shape=shape)
        p.initialize(ctx=mx.cpu())
        p.set_data(nd.array(rng.normal(size=shape)))
        out.append(p)
    return out


def train(optimizer, ours, steps=3):
    """Weights after `steps` updates with made-up gradients clipped at a norm the gradients exceed."""
    ps = params(0)
    trainer = gluon.Trainer(ps, optimizer)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        with mx.autograd.record():  # the gradient of sum(p * c) is c
            loss = nd.add_n(*[(p.data() * nd.array(rng.normal(size=p.shape))).sum() for p in ps])
        loss.backward()
        grads = [p.grad().reshape((-1,)) for p in ps]
        if ours:
            optim.clip(trainer.optimizer, [grads], 0.5)
        else:
            gluon.utils.clip_global_norm(grads, 0.5, check_isfinite=False)
        trainer.step(1)
    return [p.data().asnumpy() for p in ps], trainer


@pytest.mark.parametrize("name, stock", [("sgd", mx.optimizer.SGD), ("adam", mx.optimizer.Adam)])
def test_charlms_clip_and_update_equal_clipping_then_mxnets_optimizer(name, stock):
    """SGD takes the factor inside its update; Adam is MXNet's own, its gradients scaled in place."""
    ours, trainer = train(optim.create(name, 0.1), ours=True)
    theirs, _ = train(stock(learning_rate=0.1), ours=False)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (getattr(trainer.optimizer, "grad_scale", None) is not None) == (name == "sgd")


def test_an_optimizer_that_takes_no_factor_gets_its_gradients_scaled():
    """Adam keeps MXNet's own update (and dist_async's servers run MXNet's optimizers)."""
    ps = params(0)
    trainer = gluon.Trainer(ps, mx.optimizer.Adam(learning_rate=0.1))
    grads = [p.grad().reshape((-1,)) for p in ps]
    for g in grads:
        g[:] = 1.0
    norm = optim.clip(trainer.optimizer, [grads], 0.5)
    assert norm.asscalar() == pytest.approx(np.sqrt(sum(np.prod(s) for s in SHAPES)), rel=1e-6)
    assert np.sqrt(sum((g.asnumpy() ** 2).sum() for g in grads)) == pytest.approx(0.5, rel=1e-5)


def test_without_clipping_no_factor_is_set_and_gradients_stay():
    ps = params(0)
    trainer = gluon.Trainer(ps, optim.create("sgd", 0.1))
    grads = [p.grad().reshape((-1,)) for p in ps]
    for g in grads:
        g[:] = 3.0
    optim.clip(trainer.optimizer, [grads], 0)
    assert trainer.optimizer.grad_scale is None and all((g.asnumpy() == 3.0).all() for g in grads)


@pytest.mark.parametrize("max_norm", [0.5, 1e6, 0])
def test_clip_equals_gluons_clip_global_norm(max_norm):
    rng = np.random.default_rng(0)
    shapes = [(40, 3), (7,), (2, 3, 4)]
    ours = [nd.array(rng.normal(size=shape)) for shape in shapes]
    theirs = [a.copy() for a in ours]
    before = [a.asnumpy() for a in ours]
    norm = optim.clip(None, [[a.reshape((-1,)) for a in ours]], max_norm)
    want = gluon.utils.clip_global_norm(theirs, max_norm or float("inf"), check_isfinite=False)
    assert norm.shape == (1,)
    assert norm.asscalar() == pytest.approx(np.sqrt(sum((b.astype(np.float64) ** 2).sum() for b in before)), rel=1e-6)
    assert norm.asscalar() == pytest.approx(want.asscalar(), rel=1e-6)
    for a, t, b in zip(ours, theirs, before):
        np.testing.assert_allclose(a.asnumpy(), t.asnumpy(), rtol=1e-6)
        if max_norm != 0.5:
            np.testing.assert_array_equal(a.asnumpy(), b)  # under the bound (or no bound): untouched
    if max_norm == 0.5:
        assert np.sqrt(sum((a.asnumpy() ** 2).sum() for a in ours)) == pytest.approx(0.5, rel=1e-5)
