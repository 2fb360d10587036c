import json

from click.testing import CliRunner

from charlm.cli import main
from conftest import FIXED_FLAGS

TINY = [*FIXED_FLAGS,
        "--hidden-size", "16", "--embed-size", "16", "--num-layers", "1", "--seq-len", "5", "--batch-size", "4",
        "--sample-every", "0"]
TEXT = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="charlm")


def test_word_level_trains_with_separate_valid_and_test_files_and_generates_words(tmp_path):
    for name, text in [("train", TEXT * 20), ("valid", TEXT * 2), ("test", "the bird sat on the mat\n" * 4)]:
        (tmp_path / f"{name}.txt").write_text(text)
    runs = tmp_path / "runs"
    result = invoke("train", *TINY, "--data", tmp_path / "train.txt", "--valid-data", tmp_path / "valid.txt",
                    "--test-data", tmp_path / "test.txt", "--level", "word", "--tie-weights", "--epochs", 3,
                    "--plateau-factor", 0.25, "--runs-dir", runs, "--name", "w")
    assert result.exit_code == 0, result.output
    assert "11-word vocabulary" in result.output  # 9 distinct words, <unk> and <eos>
    assert "| test ppl" in result.output
    state = json.loads((runs / "w" / "state.json").read_text())
    # 28 tokens (6 words + <eos> per line) read as 4 streams of 27 // 4 predictions
    assert "test_bpc" not in state["test"] and state["test"]["test_tokens"] == 27 // 4 * 4
    records = [json.loads(line) for line in (runs / "w" / "metrics.jsonl").read_text().splitlines()]
    assert "val_ppl" in records[0] and "val_bpc" not in records[0]
    assert records[0]["val_loss"] > records[-1]["val_loss"]
    out = invoke("generate", "the cat", "--length", 6, "--run", runs / "w")
    assert out.exit_code == 0 and out.stdout.startswith("the cat ")
    words = out.stdout.split()
    assert set(words) <= set(TEXT.split()) | {"<unk>"}
    scored = invoke("eval", "--run", runs / "w", "--data", tmp_path / "test.txt")
    assert "per word" in scored.stdout and "bpc" not in scored.stdout
    assert json.loads(invoke("eval", "--run", runs / "w", "--json").stdout)["tokens"] == 39 // 4 * 4  # valid: 40 tokens


def test_plateau_factor_anneals_the_learning_rate_when_validation_stops_improving(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 20)
    runs = tmp_path / "runs"
    result = invoke("train", *TINY, "--data", tmp_path / "t.txt", "--level", "word", "--epochs", 6, "--lr", 5,
                    "--optimizer", "sgd", "--lr-decay", 1, "--plateau-factor", 0.5, "--runs-dir", runs, "--name", "p")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (runs / "p" / "metrics.jsonl").read_text().splitlines()]
    best, expected = float("inf"), 5.0
    for r in records:
        assert r["lr"] == expected
        if r["val_loss"] >= best:
            expected /= 2
        best = min(best, r["val_loss"])
