"""Export a run's best model for runtimes without charlm: MXNet's symbol files or ONNX, of its one-step
generation graph (token ids and per-layer states in, logits and new states out), with its vocabulary and
a manifest (charlm-export.json) of what a runtime must know to feed it."""
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

from . import __version__, checkpoint
from .engine import gluon, mx, nd
from .errors import CharlmError
from .model import RNNLM, FusedSteps
from .run import VOCAB, find
from .scratch import Unrolled, state_kinds

FORMATS = ("mxnet", "onnx", "web")
MANIFEST = "charlm-export.json"
OPSET = 13  # stated, not the installed onnx's newest (mx.onnx.export_model writes that, with opset-13 nodes)
IR_VERSION = 7  # the ONNX IR of opset 13: runtimes older than the onnx that wrote the file load it too
ONNX_HINT = 'pip install "charlm[onnx]"'


class _OneHot(gluon.HybridBlock):
    """ids (N,) -> one-hot (N, V) from a comparison with 0 .. V-1: ONNX has no converter for one_hot."""

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def hybrid_forward(self, F, ids):
        return F.broadcast_equal(ids.reshape((-1, 1)), F.arange(self.vocab_size).reshape((1, -1)))


class _FusedStep(FusedSteps):
    """One step of an RNNLM on its fused weights, as charlm's own generation step, but with each layer's
    states as inputs and outputs of their own: no split or stack of (layers, N, H), which ONNX's converters
    do not take for one layer."""

    def __init__(self, lm):
        super().__init__(lm, greedy=0)
        self.kinds = state_kinds(lm.cell)
        if self.embedding is None:
            self.embedding = _OneHot(lm.vocab_size)

    def hybrid_forward(self, F, ids, *states, parameters):
        k = self.kinds
        cells = [list(states[layer * k:(layer + 1) * k]) for layer in range(self.layer.num_layers)]
        logits, cells = self._step(F, self.layer.unpack(F, parameters), ids, cells)
        return (logits, *[s for cell in cells for s in cell])  # logits (N, V), then the states in input order


class _ScratchStep(gluon.HybridBlock):
    """One step of a ScratchLM, its own one-step graph with ids (N,) in and logits (N, V) out."""

    def __init__(self, lm, **kwargs):
        super().__init__(**kwargs)
        self.step = Unrolled(lm, 1)

    def hybrid_forward(self, F, ids, *states):
        logits, states = self.step(ids.reshape((1, -1)), list(states))
        return (F.squeeze(logits, axis=0), *states)


def step_block(model):
    """The one-step graph of a built model, hybridized: `block(ids (N,), *states) -> (logits (N, V), *states)`,
    the states each (N, H) in the order of state_names."""
    block = _FusedStep(model) if isinstance(model, RNNLM) else _ScratchStep(model)
    block.hybridize()
    return block


def state_names(model):
    """The states the step graph takes, layer by layer: h0, and c0 for an LSTM, then h1..."""
    layers = model.rnn.num_layers if isinstance(model, RNNLM) else 1
    kinds = ["h", "c"][:state_kinds(model.cell)]
    return [f"{kind}{layer}" for layer in range(layers) for kind in kinds]


def split_state(model, state):
    """A model's own state (per kind, (layers, N, H) or (N, H)) as the step graph's per-layer inputs."""
    if not isinstance(model, RNNLM):
        return list(state)
    return [s[layer] for layer in range(model.rnn.num_layers) for s in state]


def _io(model, vocab_size, hidden_size):
    """(inputs, outputs) of the step graph as [(what, shape)], N the batch size."""
    kinds = {"h": "hidden state", "c": "cell state"}
    states = [(f"layer {name[1:]}'s {kinds[name[0]]}", ["N", hidden_size]) for name in state_names(model)]
    return [("token ids, as float32", ["N"])] + states, [("logits", ["N", vocab_size])] + states


def _mxnet_inputs(count):
    """HybridBlock.export's names of a graph's inputs (more than one): data0, data1..."""
    return [f"data{i}" for i in range(count)]


def _onnx_names(model):
    """Names of the ONNX graph's inputs and outputs: ids, h0, c0, h1...; logits, h0_next..."""
    states = state_names(model)
    return ["ids"] + states, ["logits"] + [f"{s}_next" for s in states]


def export(out, fmt, run=None, runs_dir="runs", force=False):
    """Export the best model of a run (default: the latest in runs_dir) into the directory out; return its Path."""
    if fmt not in FORMATS:
        raise CharlmError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _need_onnx()
    run, out = find(run, runs_dir), _output(out, force)
    vocab, cfg = run.vocab(), run.config()
    if vocab.level != "char" and fmt != "web":
        raise CharlmError(f"{run.path} is a word-level run: --format {fmt} takes character-level runs (a word "
                          f"model's tokenizer and spacing are charlm's own, which only --format web carries)")
    model = checkpoint.load_model(run, mx.cpu())  # a run without params-best.params: a one-line error
    with _staging(out) as tmp:
        if fmt == "web":
            from . import web

            files = web.write(model, vocab, cfg, tmp, run.path.name)
            (tmp / MANIFEST).write_text(json.dumps(_manifest(model, vocab, cfg, fmt, files), indent=2,
                                                   ensure_ascii=False) + "\n", encoding="utf-8")
            (tmp / VOCAB).write_text(vocab.to_json(), encoding="utf-8")
        else:
            write(model, vocab, cfg, tmp, fmt, out.name)
    return out


def _output(out, force):
    """out as a Path, checked to be new, or (with force) an earlier export or an empty directory to replace."""
    path = Path(out)
    if path.name in ("", ".", "..") or Path(os.path.abspath(path)) in (Path.cwd(), *Path.cwd().parents):
        raise CharlmError(f"-o {out}: give a new directory's name (it is written beside, then moved into place)")
    if not (path.exists() or path.is_symlink()):
        return path
    if not force:
        raise CharlmError(f"{out} already exists: pass --force to replace it")
    if path.is_symlink() or not path.is_dir():
        raise CharlmError(f"{out} is not a directory: --force replaces only an earlier export or an empty directory")
    try:
        earlier = (path / MANIFEST).is_file() or not any(path.iterdir())
    except OSError as e:
        raise CharlmError(f"cannot read {out}: {e.strerror}") from None
    if not earlier:
        raise CharlmError(f"{out} holds files but no {MANIFEST}: --force replaces only an earlier export or an empty "
                          f"directory; remove it yourself or choose another -o")
    return path


def _need_onnx():
    """Import onnx, or say how to install it."""
    try:
        import onnx  # noqa: F401
        import mxnet.onnx  # noqa: F401
    except ImportError:
        raise CharlmError(f"--format onnx needs the onnx package: {ONNX_HINT}") from None


@contextlib.contextmanager
def _staging(out):
    """A temporary directory beside out, moved into place (replacing out) when the block succeeds and removed
    when it fails: out is never left half-written."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        replacing = out.exists() or out.is_symlink()
        if replacing:
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if replacing:
                os.replace(old, out)  # the old export stays as it was
            raise
        _remove(old)
    except OSError as e:
        raise CharlmError(f"cannot write {out}: {e.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove(path):
    """Remove a file, a symlink or a directory tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write(model, vocab, cfg, out, fmt, stem):
    """Write the export of a built model into the existing directory out: stem-symbol.json and stem-0000.params
    (HybridBlock.export's names) or stem.onnx, its vocabulary and the manifest."""
    block = step_block(model)
    H = cfg.model.hidden_size
    block(nd.zeros((1,)), *[nd.zeros((1, H)) for _ in state_names(model)])  # traces the graph that export saves
    block.export(str(out / stem))
    inputs, outputs = _io(model, len(vocab), H)
    if fmt == "mxnet":
        files = {"symbol": f"{stem}-symbol.json", "params": f"{stem}-0000.params"}
        sym = mx.sym.load(str(out / files["symbol"]))
        in_names, out_names = _mxnet_inputs(len(inputs)), sym.list_outputs()
    else:
        files = {"model": f"{stem}.onnx"}
        in_names, out_names = _onnx_names(model)
        _to_onnx(out / stem, len(inputs), H, in_names, out_names)
    (out / VOCAB).write_text(vocab.to_json(), encoding="utf-8")
    manifest = _manifest(model, vocab, cfg, fmt, files)
    manifest["inputs"] = [{"name": n, "holds": what, "shape": shape} for n, (what, shape) in zip(in_names, inputs)]
    manifest["outputs"] = [{"name": n, "holds": what, "shape": shape} for n, (what, shape) in zip(out_names, outputs)]
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _manifest(model, vocab, cfg, fmt, files):
    """What a runtime needs besides the graph: the model's shape, files, and how text becomes ids."""
    d, m = cfg.data, cfg.model
    scratch = not isinstance(model, RNNLM)
    return {"charlm": __version__, "format": fmt, "files": files, "vocabulary": VOCAB, "level": vocab.level,
            "cell": m.cell, "vocab_size": len(vocab), "embed_size": 0 if scratch else m.embed_size,
            "hidden_size": m.hidden_size, "num_layers": 1 if scratch else m.num_layers,
            "normalise": {"lowercase": d.lowercase, "strip_newlines": d.strip_newlines,
                          "letters_only": d.letters_only},
            "mode": d.mode, "line_start": vocab.tokens[vocab.bos] if d.mode == "lines" else None,
            "line_start_id": vocab.bos if d.mode == "lines" else None}


def _to_onnx(prefix, count, hidden_size, in_names, out_names):
    """Convert the symbol files at prefix with MXNet's exporter at OPSET into prefix.onnx, named as given; the
    symbol files are removed. export_model takes no opset, hence its converter directly."""
    import onnx
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    sym, args, aux = mx.model.load_checkpoint(str(prefix), 0)
    shapes = [(1,)] + [(1, hidden_size)] * (count - 1)
    with contextlib.redirect_stdout(io.StringIO()):  # its `1 - x` converter prints the node's name
        graph = MXNetGraph().create_onnx_graph_proto(
            sym, {**args, **aux}, shapes, [onnx.TensorProto.FLOAT] * count, opset_version=OPSET, dynamic=True,
            dynamic_input_shapes=[(None,)] + [(None, hidden_size)] * (count - 1))
    _rename(graph, _mxnet_inputs(count), in_names, sym.list_outputs(), out_names)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION, producer_name="charlm", producer_version=__version__)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, f"{prefix}.onnx")
    for name in (f"{prefix}-symbol.json", f"{prefix}-0000.params"):
        Path(name).unlink()


def _rename(graph, old_in, new_in, old_out, new_out):
    """Give the graph's inputs and outputs charlm's names and the symbol's output order (the converter lists
    outputs in node order), and keep the weights out of its inputs (constants a runtime may fold)."""
    import onnx

    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    rename = dict(zip(old_in, new_in))
    for i in inputs:
        i.name = rename[i.name]
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
    del graph.input[:]
    graph.input.extend(inputs)
    by_name = {o.name: o for o in graph.output}
    outputs = []
    for old, new in zip(old_out, new_out):
        source = by_name[old.removesuffix("_output")]  # the symbol's output name is its node's and "_output"
        graph.node.append(onnx.helper.make_node("Identity", [source.name], [new]))
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(source)
        copy.name = new
        outputs.append(copy)
    del graph.output[:]
    graph.output.extend(outputs)
