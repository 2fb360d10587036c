import numpy as np
import pytest

from charlm import generate, training as train, vocab as vocabs
from charlm.engine import mx, nd
from charlm.errors import CharlmError


@pytest.fixture
def trained(tiny_cfg):
    s = train.setup(tiny_cfg, mx.cpu())
    for p in s.model.collect_params().values():  # a sharp, untrained model: argmax ties are unlikely
        p.set_data(nd.array(np.random.default_rng(0).normal(0, 1, size=p.shape)))
    return s


def prefix(s, text="the quick"):
    return generate.encode_prefix(text, s.vocab, s.cfg.data)


def test_greedy_is_deterministic_and_keeps_the_prefix(trained):
    a = generate.complete(trained.model, trained.vocab, prefix(trained), 30, mx.cpu())
    b = generate.complete(trained.model, trained.vocab, prefix(trained), 30, mx.cpu())
    assert a == b
    assert a.startswith("the quick") and len(a) == len("the quick") + 30


def test_greedy_equals_rerunning_the_whole_text_each_step(trained):
    """Carrying the state one character at a time is the same as re-reading everything."""
    m, vocab = trained.model, trained.vocab
    ids = list(prefix(trained))
    for _ in range(12):
        logits, _ = m(nd.array(ids).reshape((-1, 1)), m.begin_state(1, mx.cpu()))
        ids.append(int(logits[-1].argmax(axis=-1).asscalar()))
    assert generate.complete(m, vocab, prefix(trained), 12, mx.cpu()) == vocab.decode(ids)


def test_top_k_one_equals_greedy(trained):
    greedy = generate.complete(trained.model, trained.vocab, prefix(trained), 25, mx.cpu())
    top1 = generate.complete(trained.model, trained.vocab, prefix(trained), 25, mx.cpu(), temperature=1.5, top_k=1)
    assert top1 == greedy


def test_sampling_is_reproducible_with_a_seed(trained):
    def sample(seed):
        return generate.complete(trained.model, trained.vocab, prefix(trained), 40, mx.cpu(), temperature=2.0,
                                 seed=seed)
    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_top_k_samples_only_the_k_likeliest(trained):
    m, vocab = trained.model, trained.vocab
    logits, _ = m(nd.array(prefix(trained)).reshape((-1, 1)), m.begin_state(1, mx.cpu()))
    allowed = set(np.argsort(-logits[-1, 0].asnumpy())[:3])
    firsts = {generate.complete(m, vocab, prefix(trained), 1, mx.cpu(), temperature=5.0, top_k=3, seed=s)[-1]
              for s in range(40)}
    assert {vocab.index[c] for c in firsts} <= allowed and len(firsts) > 1


def test_prefix_is_lowercased_like_the_training_text(trained):
    assert trained.vocab.decode(generate.encode_prefix("THE Quick", trained.vocab, trained.cfg.data)) == "the quick"


@pytest.mark.parametrize("text, message", [("the q€ick@", "'@€'"), ("", "empty")])
def test_bad_prefixes_are_clear_errors(trained, text, message):
    with pytest.raises(CharlmError, match=message):
        generate.encode_prefix(text, trained.vocab, trained.cfg.data)


@pytest.mark.parametrize("cell, num_layers", [("rnn", 1), ("gru", 2), ("lstm", 2), ("scratch-rnn", 1),
                                              ("scratch-gru", 1), ("scratch-lstm", 1)])
def test_greedy_blocks_of_steps_equal_rerunning_the_whole_text(tiny_cfg, cell, num_layers, monkeypatch):
    """Greedy generation runs GREEDY_STEPS characters per call (5 here, so 12 characters take three calls,
    the last cut short); the text is the argmax continuation of re-reading everything each step."""
    monkeypatch.setattr(generate, "GREEDY_STEPS", 5)
    tiny_cfg.model.cell, tiny_cfg.model.num_layers = cell, num_layers
    s = train.setup(tiny_cfg, mx.cpu())
    for p in s.model.collect_params().values():
        p.set_data(nd.array(np.random.default_rng(0).normal(0, 1, size=p.shape)))
    ids = list(prefix(s))
    for _ in range(12):
        logits, _ = s.model(nd.array(ids).reshape((-1, 1)), s.model.begin_state(1, mx.cpu()))
        ids.append(int(logits[-1].argmax(axis=-1).asscalar()))
    assert generate.complete(s.model, s.vocab, prefix(s), 12, mx.cpu()) == s.vocab.decode(ids)


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.5, "seed": 3}], ids=["greedy", "sampled"])
def test_stream_pieces_join_to_the_text_generated_in_one_block(tiny_cfg, level, sampling, monkeypatch):
    """Streamed in blocks of 5 tokens (the prefix, then 5, 5, 5, 5 and 3), the pieces join to complete's text
    and to the text of one block of 23: word spacing holds across the blocks' boundaries."""
    tiny_cfg.data.level = level
    s = train.setup(tiny_cfg, mx.cpu())
    for p in s.model.collect_params().values():
        p.set_data(nd.array(np.random.default_rng(0).normal(0, 1, size=p.shape)))
    args = (s.model, s.vocab, prefix(s), 23, mx.cpu())
    monkeypatch.setattr(generate, "GREEDY_STEPS", 5)
    pieces = list(generate.stream(*args, **sampling))
    assert len(pieces) == 6 and pieces[0] == "the quick"
    assert "".join(pieces) == generate.complete(*args, **sampling)
    monkeypatch.setattr(generate, "GREEDY_STEPS", 23)
    assert "".join(pieces) == generate.complete(*args, **sampling)


def test_stream_decodes_each_block_after_the_last_token_with_text(monkeypatch):
    """A word's spacing depends on the token before it; <bos> has no text, so the one before that counts."""
    vocab = vocabs.WordVocab(["<unk>", "<eos>", "<bos>", "a", "b"])
    blocks = [[3, 2], [4, 1], [3]]  # a <bos> | b <eos> | a
    monkeypatch.setattr(generate, "_blocks", lambda *args: (nd.array(ids) for ids in blocks))
    pieces = list(generate.stream(None, vocab, [2, 3], 5, mx.cpu()))
    assert pieces == ["a", " a", " b\n", "a"] and "".join(pieces) == vocab.decode([2, 3, 3, 2, 4, 1, 3])
