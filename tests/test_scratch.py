import numpy as np
import pytest
from conftest import H, N, V, ids, randomize

from charlm import model as models, scratch
from charlm.engine import gluon, mx, nd

SCRATCH_CELLS = ["scratch-rnn", "scratch-lstm", "scratch-gru"]


def test_scratch_rnn_equals_numpy_loop(tiny_model):
    model = tiny_model("scratch-rnn")
    p = {name: getattr(model, name).data().asnumpy() for name in scratch.SCRATCH_PARAMS}
    X = ids()
    h0 = np.random.default_rng(2).normal(size=(N, H)).astype(np.float32)
    logits, (h,) = model(X, [nd.array(h0)])
    ref_h, ref = h0, []
    for x in X.asnumpy().astype(int):
        onehot = np.eye(V, dtype=np.float32)[x]  # the tutorial's one-hot input
        ref_h = np.tanh(onehot @ p["W_xh"] + ref_h @ p["W_hh"] + p["b_h"])
        ref.append(ref_h @ p["W_hq"] + p["b_q"])
    np.testing.assert_allclose(logits.asnumpy(), np.stack(ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h.asnumpy(), ref_h, rtol=1e-5, atol=1e-5)


def test_scratch_init_is_the_tutorials_normal_001(tiny_model):
    model = tiny_model("scratch-rnn", 40, seed=None, hidden_size=256)
    w = model.W_hh.data().asnumpy()
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    assert not model.b_h.data().asnumpy().any()


@pytest.mark.parametrize("cell, layer_cls", [("scratch-lstm", gluon.rnn.LSTM), ("scratch-gru", gluon.rnn.GRU)])
def test_scratch_gated_cells_equal_the_fused_layer(cell, layer_cls, tiny_model):
    """Loaded with a fused layer's weights, the written-out equations give the fused layer's outputs."""
    layer = layer_cls(H, input_size=V)
    layer.initialize(mx.init.Uniform(0.5))
    model = tiny_model(cell)
    w = {k: getattr(layer, f"l0_{k}").data().asnumpy() for k in ["i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"]}
    model.W_xh.set_data(nd.array(w["i2h_weight"].T))
    model.W_hh.set_data(nd.array(w["h2h_weight"].T))
    if cell == "scratch-gru":
        h2h_rz = np.concatenate([w["h2h_bias"][:2 * H], np.zeros(H, np.float32)])
        model.b_h.set_data(nd.array(w["i2h_bias"] + h2h_rz))
        model.b_hn.set_data(nd.array(w["h2h_bias"][2 * H:]))
    else:
        model.b_h.set_data(nd.array(w["i2h_bias"] + w["h2h_bias"]))
    X = ids()
    rng = np.random.default_rng(3)
    scratch_state = [nd.array(rng.normal(size=(N, H))) for _ in model.begin_state(N, mx.cpu())]
    out, fused_state = layer(nd.one_hot(X, V), [s.expand_dims(0) for s in scratch_state])
    logits, state = model(X, scratch_state)
    W_hq, b_q = model.W_hq.data().asnumpy(), model.b_q.data().asnumpy()
    np.testing.assert_allclose(logits.asnumpy(), out.asnumpy() @ W_hq + b_q, rtol=1e-5, atol=1e-5)
    for s, f in zip(state, fused_state):
        np.testing.assert_allclose(s.asnumpy(), f[0].asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", SCRATCH_CELLS)
def test_scratch_gradients_equal_central_differences(cell, tiny_model):
    """torch-rnn's numerical gradient check, in float64: autograd's gradient of the training loss (the NLL
    sum) with respect to every parameter element against (loss(p + eps) - loss(p - eps)) / 2 eps."""
    model = tiny_model(cell, 5, seed=None, hidden_size=4)  # N, T, V, H = 2, 3, 5, 4
    model.cast("float64")
    randomize(model)  # in float64
    rng = np.random.default_rng(8)
    X, Y = (nd.array(rng.integers(0, 5, size=(3, 2)), dtype="float64") for _ in range(2))
    state = [nd.array(rng.normal(size=s.shape), dtype="float64") for s in model.begin_state(2, mx.cpu())]
    objective = models.objective(model, mean=False)  # loss: the NLL sum, in the graph training runs

    def loss():
        return objective(X, Y, state)[1]

    with mx.autograd.record():
        total = loss()
    total.backward()
    eps = 1e-6
    for param in model.collect_params().values():
        value, numeric = param.data().asnumpy(), np.zeros(param.shape)
        for i in np.ndindex(param.shape):
            for sign in (1, -1):
                moved = value.copy()
                moved[i] += sign * eps
                param.set_data(nd.array(moved, dtype="float64"))
                numeric[i] += sign * loss().asscalar() / (2 * eps)
        param.set_data(nd.array(value, dtype="float64"))
        assert np.abs(numeric).max() > 1e-3, param.name  # a gradient of zeros would check nothing
        np.testing.assert_allclose(param.grad().asnumpy(), numeric, rtol=1e-6, atol=1e-8, err_msg=param.name)


@pytest.mark.parametrize("cell", SCRATCH_CELLS)
def test_scratch_sequences_longer_than_the_unrolled_graph_run_in_pieces(cell, monkeypatch, tiny_model):
    """Cut into pieces of MAX_UNROLL steps, a sequence gives the same logits, state and gradients."""
    model = tiny_model(cell)
    X = nd.array(np.random.default_rng(5).integers(0, V, size=(7, N)))
    results = []
    for max_unroll in (64, 3):  # one piece of 7 steps; pieces of 3, 3 and 1
        monkeypatch.setattr(scratch, "MAX_UNROLL", max_unroll)
        with mx.autograd.record():
            logits, state = model(X, model.begin_state(N, mx.cpu()))
            loss = (logits ** 2).sum() + sum((s ** 2).sum() for s in state)
        loss.backward()
        grads = [p.grad().asnumpy().copy() for p in model.collect_params().values()]
        results.append((logits.asnumpy(), [s.asnumpy() for s in state], grads))
    (whole, whole_state, whole_grads), (pieces, piece_state, piece_grads) = results
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(piece_state + piece_grads, whole_state + whole_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
