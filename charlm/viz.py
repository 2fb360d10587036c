"""`charlm viz`: one self-contained HTML report of a run's model reading a text (surprisal, top guesses, every
unit's activations, the unit search), with the run's config, learning curves and samples."""
import base64
import html
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CharlmError
from .run import epoch_records, write_text
from .text import check_file, decoded_chunks
from .trace import MAX_TOKENS

SAMPLE_LENGTH = 200
# What JSON inside a <script> must not hold literally: "<!--" and "<script" switch the HTML parser into its
# escaped modes, "</script" ends the element; U+2028/U+2029 end a line in older JavaScript.
SCRIPT_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}
CURVE_W, CURVE_H, MARGIN = 520, 220, 44


def asset(name):
    """The text of one of charlm's page assets."""
    return resources.files("charlm").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(value):
    """JSON safe inside an HTML <script> element (and as JavaScript): <, >, &, U+2028, U+2029 as \\u escapes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(SCRIPT_ESCAPES)


def quantize(a):
    """Activations in [-1, 1] as bytes of uint8, 1/127.5 apart: a quarter of float32's size on the page."""
    return np.clip(np.round((a.astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8).tobytes()


def read_text(path, data_cfg, max_tokens):
    """The text of a file in the run's encoding, read only as far as max_tokens tokens can reach."""
    limit = max_tokens * 64  # characters: ample for max_tokens words
    pieces, size = [], 0
    hint = f"viz reads text as the run was trained (data.encoding {data_cfg.encoding}, data.errors {data_cfg.errors})"
    for chunk in decoded_chunks(check_file(Path(path)), data_cfg.encoding, data_cfg.errors, hint):
        pieces.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return "".join(pieces)[:limit]


def view_data(tr, vocab, max_tokens):
    """What the page's view renders: tokens, bits, top guesses, scores and the activations (base64 uint8)."""
    bits = tr.surprisal
    scored = bits[1:]
    top = [None] + [[[vocab.tokens[int(i)], float(math.exp(lp))] for i, lp in zip(ids, lps)]
                    for ids, lps in zip(tr.top_ids[1:], tr.top_logprob[1:])]
    notes = []
    if tr.capped:
        notes.append(f"The text is cut after its first {len(tr.ids):,} tokens (--max-tokens {max_tokens}).")
    if tr.skipped:
        notes.append(f"Characters outside the vocabulary were dropped: {tr.skipped!r}.")
    units = [{"layer": layer, "kind": kind, "size": size,
              "q": base64.b64encode(quantize(tr.activations[f"l{layer}.{kind}"])).decode("ascii")}
             for layer, kind, size in tr.units()]
    return {"tokens": tr.tokens, "bits": [None] + [round(float(b), 5) for b in scored], "top": top,
            "count": tr.count, "meanBits": tr.mean_bits, "perplexity": tr.perplexity,
            "scale": max(1, math.ceil(float(np.percentile(scored, 98)))), "units": units, "note": " ".join(notes)}


def curves_svg(records):
    """The learning curves (train and validation loss per epoch) as an inline SVG, or "" without records."""
    series = {name: [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
              for name, key in (("train", "train_loss"), ("validation", "val_loss"))}
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def xy(e, loss):
        return (MARGIN + (e - x0) / (x1 - x0) * (CURVE_W - MARGIN - 10),
                CURVE_H - MARGIN + 10 - (loss - y0) / (y1 - y0) * (CURVE_H - MARGIN))

    parts = [f'<svg id="curves" width="{CURVE_W}" height="{CURVE_H}" viewBox="0 0 {CURVE_W} {CURVE_H}" '
             f'role="img" aria-label="learning curves">',
             f'<line x1="{MARGIN}" y1="{CURVE_H - MARGIN + 10}" x2="{CURVE_W - 10}" y2="{CURVE_H - MARGIN + 10}" '
             f'stroke="#888"/><line x1="{MARGIN}" y1="10" x2="{MARGIN}" y2="{CURVE_H - MARGIN + 10}" stroke="#888"/>',
             f'<text x="{MARGIN}" y="{CURVE_H - 14}">epoch {x0}</text>',
             f'<text x="{CURVE_W - 10}" y="{CURVE_H - 14}" text-anchor="end">epoch {x1}</text>',
             f'<text x="{MARGIN - 4}" y="14" text-anchor="end">{y1:.2f}</text>',
             f'<text x="{MARGIN - 4}" y="{CURVE_H - MARGIN + 10}" text-anchor="end">{y0:.2f}</text>',
             f'<text x="{CURVE_W / 2}" y="{CURVE_H - 2}" text-anchor="middle">loss (nats per token)</text>']
    for (name, s), colour, row in zip(series.items(), ("#1f77b4", "#d62728"), (0, 1)):
        if s:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in s))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
            parts.append(f'<text x="{CURVE_W - 14}" y="{24 + 14 * row}" text-anchor="end" fill="{colour}">'
                         f'{name}</text>')
    return "".join(parts) + "</svg>"


def config_table(cfg, state):
    """The run at a glance: the settings that shape the model and its training, as an HTML table."""
    rows = [("level", cfg.data.level), ("mode", cfg.data.mode), ("lowercase", cfg.data.lowercase),
            *[(k, getattr(cfg.model, k)) for k in ("cell", "hidden_size", "embed_size", "num_layers", "dropout",
                                                   "tie_weights")],
            ("seq_len", cfg.data.seq_len), ("batch_size", cfg.data.batch_size), ("lr", cfg.train.lr),
            ("epochs trained", state.get("epoch")), ("status", state.get("status", "training"))]
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="config" id="config">{cells}</table>'


def samples(lm, ids, count=3):
    """A greedy continuation and count - 1 sampled ones (temperature 0.8) of the text's first tokens."""
    prefix = "" if lm.config.data.mode == "lines" else lm.vocab.decode(ids[:10 if lm.vocab.level == "char" else 3])
    return [lm.generate(prefix, SAMPLE_LENGTH, temperature=None if k == 0 else 0.8, seed=k) for k in range(count)]


def report(lm, text, max_tokens=MAX_TOKENS, skip_unknown=False):
    """The report page of lm reading text, as one HTML string."""
    if not text.strip():
        raise CharlmError("the text is empty: give --text TEXT or a --data FILE with some text in it")
    tr = lm.trace(text, max_tokens=max_tokens, skip_unknown=skip_unknown)
    name = html.escape(lm.run.path.name)
    sample_html = "".join(f'<pre class="sample">{html.escape(s)}</pre>' for s in samples(lm, tr.ids))
    curves = curves_svg(epoch_records(lm.run.metrics())) or "<p>No epoch has been scored yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>charlm viz: {name}</title>
<style>{asset("style.css")}</style></head>
<body>
<h1>What {name} sees in the text</h1>
<p class="note">Each token is coloured by the model's surprisal at it (bits: \u2212log\u2082 p, read as one stream
from the start). Choose a layer and a unit to colour by its activation, or find the units that follow a pattern.</p>
<div id="view"></div>
<h2>The run</h2>
{config_table(lm.config, lm.run.read_state())}
<h2>Learning curves</h2>
{curves}
<h2>Samples</h2>
<p class="note">Greedy, then two at temperature 0.8, of {SAMPLE_LENGTH} tokens each.</p>
{sample_html}
<script type="application/json" id="data">{script_json(view_data(tr, lm.vocab, max_tokens))}</script>
<script>{asset("view.js")}</script>
<script>
"use strict";
var DATA = JSON.parse(document.getElementById("data").textContent);
DATA.acts = DATA.units.map(function (u) {{
  var q = charlmView.decodeBytes(u.q), a = new Float32Array(q.length);
  for (var i = 0; i < q.length; i++) a[i] = q[i] / 127.5 - 1;
  return a;
}});
charlmView.render(document.getElementById("view"), DATA);
</script>
</body></html>
"""


def write_report(lm, out, text=None, max_tokens=MAX_TOKENS, skip_unknown=False, path=None):
    """Write the report of text, or of the file at path, to out (atomically: a failure leaves nothing behind);
    return its Path."""
    if (path is None) == (text is None):
        raise CharlmError("give the text to read: --data FILE or --text TEXT (one of them)")
    if path is not None:
        text = read_text(path, lm.config.data, max_tokens)
    page = report(lm, text, max_tokens, skip_unknown)
    write_text(out, page)
    return Path(out)
