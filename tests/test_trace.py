"""charlm.trace against MXNet's own forward pass, and the unit search against a NumPy reference."""
import numpy as np
import pytest

from charlm import trace
from charlm.engine import mx, nd
from charlm.vocab import Vocab
from conftest import H, T, V

CELLS = ["scratch-rnn", "scratch-lstm", "scratch-gru", "rnn", "lstm", "gru"]


@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_mxnet(cell, tiny_model):
    model = tiny_model(cell)
    ids = np.random.default_rng(3).integers(0, V, size=4 * T)
    logits, _ = model(nd.array(ids).reshape((-1, 1)), model.begin_state(1, model.collect_params().list_ctx()[0]))
    ours, acts = trace.forward(trace.weights(model), ids)
    np.testing.assert_allclose(ours, logits.asnumpy()[:, 0], rtol=1e-4, atol=1e-4)
    assert sorted(acts) == sorted(f"l{n}.{k}" for n in range(1 if cell.startswith("scratch") else 2)
                                  for k in trace.KINDS[cell.removeprefix("scratch-")])


@pytest.mark.parametrize("embed", [0, "tied"])
def test_forward_matches_mxnet_one_hot_and_tied(embed, tiny_model):
    tied = embed == "tied"
    model = tiny_model("gru", embed_size=H if tied else 0, num_layers=1, tie_weights=tied)
    ids = np.random.default_rng(4).integers(0, V, size=2 * T)
    logits, _ = model(nd.array(ids).reshape((-1, 1)), model.begin_state(1, mx.cpu()))
    np.testing.assert_allclose(trace.forward(trace.weights(model), ids)[0], logits.asnumpy()[:, 0], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("cell", ["scratch-lstm", "gru"])
def test_forward_state_matches_mxnet_step(cell, tiny_model):
    model = tiny_model(cell)
    ids = [1, 4, 2]
    ctx = model.collect_params().list_ctx()[0]
    _, state = model(nd.array(ids).reshape((-1, 1)), model.begin_state(1, ctx))
    _, acts = trace.forward(trace.weights(model), ids)
    h = state[0].asnumpy().reshape(-1, acts["l0.h"].shape[1])[-1]  # the last layer's h
    last = max(name for name in acts if name.endswith(".h"))
    np.testing.assert_allclose(acts[last][-1], h, rtol=1e-4, atol=1e-5)


def test_trace_scores_each_token_by_its_logits(tiny_model):
    model = tiny_model("lstm")
    vocab = Vocab("abcdef")
    ids = np.array([0, 3, 5, 1, 1, 2])
    tr = trace.trace(trace.weights(model), vocab, ids, top_k=3)
    logits, _ = trace.forward(trace.weights(model), ids)
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(tr.logprob[1:], lp[np.arange(5), ids[1:]], rtol=1e-5)
    assert tr.top_ids[2].tolist() == np.argsort(-lp[1])[:3].tolist()
    assert tr.count == 5 and tr.tokens == list("adfbbc")
    assert tr.perplexity == pytest.approx(np.exp(-lp[np.arange(5), ids[1:]].mean()))


def test_trace_caps_at_max_tokens(tiny_model):
    model = tiny_model("rnn", seed=None)
    tr = trace.trace(trace.weights(model), Vocab("abcdef"), np.arange(6), max_tokens=4)
    assert len(tr.ids) == 4 and tr.capped == 2


def test_find_units_ranks_by_correlation_with_inside_a_match():
    rng = np.random.default_rng(0)
    tokens = list('ab"cd"ef"g"h' * 3)
    acts = {"l0.h": rng.normal(size=(len(tokens), 4)).astype(np.float32)}
    tr = trace.Trace(tokens, np.zeros(len(tokens)), None, None, None, acts)
    target = trace.inside(tokens, '"[^"]*"')
    expected = [abs(np.corrcoef(acts["l0.h"][:, u], target)[0, 1]) for u in range(4)]
    found = trace.find_units(tr, '"[^"]*"', top=4)
    assert [u for _, u, _ in found] == list(np.argsort(expected)[::-1])
    assert [abs(r) for _, _, r in found] == pytest.approx(sorted(expected, reverse=True))


@pytest.mark.parametrize("pattern", ["z", "."])
def test_find_units_refuses_a_pattern_matching_all_or_nothing(pattern):
    tr = trace.Trace(list("abc"), np.zeros(3), None, None, None, {"l0.h": np.ones((3, 2), np.float32)})
    with pytest.raises(trace.CharlmError, match="nothing to correlate"):
        trace.find_units(tr, pattern)


@pytest.mark.parametrize(("pattern", "literal", "marked"), [
    (".", False, "a(b.c"),  # a regular expression
    (".", True, "."),  # forced literal
    ("(b", False, "(b"),  # no regular expression: taken literally
    ("[bc]", False, "bc"),
    ("[bc]", True, ""),
])
def test_inside_takes_a_pattern_as_a_regex_or_literally(pattern, literal, marked):
    tokens = list("a(b.c")
    assert trace.inside(tokens, pattern, literal).tolist() == [float(t in marked) for t in tokens]
