"""`charlm export --format web`: a directory whose index.html runs a run's model in the browser from file://
(generation and the "look inside" view), its weights embedded as base64 float32 in weights.js."""
import base64
import html

import numpy as np

from .text import lowercases
from .trace import MAX_TOKENS, weights
from .viz import asset, script_json

INDEX, WEIGHTS = "index.html", "weights.js"


def _b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def manifest(model, vocab, cfg, name):
    """The model as the page's script reads it: its weights (base64 float32) and how text becomes ids."""
    w, d = weights(model), cfg.data
    layers = [{"input_size": int(layer["wx"].shape[0]), **{k: _b64(layer[k]) for k in ("wx", "bx", "wh", "bh")}}
              for layer in w["layers"]]
    return {"name": name, "cell": w["cell"], "level": vocab.level, "mode": d.mode, "tokens": vocab.tokens,
            "line_start_id": vocab.bos if d.mode == "lines" else None,
            "normalise": {"lowercase": lowercases(d), "strip_newlines": d.strip_newlines,
                          "letters_only": d.letters_only},
            "hidden_size": int(w["wy"].shape[0]), "embed_size": 0 if w["embedding"] is None else
            int(w["embedding"].shape[1]), "embedding": None if w["embedding"] is None else _b64(w["embedding"]),
            "layers": layers, "wy": _b64(w["wy"]), "by": _b64(w["by"])}


def page(name):
    """index.html: the generation form, the output, the look-inside view and their script."""
    name = html.escape(name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>charlm: {name}</title>
<style>{asset("style.css")}</style></head>
<body>
<h1>{name}, running in your browser</h1>
<p class="note">A charlm model; nothing leaves this page. Leave the temperature, top-k and top-p empty for greedy
text (what <code>charlm generate</code> prints).</p>
<form id="form">
<p><label>Prefix<br><textarea id="prefix" rows="3" cols="70"></textarea></label></p>
<p><label>Length <input id="length" type="number" min="1" value="200"></label>
<label>Temperature <input id="temperature" type="number" step="any" min="0" placeholder="greedy"></label>
<label>Top-k <input id="top_k" type="number" min="1"></label>
<label>Top-p <input id="top_p" type="number" step="any" min="0" max="1"></label>
<label>Seed <input id="seed" type="number"></label>
<button id="generate" type="submit">Generate</button></p>
</form>
<p id="error" class="error" role="alert"></p>
<div id="output" aria-live="polite"></div>
<h2>Look inside</h2>
<p class="note">Type a text to see how surprised the model is at each token, its guesses, and its units (the
first {MAX_TOKENS:,} tokens).</p>
<p><textarea id="inside-text" rows="4" cols="70"></textarea><br>
<button id="inspect" type="button">Look inside</button> <span id="inside-error" class="error"></span></p>
<div id="view" data-max-tokens="{MAX_TOKENS}"></div>
<script src="{WEIGHTS}"></script>
<script>{asset("view.js")}</script>
<script>{asset("model.js")}</script>
<script>{asset("app.js")}</script>
</body></html>
"""


def write(model, vocab, cfg, out, name):
    """Write index.html and weights.js of a built model into the existing directory out; {role: file name}."""
    (out / WEIGHTS).write_text(f"var CHARLM_MODEL = {script_json(manifest(model, vocab, cfg, name))};\n",
                               encoding="utf-8")
    (out / INDEX).write_text(page(name), encoding="utf-8")
    return {"page": INDEX, "weights": WEIGHTS}
