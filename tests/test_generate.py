import re

import numpy as np
import pytest

from charlm import generate, training as train, vocab as vocabs
from charlm.engine import mx, nd
from charlm.errors import CharlmError
from conftest import randomize


def sharp(cfg):
    """The setup of cfg with weights drawn from N(0, 1): a sharp, untrained model, whose argmax ties are unlikely."""
    s = train.setup(cfg, mx.cpu())
    randomize(s.model, seed=0, scale=1.0)
    return s


@pytest.fixture
def trained(tiny_cfg):
    return sharp(tiny_cfg)


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


def test_an_empty_prefix_in_lines_mode_starts_a_new_line(trained):
    trained.cfg.data.mode = "lines"
    vocab = vocabs.Vocab(sorted(set("the quick\n\x02")))
    assert generate.encode_prefix("", vocab, trained.cfg.data).tolist() == [vocab.bos]


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
    s = sharp(tiny_cfg)
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
    s = sharp(tiny_cfg)
    args = (s.model, s.vocab, prefix(s), 23, mx.cpu())
    monkeypatch.setattr(generate, "GREEDY_STEPS", 5)
    pieces = [piece for [piece] in generate.stream(*args, **sampling)]
    assert len(pieces) == 6 and pieces[0] == "the quick"
    assert "".join(pieces) == generate.complete(*args, **sampling)
    monkeypatch.setattr(generate, "GREEDY_STEPS", 23)
    assert "".join(pieces) == generate.complete(*args, **sampling)


def test_stream_decodes_each_block_after_the_last_token_with_text(monkeypatch):
    """A word's spacing depends on the token before it; <bos> has no text, so the one before that counts."""
    vocab = vocabs.WordVocab(["<unk>", "<eos>", "<bos>", "a", "b"])
    blocks = [[3, 2], [4, 1], [3]]  # a <bos> | b <eos> | a
    monkeypatch.setattr(generate, "id_blocks", lambda *args: (nd.array(ids).reshape((-1, 1)) for ids in blocks))
    pieces = [piece for [piece] in generate.stream(None, vocab, [2, 3], 5, mx.cpu())]
    assert pieces == ["a", " a", " b\n", "a"] and "".join(pieces) == vocab.decode([2, 3, 3, 2, 4, 1, 3])


def greedy_text(s, length=40, **options):
    return generate.complete(s.model, s.vocab, prefix(s), length, mx.cpu(), **options)


@pytest.mark.parametrize("start, size", [(6, 1), (3, 4), (9, 3)], ids=["one char", "across blocks", "at a block end"])
def test_stop_ends_the_text_just_before_the_stop_sequence(trained, monkeypatch, start, size):
    """Blocks of 5 characters: the stop sequence is found whole when it spans two blocks; the text ends just
    before its first occurrence, the stop sequence left out."""
    monkeypatch.setattr(generate, "GREEDY_STEPS", 5)
    continuation = greedy_text(trained)[len("the quick"):]
    stop = continuation[start:start + size]
    expected = "the quick" + continuation[:continuation.index(stop)]
    assert greedy_text(trained, stop=[stop]) == expected
    pieces = [piece for [piece] in generate.stream(trained.model, trained.vocab, prefix(trained), 40, mx.cpu(),
                                                    stop=[stop])]
    assert "".join(pieces) == expected and pieces[0] == "the quick"


def test_the_earliest_of_several_stop_sequences_wins(trained):
    continuation = greedy_text(trained)[len("the quick"):]
    late, early = continuation[20:23], continuation[8:10]
    assert greedy_text(trained, stop=[late, early]) == "the quick" + continuation[:continuation.index(early)]


def test_generation_stops_computing_after_every_sample_has_stopped(trained, monkeypatch):
    stop = greedy_text(trained)[len("the quick"):][:2]  # in the first block
    expected, made, blocks = greedy_text(trained, 2, stop=[stop]), [], generate.id_blocks

    def counted(*args):
        for block in blocks(*args):
            made.append(block)
            yield block
    monkeypatch.setattr(generate, "id_blocks", counted)
    assert greedy_text(trained, 10_000, stop=[stop]) == expected
    assert len(made) == 2  # the block with the stop and the one queued after it, of 313


@pytest.mark.parametrize("sampling", [{}, {"temperature": 3.0, "top_k": 1, "seed": 5}], ids=["greedy", "top-k 1"])
def test_a_batch_of_greedy_samples_is_copies_of_the_single_greedy_text(trained, sampling):
    batch = [[], [], []]
    for pieces in generate.stream(trained.model, trained.vocab, prefix(trained), 70, mx.cpu(), num_samples=3,
                                  **sampling):
        for text, piece in zip(batch, pieces):
            text.append(piece)
    assert ["".join(text) for text in batch] == [greedy_text(trained, 70)] * 3


def samples(s, seed, num_samples=4, **options):
    pieces = generate.stream(s.model, s.vocab, prefix(s), 30, mx.cpu(), temperature=2.0, seed=seed,
                             num_samples=num_samples, **options)
    return ["".join(text) for text in zip(*pieces)]


def test_a_seeded_batch_is_reproducible_and_its_samples_differ(trained):
    batch = samples(trained, 7)
    assert batch == samples(trained, 7) and len(set(batch)) == 4 and batch != samples(trained, 8)
    assert all(text.startswith("the quick") and len(text) == len("the quick") + 30 for text in batch)


def test_a_batch_cuts_each_sample_at_its_own_stop(trained):
    stop = "e"
    cut, whole = samples(trained, 7, stop=[stop]), samples(trained, 7)
    assert cut == ["the quick" + text[len("the quick"):].split(stop)[0] for text in whole]


def nucleus_reference(probs, p):
    """The smallest set of likeliest tokens holding at least p, as a NumPy loop would find it."""
    order, kept, mass = np.argsort(-probs), [], 0.0
    for token in order:
        if mass >= p:
            break
        kept.append(token)
        mass += probs[token]
    out = np.zeros_like(probs)
    out[kept] = probs[kept] / probs[kept].sum()
    return out


@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("temperature", [None, 0.7])
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(top_p, temperature):
    logits = np.random.default_rng(3).normal(0, 2, size=(5, 11)).astype(np.float32)
    probs = np.exp(logits / (temperature or 1.0))
    probs /= probs.sum(axis=-1, keepdims=True)
    got = generate.probabilities(nd.array(logits), temperature, top_p=top_p).asnumpy()
    assert got == pytest.approx(np.stack([nucleus_reference(row, top_p) for row in probs]), abs=1e-6)


def test_a_tiny_top_p_samples_the_greedy_text(trained):
    assert greedy_text(trained, top_p=1e-6, temperature=5.0, seed=1) == greedy_text(trained)


@pytest.mark.parametrize("settings, message", [
    ({"top_p": 0}, "--top-p must be in (0, 1], got 0"), ({"top_p": float("nan")}, "got nan"),
    ({"stop": [""]}, "--stop must be non-empty text, got ''"), ({"stop": [None]}, "got None"),
    ({"num_samples": 0}, "--num-samples must be at least 1, got 0"),
])
def test_bad_generation_settings_are_clear_errors(settings, message):
    with pytest.raises(CharlmError, match=re.escape(message)):
        generate.check(10, **settings)


def test_a_stop_given_as_a_string_is_one_sequence():
    assert generate.check(10, stop="\n\n") == ["\n\n"]
