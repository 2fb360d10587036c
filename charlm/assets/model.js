// A charlm model in the browser: charlm.trace's arithmetic (float32 weights, float64 sums), the vocabulary's
// encoding and decoding, and greedy or sampled continuation as `charlm generate` makes it.
"use strict";

var charlmModel = (function () {
  var KINDS = { rnn: ["h"], lstm: ["h", "c", "i", "f", "o"], gru: ["h", "r", "z"] };
  var GATES = { rnn: 1, lstm: 4, gru: 3 };
  var BOS_CHAR = "\u0002", UNK = "<unk>", WORD_EOS = "<eos>", WORD_BOS = "<bos>";

  function floats(b64) {
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  // The q-quantile of values, interpolating between the two nearest, as numpy.percentile does (the report's scale).
  function percentile(values, q) {
    var s = values.slice().sort(function (a, b) { return a - b; }), at = q * (s.length - 1), lo = Math.floor(at);
    return lo + 1 < s.length ? s[lo] + (s[lo + 1] - s[lo]) * (at - lo) : s[lo];
  }

  function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

  // out += x · W, W (n, m) row-major
  function addProduct(out, x, W, n, m) {
    for (var i = 0; i < n; i++) {
      var xi = x[i];
      if (xi === 0) continue;
      for (var j = 0, row = i * m; j < m; j++) out[j] += xi * W[row + j];
    }
  }

  function Model(m) {
    this.m = m;
    this.cell = m.cell;
    this.H = m.hidden_size;
    this.V = m.tokens.length;
    this.embedding = m.embedding ? floats(m.embedding) : null;
    this.layers = m.layers.map(function (l) {
      return { n: l.input_size, wx: floats(l.wx), bx: floats(l.bx), wh: floats(l.wh), bh: floats(l.bh) };
    });
    this.wy = floats(m.wy);
    this.by = floats(m.by);
    this.index = new Map(m.tokens.map(function (t, i) { return [t, i]; }));
    var self = this;
    this.units = [];
    this.layers.forEach(function (l, n) {
      KINDS[self.cell].forEach(function (kind) { self.units.push({ layer: n, kind: kind, size: self.H }); });
    });
  }

  Model.prototype.start = function () {
    var H = this.H;
    return this.layers.map(function () { return { h: new Float64Array(H), c: new Float64Array(H) }; });
  };

  // Read token id: the logits (V) after it and the activations of every unit group, in `units` order.
  Model.prototype.step = function (state, id) {
    var H = this.H, G = GATES[this.cell] * H, acts = [], x = null, cell = this.cell, E = this.m.embed_size;
    for (var n = 0; n < this.layers.length; n++) {
      var L = this.layers[n], z = Float64Array.from(L.bx), hz = Float64Array.from(L.bh), s = state[n];
      if (n === 0 && !this.embedding) {
        for (var j = 0; j < G; j++) z[j] += L.wx[id * G + j]; // one-hot input: a row of wx
      } else {
        addProduct(z, n === 0 ? this.embedding.subarray(id * E, (id + 1) * E) : x, L.wx, L.n, G);
      }
      addProduct(hz, s.h, L.wh, H, G);
      var h = new Float64Array(H);
      if (cell === "rnn") {
        for (j = 0; j < H; j++) h[j] = Math.tanh(z[j] + hz[j]);
        acts.push(h);
      } else if (cell === "lstm") {
        var tc = new Float64Array(H), ig = new Float64Array(H), fg = new Float64Array(H), og = new Float64Array(H);
        for (j = 0; j < H; j++) {
          ig[j] = sigmoid(z[j] + hz[j]);
          fg[j] = sigmoid(z[H + j] + hz[H + j]);
          og[j] = sigmoid(z[3 * H + j] + hz[3 * H + j]);
          s.c[j] = fg[j] * s.c[j] + ig[j] * Math.tanh(z[2 * H + j] + hz[2 * H + j]);
          tc[j] = Math.tanh(s.c[j]);
          h[j] = og[j] * tc[j];
        }
        acts.push(h, tc, ig, fg, og);
      } else {
        var r = new Float64Array(H), u = new Float64Array(H);
        for (j = 0; j < H; j++) {
          r[j] = sigmoid(z[j] + hz[j]);
          u[j] = sigmoid(z[H + j] + hz[H + j]);
          h[j] = (1 - u[j]) * Math.tanh(z[2 * H + j] + r[j] * hz[2 * H + j]) + u[j] * s.h[j];
        }
        acts.push(h, r, u);
      }
      s.h = h;
      x = h;
    }
    var logits = Float64Array.from(this.by);
    addProduct(logits, x, this.wy, H, this.V);
    return { logits: logits, acts: acts };
  };

  Model.prototype.normalise = function (text) {
    var d = this.m.normalise;
    text = text.replace(/\r\n/g, "\n");
    if (d.lowercase) text = text.toLowerCase();
    if (d.strip_newlines) text = text.replace(/\n/g, "");
    return d.letters_only ? text.replace(/[^A-Za-z]+/g, " ") : text;
  };

  // {ids, unknown}: the normalised text's ids (after the line-start token in lines mode), and at character level
  // the characters outside the vocabulary, sorted (words outside it read as <unk>).
  Model.prototype.encode = function (text) {
    var self = this, ids = [], unknown = new Set();
    text = this.normalise(text);
    if (this.m.level === "word") {
      text.split("\n").forEach(function (line, i) {
        if (i > 0) ids.push(self.index.get(WORD_EOS));
        line.split(/\s+/).filter(Boolean).forEach(function (w) {
          ids.push(self.index.has(w) ? self.index.get(w) : self.index.get(UNK));
        });
      });
    } else {
      Array.from(text).forEach(function (ch) {
        if (self.index.has(ch)) ids.push(self.index.get(ch)); else unknown.add(ch);
      });
    }
    if (this.m.mode === "lines") ids.unshift(this.m.line_start_id);
    return { ids: ids, unknown: Array.from(unknown).sort() };
  };

  // A decoder that gives each token's text as it reads after the tokens before it.
  Model.prototype.decoder = function () {
    var tokens = this.m.tokens, word = this.m.level === "word", last = "";
    return function (id) {
      var t = tokens[id];
      if (!word) return t === BOS_CHAR ? "" : t;
      if (t === WORD_BOS) return "";
      var piece = t === WORD_EOS ? "\n" : (last === "" || last === "\n" ? t : " " + t);
      last = piece;
      return piece;
    };
  };

  function argmax(a) {
    var best = 0;
    for (var i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
    return best;
  }

  function mulberry32(seed) {
    return function () {
      seed = (seed + 0x6D2B79F5) | 0;
      var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // The sampling distribution, as charlm.generate.probabilities: the top_k, a tempered softmax, the nucleus.
  function probabilities(logits, temperature, topK, topP) {
    var V = logits.length, l = Float64Array.from(logits), i;
    if (topK) {
      var kth = Array.from(l).sort(function (a, b) { return b - a; })[topK - 1];
      for (i = 0; i < V; i++) if (l[i] < kth) l[i] = -1e30;
    }
    var t = temperature || 1, max = -Infinity, sum = 0, p = new Float64Array(V);
    for (i = 0; i < V; i++) max = Math.max(max, l[i] / t);
    for (i = 0; i < V; i++) { p[i] = Math.exp(l[i] / t - max); sum += p[i]; }
    for (i = 0; i < V; i++) p[i] /= sum;
    if (!topP || topP >= 1) return p;
    var order = Array.from(p.keys()).sort(function (a, b) { return p[b] - p[a] || a - b; }), mass = 0, kept = 0;
    var q = new Float64Array(V);
    for (i = 0; i < V && mass < topP; i++) { q[order[i]] = p[order[i]]; mass += p[order[i]]; kept += q[order[i]]; }
    for (i = 0; i < V; i++) q[i] /= kept;
    return q;
  }

  function draw(p, random) {
    var u = random(), acc = 0;
    for (var i = 0; i < p.length; i++) { acc += p[i]; if (u < acc) return i; }
    return p.length - 1;
  }

  // Continue ids by `length` tokens; onPiece(text) gets each token's text, onDone() the end. Runs in slices of
  // a few tokens so the page shows the text as it is made.
  Model.prototype.generate = function (ids, options, onPiece, onDone) {
    var self = this, state = this.start(), out = null, decode = this.decoder();
    ids.forEach(function (id) { onPiece(decode(id)); out = self.step(state, id); });
    var greedy = options.temperature == null && options.topK == null && options.topP == null;
    var random = mulberry32(options.seed == null ? Math.floor(Math.random() * 4294967296) : options.seed);
    var made = 0, lines = this.m.mode === "lines";
    function slice() {
      for (var n = 0; n < 8 && made < options.length; n++, made++) {
        var id = greedy ? argmax(out.logits)
          : draw(probabilities(out.logits, options.temperature, options.topK, options.topP), random);
        var piece = decode(id);
        if (lines && piece.indexOf("\n") >= 0) { made = options.length; break; } // a line's end ends it
        onPiece(piece);
        if (made + 1 < options.length) out = self.step(state, id);
      }
      if (made < options.length) setTimeout(slice, 0); else onDone();
    }
    slice();
  };

  // What charlmView renders for ids read as one stream: tokens, bits, top guesses, scores, activations.
  Model.prototype.trace = function (ids, topK) {
    var self = this, state = this.start(), T = ids.length, decode = this.decoder();
    var acts = this.units.map(function (u) { return new Float32Array(T * u.size); });
    var bits = [null], top = [null], tokens = [], prev = null, nll = 0;
    ids.forEach(function (id, t) {
      tokens.push(decode(id));
      if (prev) {
        var l = prev.logits, max = -Infinity, sum = 0, i;
        for (i = 0; i < l.length; i++) max = Math.max(max, l[i]);
        for (i = 0; i < l.length; i++) sum += Math.exp(l[i] - max);
        var logZ = max + Math.log(sum), lp = l[id] - logZ;
        bits.push(-lp / Math.LN2);
        nll -= lp;
        var order = Array.from(l.keys()).sort(function (a, b) { return l[b] - l[a] || a - b; }).slice(0, topK);
        top.push(order.map(function (k) { return [self.m.tokens[k], Math.exp(l[k] - logZ)]; }));
      }
      prev = self.step(state, id);
      prev.acts.forEach(function (a, g) { acts[g].set(a, t * self.H); });
    });
    return { tokens: tokens, bits: bits, top: top, count: T - 1, meanBits: nll / (T - 1) / Math.LN2,
             perplexity: Math.exp(nll / (T - 1)), units: this.units, acts: acts, note: "",
             scale: Math.max(1, Math.ceil(percentile(bits.slice(1), 0.98))) };
  };

  return { Model: Model };
})();
