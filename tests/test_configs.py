import importlib.util
from pathlib import Path

import pytest
import yaml

from charlm import configs as config, recipe
from charlm.errors import CharlmError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_later_files_win_and_flags_win_over_files(tmp_path):
    a = write(tmp_path, "a.yaml", "model: {hidden_size: 64, cell: gru}\ntrain: {lr: 0.5}\n")
    b = write(tmp_path, "b.yaml", "model: {hidden_size: 32}\n")
    cfg = config.resolve([a, b], {("train", "lr"): 0.25})
    assert (cfg.model.hidden_size, cfg.model.cell, cfg.train.lr) == (32, "gru", 0.25)
    assert cfg.data.seq_len == config.DataConfig().seq_len


def test_set_wins_over_flags_and_files_and_parses_yaml(tmp_path):
    a = write(tmp_path, "a.yaml", "model: {hidden_size: 64}\n")
    cfg = config.resolve([a], {("model", "hidden_size"): 32},
                         ["model.hidden_size=16", "train.sample_prefixes=[ab, cd]", "data.path=null"])
    assert cfg.model.hidden_size == 16 and cfg.train.sample_prefixes == ["ab", "cd"] and cfg.data.path is None


@pytest.mark.parametrize("assignment, message", [
    ("model.hidden_size", "expects section.key=value"),
    ("hidden_size=3", "expects section.key=value"),
    ("modle.hidden_size=3", "unknown section 'modle'"),
    ("model.hiden_size=3", r"unknown key model\.hiden_size"),
    ("model.hidden_size=[1", "not valid YAML"),
])
def test_bad_set_is_a_clear_error(assignment, message):
    with pytest.raises(CharlmError, match=message):
        config.resolve([], sets=[assignment])


def test_unknown_key_names_it_its_line_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "c.yaml", "data:\n  seq_len: 8\nmodel:\n  cell: gru\n  hiden_size: 64\n")
    with pytest.raises(CharlmError, match=r"c\.yaml:5: unknown key model\.hiden_size.*hidden_size"):
        config.resolve([path])


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(CharlmError, match="unknown section 'optim'"):
        config.resolve([write(tmp_path, "c.yaml", "optim: {lr: 1}\n")])


@pytest.mark.parametrize("text, key", [
    ("model: {hidden_size: big}\n", "model.hidden_size"),
    ("data: {lowercase: 1}\n", "data.lowercase"),
    ("model: {cell: transformer}\n", "model.cell"),
])
def test_wrong_type_or_choice_names_the_key(tmp_path, text, key):
    with pytest.raises(CharlmError, match=key.replace(".", r"\.")):
        config.resolve([write(tmp_path, "c.yaml", text)])


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "c.yaml", "model:\n  hidden_size: 64\n  cell: [lstm\n")
    with pytest.raises(CharlmError, match=r"c\.yaml: line \d+ malformed YAML"):
        config.resolve([path])


@pytest.mark.parametrize("section, name, value", [
    ("data", "seq_len", 0), ("data", "batch_size", -1), ("train", "epochs", 0),
    ("model", "hidden_size", 0), ("data", "val_frac", 1.0), ("train", "lr", 0.0),
])
def test_values_no_run_can_use_are_rejected(section, name, value):
    with pytest.raises(CharlmError, match=f"{section}.{name}"):
        config.resolve([], {(section, name): value})


def test_yaml_round_trip_reproduces_the_config(tmp_path):
    cfg = config.resolve([], {("model", "cell"): "scratch-gru", ("train", "sample_prefixes"): ["ab"]})
    again = config.resolve([write(tmp_path, "r.yaml", config.to_yaml(cfg))])
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                                         if not p.name.startswith("sweep")))  # a sweep file is another format
def test_shipped_configs_load_with_the_values_they_write(name):
    path = ROOT / "configs" / name
    cfg = config.resolve([path])
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert {(s, k): getattr(getattr(cfg, s), k) for s, keys in written.items() for k in keys} == \
        {(s, k): value for s, keys in written.items() for k, value in keys.items()}


def test_addition_tune_layers_on_addition():
    cfg = config.resolve([ROOT / "configs" / "addition.yaml", ROOT / "configs" / "addition-tune.yaml"])
    first = config.resolve([ROOT / "configs" / "addition.yaml"])
    assert cfg.model == first.model and cfg.data == first.data  # the same model, so --init-from fits
    assert cfg.train.lr < first.train.lr and cfg.train.epochs < first.train.epochs


def test_shipped_default_config_spells_out_what_charlm_train_does():
    chosen = config.resolve()
    recipe.fill(chosen)  # at the speed table's
    assert config.resolve([ROOT / "configs" / "default.yaml"]) == chosen
    written = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert {(s, k) for s, keys in written.items() for k in keys} == {(s, f.name) for s, f in config.keys()}


def test_config_docs_are_current():
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts" / "config_docs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == script.render(), \
        "docs/config.md is stale: python scripts/config_docs.py --write"
