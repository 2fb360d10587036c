import numpy as np
import pytest
from conftest import H, N, T, V, ids

from charlm import model as models, scratch
from charlm.configs import CELLS
from charlm.engine import gluon, mx, nd


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_has_the_same_interface(cell, tiny_model):
    model = tiny_model(cell)
    state = model.begin_state(N, mx.cpu())
    logits, new_state = model(ids(), state)
    assert logits.shape == (T, N, V)
    assert [s.shape for s in new_state] == [s.shape for s in state]


@pytest.mark.parametrize("cell", CELLS)
def test_hybridized_equals_imperative(cell, tiny_model):
    model = tiny_model(cell, dropout=0.3)  # dropout is off outside training, in both modes
    X, state = ids(), model.begin_state(N, mx.cpu())
    hybrid, hybrid_state = model(X, state)
    model.hybridize(active=False)
    plain, plain_state = model(X, state)
    np.testing.assert_allclose(hybrid.asnumpy(), plain.asnumpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(hybrid_state, plain_state):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weight_drop_trains_on_dropped_scaled_hidden_to_hidden_weights_then_puts_them_back(cell, tiny_model):
    p = 0.4
    model = tiny_model(cell, dropout=0.0, weight_drop=p)
    layer, X, state = model.rnn, ids(), model.begin_state(N, mx.cpu())
    weights = layer.parameters.data().asnumpy()
    drop = models.WeightDrop.of(model, [mx.cpu()])
    drop.drop()
    dropped = layer.parameters.data().asnumpy()
    with mx.autograd.record():
        out, _ = model(X, state)
        out.sum().backward()
    drop.restore()
    np.testing.assert_array_equal(layer.parameters.data().asnumpy(), weights)
    # the dropped weights: each h2h weight kept and scaled by 1 / (1 - p), or zero; nothing else touched
    scale = np.ones_like(weights)
    for name, _, begin, end in layer.spans():
        kept = dropped[begin:end] != 0
        if name.endswith("h2h_weight"):
            assert 0 < kept.mean() < 1, name
            scale[begin:end] = kept / (1 - p)
    np.testing.assert_allclose(dropped, weights * scale, rtol=1e-6)
    # a model without weight drop holding the dropped weights: the same output, and its gradient, times the mask
    reference = tiny_model(cell, dropout=0.0)
    reference.rnn.parameters.set_data(nd.array(dropped))
    with mx.autograd.record():
        theirs, _ = reference(X, state)
        theirs.sum().backward()
    np.testing.assert_allclose(theirs.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference.rnn.parameters.grad().asnumpy() * scale, layer.parameters.grad().asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_only_gluon_cells_with_a_weight_drop_have_one(tiny_model):
    assert models.WeightDrop.of(tiny_model("lstm", weight_drop=0.0), [mx.cpu()]) is None
    assert models.WeightDrop.of(tiny_model("scratch-lstm"), [mx.cpu()]) is None


def test_token_nll_is_minus_log_softmax_of_the_target():
    rng = np.random.default_rng(4)
    logits, Y = rng.normal(size=(T, N, V)), rng.integers(0, V, size=(T, N))
    nll = models.TokenNLL()(nd.array(logits), nd.array(Y)).asnumpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(nll, -np.take_along_axis(log_probs, Y[..., None], -1)[..., 0], rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_one_token_at_a_time_equals_the_whole_sequence(cell, num_layers, tiny_model):
    model = tiny_model(cell, num_layers=num_layers)
    X, state = ids(), model.begin_state(N, mx.cpu())
    whole, whole_state = model(X, state)
    steps = []
    for t in range(T):
        logits, state = model.step(X[t:t + 1], state)
        steps.append(logits)
    np.testing.assert_allclose(nd.concat(*steps, dim=0).asnumpy(), whole.asnumpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(state, whole_state):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_equals_steps_fed_their_own_argmax(cell, tiny_model):
    """One greedy call of 4 steps gives the ids, logits and state of 4 steps each fed the last one's argmax."""
    model = tiny_model(cell)
    logits, state = model(ids(), model.begin_state(N, mx.cpu()))
    logits = logits[-1:]
    chosen, greedy_logits, greedy_state = model.greedy(logits, state, 4)
    fed = []
    for _ in range(4):
        fed.append(logits.argmax(axis=-1))  # (1, N)
        logits, state = model.step(fed[-1], state)
    np.testing.assert_array_equal(chosen.asnumpy(), nd.concat(*fed, dim=0).asnumpy())
    for a, b in zip([greedy_logits, *greedy_state], [logits, *state]):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)


GLUON_LAYERS = {"rnn": lambda: gluon.rnn.RNN(H, 2, activation="tanh", input_size=4),
                "lstm": lambda: gluon.rnn.LSTM(H, 2, input_size=4), "gru": lambda: gluon.rnn.GRU(H, 2, input_size=4)}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_flat_fused_layer_equals_gluons_layer(cell, tiny_model):
    """Given a Gluon fused layer's weights packed in the operator's order, the flat layer gives that layer's
    outputs and states."""
    model = tiny_model(cell)
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


def test_flat_fused_layer_starts_like_gluons_xavier_matrices_and_zero_biases(tiny_model):
    model = tiny_model("lstm", hidden_size=64, embed_size=16, seed=None)
    pieces = model.rnn.unpack(nd, model.rnn.parameters.data())
    for name, value in pieces.items():
        value = value.asnumpy()
        if name.endswith("bias"):
            assert not value.any(), name
        else:
            bound = np.sqrt(6 / sum(value.shape))  # Xavier: uniform in +-sqrt(3 / mean(fan_in, fan_out))
            assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound, name
            assert abs(value.std() - bound / np.sqrt(3)) < 0.1 * bound, name


@pytest.mark.parametrize("vocab_size, tie_weights", [(40, True), (40, False), (1000, True), (1000, False)])
def test_embedding_starts_xavier_but_tied_counts_a_vocabulary_wider_than_itself_as_its_width(vocab_size, tie_weights,
                                                                                              tiny_model):
    width = 64  # at least 2,560 weights: their largest and their spread are those of the bound within 1% and 5%
    model = tiny_model("lstm", vocab_size, seed=None, hidden_size=width, embed_size=width, num_layers=1,
                       tie_weights=tie_weights)
    weight = model.embedding.weight.data().asnumpy()
    fan = min(vocab_size, width) if tie_weights else vocab_size
    bound = np.sqrt(6 / (fan + width))
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.99 * bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.05 * bound


@pytest.mark.parametrize("cell, max_unroll", [("lstm", 64), ("scratch-gru", 64), ("scratch-gru", T - 1)])
@pytest.mark.parametrize("masked, mean", [(False, True), (True, True), (True, False)])
def test_objective_is_the_models_nll_sum_and_its_mean_over_real_targets_gradients_too(cell, max_unroll, masked, mean,
                                                                                       monkeypatch, tiny_model):
    """The one graph of model and loss (per sequence length for scratch cells; beside the model when a
    sequence runs in pieces) against the two blocks."""
    monkeypatch.setattr(scratch, "MAX_UNROLL", max_unroll)
    model = tiny_model(cell, dropout=0.0)  # training mode: dropout would draw other masks in each run
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
