"""charlm export: the exported step graph against charlm's own step, in MXNet's SymbolBlock (a fresh process
without charlm) and in onnxruntime, and greedy generation in onnxruntime alone against `charlm generate`."""
import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import export, recipe
from charlm.cli import main
from charlm.configs import Config
from charlm.engine import mx, nd
from charlm.vocab import Vocab
from conftest import H, N, V, randomize

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "onnx_generate.py"
FUSED = [(cell, layers, embed) for cell in ("rnn", "lstm", "gru") for layers in (1, 2) for embed in (0, 4)]
CELLS = FUSED + [("lstm", 2, "tied")] + [(cell, 1, 0) for cell in ("scratch-rnn", "scratch-lstm", "scratch-gru")]
TOL = 1e-5


def _model(tiny_model, cell, layers, embed):
    """A tiny model with random weights, and its config; embed "tied": the decoder's weight the embedding's."""
    tied = embed == "tied"
    settings = dict(num_layers=layers, embed_size=H if tied else embed, dropout=0.5, variational_dropout=False,
                    tie_weights=tied)
    cfg = recipe.fixed(Config())
    cfg.model = tiny_model.config(cell, **settings)
    return tiny_model(cell, **settings), cfg


def _step_case(model, seed=2):
    """(ids (N,), the step graph's input states, charlm's logits (N, V), its new states split as the graph's)."""
    rng = np.random.default_rng(seed)
    ids = nd.array(rng.integers(0, V, size=N))
    state = [nd.array(rng.normal(size=s.shape)) for s in model.begin_state(N, mx.cpu())]
    logits, new = model.step(ids.reshape((1, -1)), state)
    return ids, export.split_state(model, state), logits[0], export.split_state(model, new)


def _written(tmp_path, tiny_model, cell, layers, embed, fmt):
    model, cfg = _model(tiny_model, cell, layers, embed)
    export.write(model, Vocab("abcdef"), cfg, tmp_path, fmt, "model")
    return model, json.loads((tmp_path / export.MANIFEST).read_text())


def _onnx_or_skip():
    """onnxruntime, or skip the test when onnx or onnxruntime is not installed (both are in the test extra)."""
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


SYMBOL_BLOCK = """
import sys, numpy as np, mxnet as mx
d = sys.argv[1]
inputs = np.load(d + "/inputs.npz")
names = [i["name"] for i in __import__("json").load(open(d + "/charlm-export.json"))["inputs"]]
block = mx.gluon.SymbolBlock.imports(d + "/model-symbol.json", names, d + "/model-0000.params")
out = block(*[mx.nd.array(inputs[n]) for n in names])
np.savez(d + "/outputs.npz", *[o.asnumpy() for o in out])
assert not [m for m in sys.modules if m.startswith("charlm")]
"""


@pytest.mark.parametrize("cell, layers, embed", [("lstm", 2, 0), ("gru", 1, 4), ("scratch-lstm", 1, 0)])
def test_mxnet_export_matches_charlm_step_in_a_fresh_process(tmp_path, tiny_model, cell, layers, embed):
    model, manifest = _written(tmp_path, tiny_model, cell, layers, embed, "mxnet")
    ids, state, logits, new = _step_case(model)
    names = [i["name"] for i in manifest["inputs"]]
    np.savez(tmp_path / "inputs.npz", **{n: a.asnumpy() for n, a in zip(names, [ids, *state])})
    subprocess.run([sys.executable, "-c", SYMBOL_BLOCK, str(tmp_path)], check=True, cwd=tmp_path)
    out = np.load(tmp_path / "outputs.npz")
    got = [out[f"arr_{k}"] for k in range(len(out.files))]
    for a, b in zip(got, [logits, *new], strict=True):
        np.testing.assert_allclose(a, b.asnumpy(), atol=TOL)


@pytest.mark.parametrize("cell, layers, embed", CELLS)
def test_onnx_export_matches_charlm_step_in_onnxruntime(tmp_path, tiny_model, cell, layers, embed):
    ort = _onnx_or_skip()
    model, manifest = _written(tmp_path, tiny_model, cell, layers, embed, "onnx")
    ids, state, logits, new = _step_case(model)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i["name"]: a.asnumpy() for i, a in zip(manifest["inputs"], [ids, *state])}
    got = session.run([o["name"] for o in manifest["outputs"]], feed)
    for a, b in zip(got, [logits, *new], strict=True):
        np.testing.assert_allclose(a, b.asnumpy(), atol=TOL)


@pytest.fixture(scope="module", params=[("lstm", "stream"), ("scratch-gru", "lines")], ids=lambda p: "-".join(p))
def random_run(request, tmp_path_factory):
    """A tiny trained run whose best parameters are then made random: its greedy text is far from constant."""
    cell, mode = request.param
    tmp = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", "--runs-dir", str(tmp), "--name", "r", "--cell", cell, "--mode", mode,
                                       "--hidden-size", "16", "--num-layers", "2", "--seq-len", "8", "--batch-size",
                                       "8", "--max-chars", "3000", "--epochs", "1", "--sample-every", "0"])
    assert result.exit_code == 0, result.output
    import charlm
    lm = charlm.load(tmp / "r")
    randomize(lm.model, seed=3)
    lm.model.save_parameters(str(tmp / "r" / "params-best.params"))
    return tmp / "r"


def _export(run, out):
    result = CliRunner().invoke(main, ["export", "--run", str(run), "-o", str(out), "--format", "onnx"])
    assert result.exit_code == 0, result.output


def test_onnx_greedy_text_equals_charlm_generate(random_run, tmp_path):
    _onnx_or_skip()
    out = tmp_path / "exported"
    _export(random_run, out)
    expected = CliRunner().invoke(main, ["generate", "The Time ", "--length", "200", "--run", str(random_run)]).stdout
    # numpy and onnxruntime alone: the script run from elsewhere, and charlm and MXNet never imported
    check = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
             "assert not [m for m in sys.modules if m.startswith(('charlm', 'mxnet'))]")
    got = subprocess.run([sys.executable, "-c", check, str(SCRIPT), str(out), "The Time ", "--length", "200"],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert len(set(expected)) > 3 and got == expected


def test_onnx_generate_samples_reproducibly(random_run, tmp_path):
    _onnx_or_skip()
    out = tmp_path / "exported"
    _export(random_run, out)
    args = [sys.executable, str(SCRIPT), str(out), "the", "--length", "30", "--temperature", "0.8", "--seed", "4"]
    first, again = (subprocess.run(args, capture_output=True, text=True, check=True).stdout for _ in range(2))
    assert first == again and first.startswith("the") and len(first) == 3 + 30 + 1


def test_export_that_fails_leaves_nothing_behind(random_run, tmp_path):
    out = tmp_path / "exported"
    with mock.patch("charlm.export.write", side_effect=OSError(28, "No space left on device")):
        result = CliRunner().invoke(main, ["export", "--run", str(random_run), "-o", str(out), "--format", "mxnet"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_force_replaces_the_old_export(random_run, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "charlm-export.json").write_text("{}")  # an earlier export's, which --force may replace
    (out / "stale.txt").write_text("old")
    result = CliRunner().invoke(main, ["export", "--run", str(random_run), "-o", str(out), "--format", "mxnet",
                                       "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["charlm-export.json", "exported-0000.params",
                                                     "exported-symbol.json", "vocab.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]
