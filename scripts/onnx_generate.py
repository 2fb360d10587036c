"""Continue a prefix with a model `charlm export --format onnx` wrote, in onnxruntime alone (numpy and
onnxruntime; no MXNet, no charlm), printing the text as `charlm generate` does:

    python scripts/onnx_generate.py EXPORT_DIR "the time " --length 200            # greedy
    python scripts/onnx_generate.py EXPORT_DIR "the time " --temperature 0.8 --seed 1

Sampling draws from numpy's generator: the same seed gives the same text here, not charlm's.
"""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


class ExportError(Exception):
    """A bad export directory or prefix, stated in one line."""


def load(export_dir):
    """(session, manifest, vocabulary tokens) of an export directory."""
    export_dir = Path(export_dir)
    try:
        manifest = json.loads((export_dir / "charlm-export.json").read_text(encoding="utf-8"))
        tokens = json.loads((export_dir / manifest["vocabulary"]).read_text(encoding="utf-8"))["chars"]
        model = export_dir / manifest["files"]["model"]
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{export_dir} is not an ONNX export of charlm ({e})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on graph optimisations
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]), manifest, tokens


def encode(prefix, manifest, tokens):
    """The prefix's ids as charlm reads a prefix: normalised as the training text was, after the line-start
    token in lines mode."""
    norm = manifest["normalise"]
    if norm["lowercase"]:
        prefix = prefix.lower()
    if norm["strip_newlines"]:
        prefix = prefix.replace("\n", "")
    if norm["letters_only"]:
        prefix = re.sub("[^A-Za-z]+", " ", prefix)
    index = {c: i for i, c in enumerate(tokens)}
    unknown = sorted(set(prefix) - set(index))
    if unknown:
        raise ExportError(f"prefix characters not in the model's vocabulary: {''.join(unknown)!r}")
    if not prefix:
        raise ExportError("the prefix is empty: give at least one character to continue")
    start = [manifest["line_start_id"]] if manifest["mode"] == "lines" else []
    return start + [index[c] for c in prefix]


class Stepper:
    """One step at a time through the exported graph, its states carried from step to step (batch of one)."""

    def __init__(self, session, manifest):
        self.session = session
        self.inputs = [i["name"] for i in manifest["inputs"]]
        self.outputs = [o["name"] for o in manifest["outputs"]]
        self.states = [np.zeros((1, i["shape"][1]), np.float32) for i in manifest["inputs"][1:]]

    def __call__(self, token):
        """The logits (V,) after feeding token."""
        feed = dict(zip(self.inputs, [np.array([token], np.float32), *self.states]))
        logits, *self.states = self.session.run(self.outputs, feed)
        return logits[0]


def generate(session, manifest, ids, length, temperature=None, seed=None):
    """`length` ids after the prefix ids: the argmax at each step, or drawn from the tempered softmax."""
    step, rng = Stepper(session, manifest), np.random.default_rng(seed)
    for token in ids:
        logits = step(token)
    out = []
    for i in range(length):
        if temperature is None:
            out.append(int(np.argmax(logits)))
        else:
            z = logits.astype(np.float64) / temperature
            p = np.exp(z - z.max())
            out.append(int(rng.choice(len(p), p=p / p.sum())))
        if i + 1 < length:
            logits = step(out[-1])
    return out


def decode(ids, tokens, manifest):
    """Ids as text, without line-start tokens (as charlm's vocabulary decodes)."""
    start = manifest["line_start_id"]
    return "".join(tokens[i] for i in ids if i != start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", help="directory charlm export --format onnx wrote")
    parser.add_argument("prefix", help="text to continue")
    parser.add_argument("--length", type=int, default=100, help="characters to generate (default: 100)")
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature "
                        "(default: greedy argmax)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    args = parser.parse_args(argv)
    try:
        if args.length < 1:
            raise ExportError(f"--length must be at least 1, got {args.length}")
        if args.temperature is not None and not args.temperature > 0:
            raise ExportError(f"--temperature must be positive, got {args.temperature}")
        session, manifest, tokens = load(args.export_dir)
        ids = encode(args.prefix, manifest, tokens)
    except ExportError as e:
        sys.exit(f"Error: {e}")
    print(decode(ids + generate(session, manifest, ids, args.length, args.temperature, args.seed), tokens, manifest))


if __name__ == "__main__":
    main()
