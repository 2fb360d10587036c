// The "look inside" view shared by `charlm viz`'s report and the web export: a text coloured by surprisal or by
// one unit, the top guesses at each position, and the search for a unit that follows a pattern.
"use strict";

var charlmView = (function () {
  var GATES = { i: 1, f: 1, o: 1, r: 1, z: 1 }; // in [0, 1]: shown centred on 0.5
  var KIND_NAMES = { h: "hidden state h", c: "cell state (tanh c)", i: "input gate", f: "forget gate",
                     o: "output gate", r: "reset gate", z: "update gate" };

  function surprisalColour(bits, scale) {
    var t = Math.min(1, Math.max(0, bits / scale));
    return "rgb(255, " + Math.round(255 - 155 * t) + ", " + Math.round(255 - 255 * t) + ")";
  }

  function divergingColour(v) { // v in [-1, 1]: blue, white, red
    var t = Math.min(1, Math.abs(v)), c = Math.round(255 * (1 - t));
    return v >= 0 ? "rgb(255, " + c + ", " + c + ")" : "rgb(" + c + ", " + c + ", 255)";
  }

  function centred(kind, v) { return GATES[kind] ? 2 * v - 1 : v; }

  function shown(token) { return token === "\n" ? "\u21b5\n" : token; }

  function label(token) { return JSON.stringify(token); }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The pattern as a regular expression, or its characters taken literally when asked or when it is not one
  // (as "(" is): charlm.trace.compile_pattern's rule.
  function compilePattern(pattern, literal) {
    if (!literal) {
      try { return new RegExp(pattern, "g"); } catch (e) { /* not a regular expression: plain characters */ }
    }
    return new RegExp(pattern.replace(/[.*+?^${}()|[\]\\\/-]/g, "\\$&"), "g");
  }

  // Whether each token lies (in part) in a match of the pattern, in the joined text.
  function inside(tokens, pattern, literal) {
    var text = tokens.join(""), re = compilePattern(pattern, literal), m;
    var units = Array.from(text), offsets = [], at = 0; // code points, as Python's str indexes
    units.forEach(function (ch) { offsets.push(at); at += ch.length; });
    var point = new Map(); offsets.forEach(function (o, i) { point.set(o, i); }); point.set(at, units.length);
    var marks = new Uint8Array(units.length + 1);
    while ((m = re.exec(text)) !== null) {
      if (m[0].length === 0) { re.lastIndex += 1; continue; }
      for (var p = point.get(m.index); p < point.get(m.index + m[0].length); p++) marks[p] = 1;
    }
    var out = new Float64Array(tokens.length), start = 0;
    tokens.forEach(function (tok, t) {
      var n = Array.from(tok).length;
      for (var p = start; p < start + n; p++) if (marks[p]) { out[t] = 1; break; }
      start += n;
    });
    return out;
  }

  // Pearson correlation of each unit of each group with target; the top `top` by |r|, ties in unit order.
  function findUnits(data, target, top) {
    var T = target.length, mean = 0, t2 = 0, scores = [];
    for (var t = 0; t < T; t++) mean += target[t];
    mean /= T;
    for (t = 0; t < T; t++) t2 += (target[t] - mean) * (target[t] - mean);
    data.units.forEach(function (u, g) {
      var a = data.acts[g], H = u.size;
      for (var j = 0; j < H; j++) {
        var am = 0, aa = 0, at = 0;
        for (t = 0; t < T; t++) am += a[t * H + j];
        am /= T;
        for (t = 0; t < T; t++) {
          var d = a[t * H + j] - am;
          aa += d * d; at += d * (target[t] - mean);
        }
        var denom = Math.sqrt(aa * t2);
        scores.push({ group: g, unit: j, r: denom > 0 ? at / denom : 0, order: scores.length });
      }
    });
    scores.sort(function (x, y) { return Math.abs(y.r) - Math.abs(x.r) || x.order - y.order; });
    return scores.slice(0, top);
  }

  function render(root, data) {
    root.textContent = "";
    var T = data.tokens.length;
    var stats = el("p", { "class": "stats" });
    stats.append(el("span", { id: "token-count" }, String(data.count)), " tokens scored \u00b7 ",
                 el("span", { id: "mean-bits" }, data.meanBits.toFixed(3)), " bits per token \u00b7 perplexity ",
                 el("span", { id: "perplexity" }, data.perplexity.toFixed(3)));
    root.append(stats);
    if (data.note) root.append(el("p", { id: "cap-note", "class": "note" }, data.note));

    var controls = el("div", { "class": "controls" });
    var by = el("select", { id: "colour-by", "aria-label": "colour the text by" });
    by.append(el("option", { value: "surprisal" }, "surprisal (bits)"));
    data.units.forEach(function (u, g) {
      by.append(el("option", { value: String(g) }, "layer " + u.layer + " \u00b7 " + KIND_NAMES[u.kind]));
    });
    var unit = el("input", { id: "unit", type: "number", min: "0", value: "0", "aria-label": "unit" });
    controls.append(el("label", {}, "Colour by "), by, el("label", {}, " unit "), unit);
    var legend = el("div", { id: "legend", "class": "legend" });
    controls.append(legend);
    root.append(controls);

    var find = el("div", { "class": "find" });
    var pattern = el("input", { id: "pattern", type: "text", placeholder: "a pattern, e.g. \" or \\n or [aeiou]",
                                "aria-label": "pattern" });
    var literal = el("input", { id: "literal", type: "checkbox" });
    var plain = el("label", { title: "find these characters, not a regular expression" }, " plain text ");
    plain.prepend(literal);
    var go = el("button", { id: "find", type: "button" }, "Find a unit");
    var error = el("span", { id: "find-error", "class": "error" });
    var found = el("ol", { id: "found" });
    find.append(pattern, plain, go, error, found);
    root.append(find);

    var panel = el("aside", { id: "panel", "aria-live": "polite" }, "Hover over, click or tab to a token to see " +
                   "the model's guesses for it.");
    var text = el("div", { id: "text", "class": "text" });
    var spans = data.tokens.map(function (tok, i) {
      var s = el("span", { "class": "tok", tabindex: "0", "data-i": String(i) }, shown(tok));
      text.append(s);
      return s;
    });
    root.append(text, panel);

    function explain(i) {
      panel.textContent = "";
      var head = el("p", {}, "position " + i + ": " + label(data.tokens[i]));
      panel.append(head);
      if (!data.top[i]) { panel.append(el("p", {}, "the first token: nothing before it to predict from")); return; }
      head.append(" \u2014 p " + Math.pow(2, -data.bits[i]).toFixed(3) + ", " + data.bits[i].toFixed(2) + " bits");
      var table = el("table", { id: "top5" });
      table.append(el("caption", {}, "the model's top " + data.top[i].length + " guesses here"));
      data.top[i].forEach(function (g) {
        var row = el("tr", { "class": "guess", "data-token": g[0] });
        row.append(el("td", { "class": "g-tok" }, label(g[0])), el("td", { "class": "g-prob" }, g[1].toFixed(3)));
        table.append(row);
      });
      panel.append(table);
    }

    text.addEventListener("mouseover", function (e) { if (e.target.dataset.i) explain(+e.target.dataset.i); });
    text.addEventListener("focusin", function (e) {
      if (!e.target.dataset.i) return;
      spans.forEach(function (s) { s.classList.remove("chosen"); });
      e.target.classList.add("chosen");
      explain(+e.target.dataset.i);
    });

    function legendBar(stops, labels) {
      legend.textContent = "";
      var bar = el("span", { "class": "bar" });
      bar.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
      legend.append(el("span", {}, labels[0]), bar, el("span", {}, labels[1]));
      if (labels[2]) legend.append(el("span", { "class": "note" }, " " + labels[2]));
    }

    function colour() {
      if (by.value === "surprisal") {
        spans.forEach(function (s, i) {
          s.style.backgroundColor = i === 0 ? "" : surprisalColour(data.bits[i], data.scale);
          s.title = i === 0 ? "" : data.bits[i].toFixed(2) + " bits";
        });
        legendBar([surprisalColour(0, 1), surprisalColour(1, 1)], ["0 bits", data.scale + "+ bits",
                  "(white: expected, orange: surprising)"]);
        return;
      }
      var g = +by.value, u = data.units[g], j = Math.min(Math.max(0, +unit.value || 0), u.size - 1);
      unit.max = String(u.size - 1);
      unit.value = String(j);
      var a = data.acts[g];
      spans.forEach(function (s, t) {
        var v = a[t * u.size + j];
        s.style.backgroundColor = divergingColour(centred(u.kind, v));
        s.title = v.toFixed(3);
      });
      var ends = GATES[u.kind] ? ["0", "1"] : ["\u22121", "+1"];
      legendBar([divergingColour(-1), divergingColour(0), divergingColour(1)], ends,
                "layer " + u.layer + " " + KIND_NAMES[u.kind] + ", unit " + j);
    }

    function show(g, j) { by.value = String(g); unit.value = String(j); colour(); }

    by.addEventListener("change", colour);
    unit.addEventListener("input", colour);
    function search() {
      error.textContent = "";
      found.textContent = "";
      var target = inside(data.tokens, pattern.value, literal.checked);
      var hits = target.reduce(function (a, b) { return a + b; }, 0);
      if (hits === 0 || hits === T) {
        error.textContent = "the pattern matches " + (hits ? "every" : "no") + " token: nothing to correlate";
        return;
      }
      findUnits(data, target, 10).forEach(function (s) {
        var u = data.units[s.group], li = el("li", {});
        var b = el("button", { type: "button", "class": "unit-link", "data-name": "l" + u.layer + "." + u.kind,
                                "data-unit": String(s.unit) }, "layer " + u.layer + " " + u.kind + " #" + s.unit);
        b.addEventListener("click", function () { show(s.group, s.unit); });
        li.append(b, " ", el("span", { "class": "score" }, s.r.toFixed(3)));
        found.append(li);
      });
    }
    go.addEventListener("click", search);
    pattern.addEventListener("keydown", function (e) { if (e.key === "Enter") search(); });
    colour();
  }

  function decodeBytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  return { render: render, decodeBytes: decodeBytes };
})();
