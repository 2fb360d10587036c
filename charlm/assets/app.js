// The web export's page: the form, query parameters that generate at once, and the look-inside view.
"use strict";

(function () {
  var model = new charlmModel.Model(CHARLM_MODEL), $ = function (id) { return document.getElementById(id); };
  var FIELDS = ["prefix", "length", "temperature", "top_k", "top_p", "seed"];

  function number(id, test, what) {
    var raw = $(id).value.trim();
    if (raw === "") return null;
    var v = Number(raw);
    if (!isFinite(v) || !test(v)) throw new Error(id.replace("_", "-") + " must be " + what + ", got " + raw);
    return v;
  }

  function options() {
    var V = model.V;
    return {
      length: number("length", function (v) { return Number.isInteger(v) && v >= 1; }, "a whole number \u2265 1") || 200,
      temperature: number("temperature", function (v) { return v > 0; }, "positive"),
      topK: number("top_k", function (v) { return Number.isInteger(v) && v >= 1 && v <= V; },
                   "a whole number from 1 to the vocabulary size " + V),
      topP: number("top_p", function (v) { return v > 0 && v <= 1; }, "in (0, 1]"),
      seed: number("seed", Number.isInteger, "a whole number")
    };
  }

  function encode(text, what) {
    var enc = model.encode(text);
    if (enc.unknown.length) throw new Error(what + " characters not in the model's vocabulary: " +
                                            JSON.stringify(enc.unknown.join("")));
    return enc.ids;
  }

  function generate() {
    var out = $("output"), button = $("generate");
    $("error").textContent = "";
    out.textContent = "";
    delete out.dataset.done;
    try {
      var opts = options(), ids = encode($("prefix").value, "prefix");
      if (!ids.length) throw new Error("the prefix is empty: give at least one " +
                                       (CHARLM_MODEL.level === "word" ? "word" : "character") + " to continue");
    } catch (e) {
      $("error").textContent = e.message;
      out.dataset.done = "error";
      return;
    }
    button.disabled = true;
    model.generate(ids, opts, function (piece) { out.textContent += piece; },
                   function () { button.disabled = false; out.dataset.done = "1"; });
  }

  function inspect() {
    $("inside-error").textContent = "";
    try {
      var ids = encode($("inside-text").value, "the text's");
      if (ids.length < 2) throw new Error("give at least two tokens to look inside");
      var max = Number($("view").dataset.maxTokens), data = model.trace(ids.slice(0, max), 5);
      if (ids.length > max) data.note = "The text is cut after its first " + max.toLocaleString("en-US") +
                                        " tokens: the page holds every unit's value at every token.";
      charlmView.render($("view"), data);
    } catch (e) {
      $("inside-error").textContent = e.message;
    }
  }

  $("form").addEventListener("submit", function (e) { e.preventDefault(); generate(); });
  $("inspect").addEventListener("click", inspect);
  var query = new URLSearchParams(location.search);
  FIELDS.forEach(function (f) { if (query.has(f)) $(f).value = query.get(f); });
  if (query.has("prefix")) generate();
})();
