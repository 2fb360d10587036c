import json

import pytest
from click.testing import CliRunner

from charlm import addition
from charlm.cli import main


@pytest.mark.parametrize("base, msd_first", [(10, False), (10, True), (2, False)])
def test_lines_are_correct_sums_in_the_chosen_order(base, msd_first):
    lines = addition.make_lines(8, 500, seed=3, base=base, msd_first=msd_first)
    assert len(lines) == 500 and len(set(lines)) > 490
    for line in lines:
        a, b, c = line.replace("=", "+").split("+")
        if not msd_first:
            a, b, c = a[::-1], b[::-1], c[::-1]
        assert int(a, base) + int(b, base) == int(c, base)
        assert len(a) <= 8 and len(b) <= 8 and set(line) <= set("0123456789+="[:base] + "+=")


def test_the_same_seed_gives_the_same_lines_and_another_seed_others():
    assert addition.make_lines(4, 50, 1) == addition.make_lines(4, 50, 1) != addition.make_lines(4, 50, 2)


def test_least_significant_digit_first_is_the_default():
    msd = addition.make_lines(3, 20, seed=0, msd_first=True)
    flipped = ["{}+{}={}".format(*(n[::-1] for n in line.replace("=", "+").split("+"))) for line in msd]
    assert addition.make_lines(3, 20, seed=0) == flipped
    assert addition.write_number(120, 10, msd_first=False) == "021"
    assert addition.write_number(5, 2, msd_first=True) == "101"


def test_pad_writes_fixed_width_numbers_with_the_zeros_on_the_most_significant_side():
    assert addition.make_lines(2, 4, seed=0, pad=True) == ["58+03=511", "36+40=760", "15+70=850", "62+10=720"]
    assert addition.make_lines(2, 4, seed=0, pad=True, msd_first=True) == ["85+30=115", "63+04=067", "51+07=058",
                                                                          "26+01=027"]
    assert addition.make_lines(2, 4, seed=0)[1] == "36+4=76"  # unpadded by default


@pytest.mark.parametrize("base, msd_first", [(10, False), (10, True), (2, False)])
def test_padded_lines_have_fixed_widths_and_right_sums(base, msd_first):
    for line in addition.make_lines(6, 300, seed=4, base=base, msd_first=msd_first, pad=True):
        a, b, c = line.replace("=", "+").split("+")
        assert (len(a), len(b), len(c)) == (6, 6, 7)
        if not msd_first:
            a, b, c = a[::-1], b[::-1], c[::-1]
        assert int(a, base) + int(b, base) == int(c, base)  # int() reads past the leading zeros


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="charlm")


def test_an_lstm_learns_one_digit_addition_and_eval_reports_its_accuracy(tmp_path):
    """All 100 one-digit sums, learnt by heart and scored by greedy completion after `=`."""
    data = tmp_path / "add.txt"
    assert invoke("data", "addition", "--digits", 1, "--count", 3000, "--seed", 1, "-o", data).exit_code == 0
    assert len(data.read_text().splitlines()) == 3000
    padded = tmp_path / "padded.txt"
    assert invoke("data", "addition", "--digits", 2, "--count", 4, "--seed", 0, "--pad", "-o", padded).exit_code == 0
    assert padded.read_text() == "58+03=511\n36+40=760\n15+70=850\n62+10=720\n"
    result = invoke("train", "--data", data, "--mode", "lines", "--runs-dir", tmp_path / "runs", "--name", "add",
                    "--hidden-size", 64, "--embed-size", 16, "--num-layers", 1, "--dropout", 0, "--batch-size", 32,
                    "--epochs", 4, "--lr", 0.01, "--lr-decay", 1, "--sample-every", 0, "--val-frac", 0.05)
    assert result.exit_code == 0, result.output
    test = tmp_path / "test.txt"
    invoke("data", "addition", "--digits", 1, "--count", 200, "--seed", 2, "-o", test)
    result = invoke("eval", "--task", "addition", "--data", test, "--run", tmp_path / "runs" / "add", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["count"] == 200 and scores["accuracy"] >= 0.95
    units, tens = scores["position_accuracy"]  # sums of one-digit numbers have answers of 1 or 2 digits
    assert units >= scores["accuracy"] and tens >= 0.9  # every exact answer has its units digit right


@pytest.mark.parametrize("base", [10, 2])
def test_mixed_draws_digit_counts_uniformly_and_keeps_the_sums_right(base):
    lines = addition.make_lines(6, 6000, seed=4, base=base, mixed=True)
    counts = {}
    for line in lines:
        a, b, c = (n[::-1] for n in line.replace("=", "+").split("+"))
        assert int(a, base) + int(b, base) == int(c, base)
        for n in (a, b):
            assert n == "0" or n[0] != "0"  # written without leading zeros: the length is the digit count
            counts[len(n)] = counts.get(len(n), 0) + 1
    assert sorted(counts) == list(range(1, 7))
    assert all(abs(k / 12000 - 1 / 6) < 0.02 for k in counts.values())  # 2,000 +- 2% each
    # without --mixed nearly every number has all its digits
    full = [line.split("+")[0] for line in addition.make_lines(6, 1000, seed=4, base=base)]
    assert sum(len(n) == 6 for n in full) > 1000 * (1 - 2 / base)


def test_mixed_is_a_cli_flag(tmp_path):
    out = tmp_path / "m.txt"
    result = CliRunner().invoke(main, ["data", "addition", "--digits", 5, "--count", 300, "--mixed", "-o", out])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == addition.make_lines(5, 300, seed=1, mixed=True)


def test_mixed_refuses_numbers_its_float_draw_cannot_make_exactly():
    assert len(addition.make_lines(15, 10, seed=0, mixed=True)) == 10
    with pytest.raises(addition.CharlmError, match="--mixed takes numbers below 2\\*\\*53: --digits at most 15"):
        addition.make_lines(16, 10, seed=0, mixed=True)
