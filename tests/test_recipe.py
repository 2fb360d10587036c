"""The automatic recipe: what it chooses for a text and a budget, that given settings win, that a run records
its choice and repeats it, and variational dropout."""
import collections
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from charlm import configs, recipe
from charlm.cli import main
from charlm.engine import autograd, mx, nd
from charlm.run import Run, epoch_records

RECIPE_KEYS = set(recipe.FIXED)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def given(**flags):
    return configs.resolve(flags={tuple(k.split(".")): v for k, v in flags.items()})


def resolved(**flags):
    cfg = given(**flags)
    return cfg, recipe.fill(cfg)


def test_every_setting_left_unset_is_chosen_and_those_given_are_kept(corpus):
    cfg, why = resolved(**{"data.path": str(corpus), "model.hidden_size": 48, "train.ema": 0.0})
    assert configs.unset(cfg) == []
    assert cfg.model.hidden_size == 48 and cfg.train.ema == 0.0
    assert why.startswith("recipe: lstm 2 x 48,") and "set by you: model.hidden_size, train.ema" in why


def test_the_recipe_keys_are_the_settings_left_to_it():
    assert set(configs.unset(configs.Config())) == RECIPE_KEYS


def test_the_bundled_book_gets_a_budget_of_at_most_five_minutes_and_a_longer_text_a_longer_one():
    book, _, _ = recipe.text_size(configs.Config().data)
    assert recipe.default_budget(book) <= 300
    budgets = [recipe.default_budget(chars) for chars in (10_000, book, 700_000, 10**7, 10**9)]
    assert budgets == sorted(budgets) and budgets[2] > budgets[1]
    assert budgets[-1] == recipe.MAX_BUDGET and budgets[0] == recipe.MIN_BUDGET


def test_more_text_or_more_time_never_gets_a_smaller_model_and_less_text_gets_no_less_dropout():
    sizes = [(tokens, seconds) for tokens in (40_000, 160_000, 630_000, 2_000_000) for seconds in (300, 600, 1800)]
    chosen = {(t, s): recipe.choose(t, 80, s)[0] for t, s in sizes}
    for (t, s), settings in chosen.items():
        for (t2, s2), other in chosen.items():
            if t2 >= t and s2 >= s:
                assert other["model.hidden_size"] >= settings["model.hidden_size"], ((t, s), (t2, s2))
            if t2 >= t and s2 == s and other["model.hidden_size"] == settings["model.hidden_size"]:
                assert other["model.dropout"] <= settings["model.dropout"]


def test_a_shorter_text_gets_smaller_batches_down_to_ones_a_tiny_text_can_fill(corpus):
    sizes = [recipe.choose(tokens, 80, 300)[0] for tokens in (10**7, 634_000, 161_000, 41_000)]
    area = [s["data.batch_size"] * s["data.seq_len"] for s in sizes]
    assert area == sorted(area, reverse=True) and area[0] == 32 * 64 and area[-1] == 8 * 16
    cfg, _ = resolved(**{"data.path": str(corpus)})
    assert cfg.data.batch_size * cfg.data.seq_len * 8 <= recipe.text_size(cfg.data)[1]


def test_lines_mode_gets_the_fixed_settings(corpus):
    cfg, why = resolved(**{"data.path": str(corpus), "data.mode": "lines"})
    assert {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in RECIPE_KEYS} == recipe.FIXED
    assert "the recipe is for streams" in why


WORDS = "the cat sat on the mat and the dog sat by the door\nof the house where a cat once was\n" * 3 + "zebra yak\n"


@pytest.fixture
def words(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(WORDS)
    return path


def test_a_word_level_text_gets_a_tied_model_and_the_words_seen_twice(words):
    cfg, why = resolved(**{"data.path": str(words), "data.level": "word", "train.time_limit": "5m"})
    counts = collections.Counter(WORDS.split())
    assert cfg.data.max_vocab == 2 + sum(c >= 2 for c in counts.values())  # <unk>, <eos> and those words
    assert cfg.model.tie_weights and cfg.model.embed_size == cfg.model.hidden_size and cfg.model.dropout >= 0.1
    assert "training words" in why and f"a vocabulary of {cfg.data.max_vocab}" in why


def test_a_word_level_text_with_no_word_seen_twice_keeps_every_word(tmp_path):
    path = tmp_path / "once.txt"
    path.write_text(" ".join(f"w{i}" for i in range(50)) + "\n")
    cfg, why = resolved(**{"data.path": str(path), "data.level": "word", "train.time_limit": "1m"})
    assert cfg.data.max_vocab == 0 and "vocabulary" not in why


def test_given_settings_shape_the_word_recipe(words):
    cfg, why = resolved(**{"data.path": str(words), "data.level": "word", "data.min_freq": 1,
                           "train.time_limit": "5m"})
    assert cfg.data.max_vocab == 2 + len(set(WORDS.split())) and "(every word," in why
    untied = recipe.choose(100_000, 10_000, 300, {"model.hidden_size": 256, "model.tie_weights": False},
                           level="word")[1]
    tied = recipe.choose(100_000, 10_000, 300, {"model.hidden_size": 256}, level="word")[1]
    per_word = [float(re.search(r"([\d.]+) weights per word", why)[1]) for why in (untied, tied)]
    assert per_word[0] == pytest.approx(per_word[1] + 10_000 * 256 / 100_000, abs=0.1)  # its own embedding


def test_a_word_level_model_is_sized_by_the_characters_of_its_words():
    by_words = recipe.choose(124_000, 6_000, 300, level="word")[0]["model.hidden_size"]
    by_chars = recipe.choose(124_000, 6_000, 300, level="word", chars=570_000)[0]["model.hidden_size"]
    assert by_words < by_chars  # five characters a word: more text than its words count


def test_sgd_and_the_scratch_cells_get_no_setting_they_cannot_use():
    sgd, _ = recipe.choose(160_000, 60, 300, optimizer="sgd")
    adam, _ = recipe.choose(160_000, 60, 300)
    assert sgd["train.weight_decay"] == 0 < adam["train.weight_decay"]
    scratch, _ = recipe.choose(160_000, 60, 300, {"model.cell": "scratch-lstm"})
    assert not scratch["model.tie_weights"]


def test_a_word_level_vocabulary_is_capped_at_penn_treebanks_size():
    ids = np.repeat(np.arange(2 * recipe.WORD_VOCAB), 2)
    assert recipe.word_vocab(ids) == recipe.WORD_VOCAB
    assert recipe.word_vocab(np.array([0, 1, 2, 2, 3, 4, 4, 4])) == 4  # 3, seen once, is left out
    assert recipe.word_vocab(np.array([0, 1, 2, 3, 4])) == 0  # no word seen twice: no cap


def test_a_word_level_run_reads_the_words_seen_once_as_unk(tmp_path, words):
    result = invoke("train", "--data", words, "--level", "word", "--runs-dir", tmp_path, "--name", "w", "--epochs", 1,
                    "--hidden-size", 8, "--seq-len", 4, "--batch-size", 2, "--sample-every", 0)
    assert result.exit_code == 0, result.output
    counts = collections.Counter(WORDS.split())
    assert set(Run(tmp_path / "w").vocab().tokens) == {"<unk>", "<eos>"} | {w for w, c in counts.items() if c >= 2}


def test_a_word_level_run_from_another_keeps_the_sources_vocabulary(tmp_path, words):
    tiny = ["--level", "word", "--runs-dir", tmp_path, "--epochs", 1, "--seq-len", 4, "--batch-size", 2,
            "--sample-every", 0]
    assert invoke("train", "--data", words, "--name", "a", "--hidden-size", 8, *tiny).exit_code == 0
    (tmp_path / "more.txt").write_text(WORDS + "the cat sat\n" * 3)
    result = invoke("train", "--data", tmp_path / "more.txt", "--name", "b", "--init-from", tmp_path / "a", *tiny)
    assert result.exit_code == 0, result.output
    assert Run(tmp_path / "b").vocab().tokens == Run(tmp_path / "a").vocab().tokens
    assert Run(tmp_path / "b").config().data.max_vocab == 0


def test_the_fixed_config_file_spells_out_the_fixed_settings():
    cfg = configs.resolve([CONFIGS / "fixed.yaml"])
    assert {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in RECIPE_KEYS} == recipe.FIXED


def test_config_show_prints_the_choice_and_a_config_that_repeats_it(corpus, tmp_path):
    result = invoke("config", "show", "--data", corpus, "--time-limit", "30m")
    assert result.exit_code == 0, result.output
    first, rest = result.stdout.split("\n", 1)
    assert first.startswith("# recipe: lstm") and "over 30m" in first
    again = tmp_path / "again.yaml"
    again.write_text(rest)
    cfg = configs.resolve([again])
    assert configs.unset(cfg) == [] and recipe.fill(cfg) is None
    assert yaml.safe_load(rest)["train"]["time_limit"] == "30m"


def test_a_run_says_what_was_chosen_first_and_records_it(corpus, tmp_path):
    result = invoke("train", "--data", corpus, "--runs-dir", tmp_path, "--name", "r", "--epochs", 1,
                    "--hidden-size", 16, "--sample-every", 0)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("recipe: lstm 2 x 16, ")
    cfg = configs.resolve([tmp_path / "r" / "config.yaml"])
    assert configs.unset(cfg) == [] and cfg.train.epochs == 1 and cfg.train.time_limit is None
    repeat = invoke("train", "-c", tmp_path / "r" / "config.yaml", "--runs-dir", tmp_path, "--name", "again")
    assert repeat.exit_code == 0 and repeat.stdout.startswith("run ")
    assert (tmp_path / "again" / "config.yaml").read_text() == (tmp_path / "r" / "config.yaml").read_text()


def test_variational_dropout_drops_the_same_units_at_every_time_step(tiny_model):
    shared = tiny_model("lstm", dropout=0.5, variational_dropout=True).drop
    fresh = tiny_model("lstm", dropout=0.5, variational_dropout=False).drop
    x = nd.ones((6, 3, 40))  # (T, N, E)
    mx.random.seed(0)
    with autograd.train_mode():
        kept, each = shared(x).asnumpy() > 0, fresh(x).asnumpy() > 0
    assert (kept == kept[:1]).all() and 0.3 < kept.mean() < 0.7
    assert not (each == each[:1]).all()
    assert (shared(x).asnumpy() == 1).all()  # at prediction, no dropout


def test_without_validation_text_there_is_no_average_to_choose_by(corpus):
    cfg, _ = resolved(**{"data.path": str(corpus), "data.val_frac": 0.0, "train.time_limit": "30m"})
    assert cfg.train.ema == 0.0 and cfg.train.lr_schedule == "cosine"


@pytest.mark.parametrize("ema", [None, 0.0, 0.999])
def test_a_run_that_averages_keeps_a_constant_rate_and_one_that_does_not_anneals_it(corpus, ema):
    cfg, why = resolved(**{"data.path": str(corpus), "train.time_limit": "30m", "train.epochs": 40,
                           **({} if ema is None else {"train.ema": ema})})
    assert (cfg.train.ema > 0) == (ema != 0.0)
    assert cfg.train.lr_schedule == ("constant" if cfg.train.ema else "cosine")
    assert f" {cfg.train.lr_schedule} over 30m" in why


def test_an_average_keeps_a_constant_rate_only_for_a_text_read_fewer_times_than_anneal():
    for passes in (10, recipe.ANNEAL - 1, recipe.ANNEAL, 4 * recipe.ANNEAL):  # 500 updates or more
        settings = recipe.choose(160_000, 60, 10**6, {"model.hidden_size": 128, "train.epochs": passes})[0]
        assert settings["train.ema"] > 0
        assert settings["train.lr_schedule"] == ("constant" if passes < recipe.ANNEAL else "cosine"), passes


def test_regularisation_grows_with_the_passes_and_the_weights_per_character_and_the_average_spans_a_third():
    levers = ("model.dropout", "model.weight_drop", "train.weight_decay")
    for hidden in (128, 256, 512):
        chosen = [recipe.choose(160_000, 60, 10**6, {"model.hidden_size": hidden, "train.epochs": passes})[0]
                  for passes in (1, 2, 4, 8, 16, 32, 64)]  # a budget long enough for the passes given
        for lever in levers:
            values = [settings[lever] for settings in chosen]
            assert values == sorted(values) and values[0] < values[-1], (hidden, lever)
        for passes, settings in zip((1, 2, 4, 8, 16, 32, 64), chosen):
            updates = passes * 160_000 / (settings["data.batch_size"] * settings["data.seq_len"])
            if updates >= 500:  # the window: the updates averaged
                assert 1 / (1 - settings["train.ema"]) == pytest.approx(updates / 3, rel=0.1)
    by_size = [recipe.choose(160_000, 60, 10**6, {"model.hidden_size": h, "train.epochs": 4})[0] for h in (128, 512)]
    assert [s["model.dropout"] for s in by_size] == sorted(s["model.dropout"] for s in by_size)
    assert all(0.1 <= s["model.dropout"] <= 0.5 for s in chosen + by_size)


def test_the_choice_follows_the_settings_given():
    settings, why = recipe.choose(160_000, 60, 300, {"model.hidden_size": 64, "train.epochs": 3})
    assert settings["model.hidden_size"] == 64 and "about 3 passes" in why
    assert settings["model.dropout"] == 0.1 and settings["model.weight_drop"] == 0  # 3 passes of a small model
    settings, _ = recipe.choose(160_000, 60, 300, {"model.hidden_size": 1024, "train.epochs": 3})
    assert settings["model.dropout"] == 0.5  # 100 weights per character learn even 3 passes by heart
    assert recipe.choose(160_000, 60, 300, devices=3)[0]["data.batch_size"] % 3 == 0


@pytest.mark.parametrize("key", ["variational_dropout", "weight_drop"])
def test_a_run_made_before_a_dropout_setting_reads_as_without_it(tmp_path, key):
    cfg = recipe.fixed(configs.Config())
    text = "".join(line for line in configs.to_yaml(cfg).splitlines(keepends=True) if f" {key}:" not in line)
    assert key not in text
    (tmp_path / "config.yaml").write_text(text)
    value = getattr(Run(tmp_path).config().model, key)
    assert value is not None and not value  # off, not left for the recipe


def test_each_epoch_is_plotted_and_averaged_once_after_a_time_limit_was_resumed():
    records = [{"epoch": 1}, {"epoch": 2, "step": 5}, {"epoch": 2}, {"epoch": 3, "step": 7}]
    assert epoch_records(records) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "step": 7}]


def test_a_slower_machine_gets_no_larger_model_and_no_more_dropout():
    chosen = {}
    for scale in (0.1, 0.4, 1.0, 4.0):
        cfg = configs.resolve()
        recipe.fill(cfg, measure=lambda probe, vocab: scale * recipe.speed(
            probe.model.hidden_size, vocab, probe.model.num_layers, probe.model.embed_size))
        chosen[scale] = (cfg.model.hidden_size, cfg.model.dropout)
    sizes, dropouts = zip(*chosen.values())
    assert list(sizes) == sorted(sizes) and list(dropouts) == sorted(dropouts)
    assert dropouts[0] < dropouts[-1]


@pytest.mark.parametrize("hidden", [{}, {"model.hidden_size": 48}], ids=["reference", "given"])
def test_the_machine_is_measured_on_the_recipe_at_the_reference_size_or_the_size_given(corpus, hidden):
    probes = []

    def measure(probe, vocab):
        probes.append((probe, vocab))
        return recipe.speed(probe.model.hidden_size, vocab, probe.model.num_layers, probe.model.embed_size)

    cfg = given(**{"data.path": str(corpus), **hidden})
    why = recipe.fill(cfg, measure=measure)
    probe, vocab = probes[-1]
    assert configs.unset(probe) == [] and vocab == recipe.text_size(cfg.data)[2]
    assert probe.model.hidden_size == hidden.get("model.hidden_size", recipe.REFERENCE)
    assert (probe.data.batch_size, probe.data.seq_len) == (cfg.data.batch_size, cfg.data.seq_len)
    assert "measured here" in why


def test_the_machine_is_not_measured_when_its_speed_would_choose_nothing(corpus):
    timed = {key: {"model.hidden_size": 32}.get(key, recipe.FIXED[key]) for key in recipe.TIMED}
    cfg = given(**{"data.path": str(corpus), **timed})
    why = recipe.fill(cfg, measure=lambda probe, vocab: pytest.fail("measured"))
    assert "by the speed table" in why


def test_a_clusters_workers_choose_by_the_speed_table_so_they_choose_alike(corpus):
    from charlm.api import choose

    assert "by the speed table" in choose(given(**{"data.path": str(corpus)}), "dist_sync")
    assert "measured here" in choose(given(**{"data.path": str(corpus), "model.hidden_size": 16}))


def test_dist_async_workers_get_a_constant_rate_without_warmup_or_decay_unless_given(corpus):
    from charlm.api import choose

    cfg = given(**{"data.path": str(corpus)})
    assert " lr 0.003 constant over " in choose(cfg, "dist_async")
    assert (cfg.train.lr_schedule, cfg.train.warmup, cfg.train.weight_decay) == ("constant", 0, 0.0)
    cfg = given(**{"data.path": str(corpus), "train.lr_schedule": "exp"})
    choose(cfg, "dist_async")
    assert cfg.train.lr_schedule == "exp"
