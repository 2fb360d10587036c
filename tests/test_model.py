import numpy as np
import pytest

from charlm import model as models
from charlm.config import CELLS, ModelConfig
from charlm.engine import gluon, mx, nd

T, N, V, H = 3, 2, 6, 5  # torch-rnn's habit: tiny, all different, so a transposed shape cannot pass


def ids(seed=0):
    return nd.array(np.random.default_rng(seed).integers(0, V, size=(T, N)))


def build(cell, **kw):
    return models.build(ModelConfig(cell=cell, hidden_size=H, embed_size=4, num_layers=2, **kw), V, mx.cpu())


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for p in model.collect_params().values():
        p.set_data(nd.array(rng.normal(0, 0.5, size=p.shape)))


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_has_the_same_interface(cell):
    model = build(cell)
    state = model.begin_state(N, mx.cpu())
    logits, new_state = model(ids(), state)
    assert logits.shape == (T, N, V)
    assert [s.shape for s in new_state] == [s.shape for s in state]


def test_scratch_rnn_equals_numpy_loop():
    model = build("scratch-rnn")
    randomize(model)
    p = {name: getattr(model, name).data().asnumpy() for name in ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]}
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


def test_scratch_init_is_the_tutorials_normal_001():
    model = models.build(ModelConfig(cell="scratch-rnn", hidden_size=256), 40, mx.cpu())
    w = model.W_hh.data().asnumpy()
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    assert not model.b_h.data().asnumpy().any()


@pytest.mark.parametrize("cell, layer_cls", [("scratch-lstm", gluon.rnn.LSTM), ("scratch-gru", gluon.rnn.GRU)])
def test_scratch_gated_cells_equal_the_fused_layer(cell, layer_cls):
    """Loaded with a fused layer's weights, the written-out equations give the fused layer's outputs."""
    layer = layer_cls(H, input_size=V)
    layer.initialize(mx.init.Uniform(0.5))
    model = build(cell)
    randomize(model)
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


@pytest.mark.parametrize("cell", CELLS)
def test_hybridized_equals_imperative(cell):
    model = build(cell, dropout=0.3)  # dropout is off outside training, in both modes
    randomize(model)
    X, state = ids(), model.begin_state(N, mx.cpu())
    hybrid, hybrid_state = model(X, state)
    model.hybridize(active=False)
    plain, plain_state = model(X, state)
    np.testing.assert_allclose(hybrid.asnumpy(), plain.asnumpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(hybrid_state, plain_state):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)


def test_token_nll_is_minus_log_softmax_of_the_target():
    rng = np.random.default_rng(4)
    logits, Y = rng.normal(size=(T, N, V)), rng.integers(0, V, size=(T, N))
    nll = models.TokenNLL()(nd.array(logits), nd.array(Y)).asnumpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(nll, -np.take_along_axis(log_probs, Y[..., None], -1)[..., 0], rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_stepper_one_character_at_a_time_equals_the_whole_sequence(cell, num_layers):
    model = models.build(ModelConfig(cell=cell, hidden_size=H, embed_size=4, num_layers=num_layers), V, mx.cpu())
    randomize(model)
    X, state = ids(), model.begin_state(N, mx.cpu())
    whole, whole_state = model(X, state)
    step, steps = model.stepper(), []
    for t in range(T):
        logits, state = step(X[t:t + 1], state)
        steps.append(logits)
    np.testing.assert_allclose(nd.concat(*steps, dim=0).asnumpy(), whole.asnumpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(state, whole_state):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["scratch-rnn", "scratch-lstm", "scratch-gru"])
def test_scratch_sequences_longer_than_the_unrolled_graph_run_in_pieces(cell, monkeypatch):
    """Cut into pieces of MAX_UNROLL steps, a sequence gives the same logits, state and gradients."""
    model = build(cell)
    randomize(model)
    X = nd.array(np.random.default_rng(5).integers(0, V, size=(7, N)))
    results = []
    for max_unroll in (64, 3):  # one piece of 7 steps; pieces of 3, 3 and 1
        monkeypatch.setattr(models, "MAX_UNROLL", max_unroll)
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


GLUON_LAYERS = {"rnn": lambda: gluon.rnn.RNN(H, 2, activation="tanh", input_size=4),
                "lstm": lambda: gluon.rnn.LSTM(H, 2, input_size=4), "gru": lambda: gluon.rnn.GRU(H, 2, input_size=4)}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_flat_fused_layer_equals_gluons_layer(cell):
    """Given a Gluon fused layer's weights packed in the operator's order, the flat layer gives that layer's
    outputs and states."""
    model = build(cell)
    layer = GLUON_LAYERS[cell]()
    layer.initialize(mx.init.Uniform(0.5))
    model.rnn.parameters.set_data(nd.concat(*[getattr(layer, name).data().reshape((-1,))
                                              for name, _ in model.rnn.pieces], dim=0))
    x = nd.array(np.random.default_rng(6).normal(size=(T, N, 4)))
    state = [nd.array(np.random.default_rng(7 + k).normal(size=s.shape)) for k, s in
             enumerate(model.begin_state(N, mx.cpu()))]
    ours, our_state = model.rnn(x, state)
    theirs, their_state = layer(x, state)
    np.testing.assert_allclose(ours.asnumpy(), theirs.asnumpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(our_state, their_state):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)


def test_flat_fused_layer_starts_like_gluons_xavier_matrices_and_zero_biases():
    model = models.build(ModelConfig(cell="lstm", hidden_size=64, embed_size=16, num_layers=2), V, mx.cpu())
    pieces = model.rnn.unpack(nd, model.rnn.parameters.data())
    for name, value in pieces.items():
        value = value.asnumpy()
        if name.endswith("bias"):
            assert not value.any(), name
        else:
            bound = np.sqrt(6 / sum(value.shape))  # Xavier: uniform in +-sqrt(3 / mean(fan_in, fan_out))
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound, name
            assert abs(value.std() - bound / np.sqrt(3)) < 0.1 * bound, name


@pytest.mark.parametrize("cell, max_unroll", [("lstm", 64), ("scratch-gru", 64), ("scratch-gru", T - 1)])
@pytest.mark.parametrize("masked, mean", [(False, True), (True, True), (True, False)])
def test_objective_is_the_models_nll_sum_and_its_mean_over_real_targets_gradients_too(cell, max_unroll, masked, mean,
                                                                                       monkeypatch):
    """The one graph of model and loss (per sequence length for scratch cells; beside the model when a
    sequence runs in pieces) against the two blocks."""
    monkeypatch.setattr(models, "MAX_UNROLL", max_unroll)
    model = build(cell, dropout=0.0)  # training mode: dropout would draw other masks in each run
    randomize(model)
    X = ids()
    Y = ids(3).asnumpy()
    if masked:
        Y[-1, 0] = Y[-2, 0] = -1  # padding
    Y = nd.array(Y)
    params = list(model.collect_params().values())

    def run(forward):
        state = model.begin_state(N, mx.cpu())
        with mx.autograd.record():
            total, loss, state = forward(X, state)
        loss.backward()
        return total.asscalar(), loss.asscalar(), [p.grad().asnumpy().copy() for p in params], state

    def two_blocks(X, state):
        logits, state = model(X, state)
        total = models.TokenNLL(masked)(logits, Y).sum()
        return total, total / (int((Y >= 0).sum().asscalar()) if mean else 1), state

    objective = models.objective(model, masked, mean)
    got, want = run(lambda X, state: objective(X, Y, state)), run(two_blocks)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[1] == pytest.approx(want[1], rel=1e-5)
    assert got[1] == pytest.approx(want[0] / ((T * N - 2 * masked) if mean else 1), rel=1e-5)
    for g, w in zip(got[2], want[2]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    for g, w in zip(got[3], want[3]):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-6)
