"""The report (`charlm viz`) and the web export in Debian's chromium: their numbers are the API's, and the web page's
arithmetic and greedy text are MXNet's and `charlm generate`'s. In CI they run; elsewhere they need chromium."""
import os
import re
import shutil
import urllib.parse

import numpy as np
import pytest

from charlm import api, configs, export, recipe, trace, viz
from charlm.engine import nd
from conftest import TEXT, TINY
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not os.environ.get("CI") and not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver (CI installs them)", allow_module_level=True)

CELLS = ["scratch-rnn", "scratch-lstm", "scratch-gru", "rnn", "lstm", "gru"]
RUNS = CELLS + ["word", "lines"]
PREFIX = {"char": "the quick", "word": "the quick brown", "lines": "pack my"}
EXTRA = ("word", "lines")  # LSTM runs at word level, and in lines mode (each line its own sequence)
LENGTH = 200
# words that would end or hide a page's <script>, and one with a "(" that no regular expression compiles
MARKUP = "the quick <!--<script> (brown) </script> fox & the lazy dog jumps over the dog"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless chromium for the module, reaching no network, its console logged."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield d
    d.quit()


def _train(name, runs):
    """A tiny run (conftest's TINY, two layers over windows of 16) trained a few epochs: its greedy text has no
    near-ties for float rounding to flip."""
    settings = {**TINY, "data.seq_len": 16, "model.num_layers": 2, "model.dropout": 0.0, "data.lowercase": True,
                "data.path": str(runs / ("markup.txt" if name == "word" else "tiny.txt")),
                "model.cell": "lstm" if name in EXTRA else name, "data.level": "word" if name == "word" else "char",
                "data.mode": "lines" if name == "lines" else "stream", "train.epochs": 4, "train.sample_every": 0,
                "train.lr": 1e-2}
    # the fixed settings, not the recipe's: it would time this machine to choose them
    cfg = recipe.fixed(configs.resolve(flags={tuple(key.split(".")): value for key, value in settings.items()}))
    return api.load(api.train(cfg, runs_dir=runs, name=name).path)


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    (runs / "tiny.txt").write_text(TEXT, encoding="utf-8")
    (runs / "markup.txt").write_text(TEXT + MARKUP + "\n", encoding="utf-8")
    return {name: _train(name, runs) for name in RUNS}


@pytest.fixture(scope="module")
def pages(lms, tmp_path_factory):
    """{run: (report.html, web export dir)}, made by the library's writers; "markup": the word run's report of
    MARKUP."""
    out = tmp_path_factory.mktemp("pages")
    made = {}
    for name, lm in lms.items():
        report = viz.write_report(lm, out / f"{name}.html", TEXT[:300])
        made[name] = (report, export.export(out / f"{name}-web", "web", lm.run.path))
    made["markup"] = (viz.write_report(lms["word"], out / "markup.html", MARKUP), made["word"][1])
    return made


def _read(lms, name):
    """(LM, text) of a report in pages."""
    return (lms["word"], MARKUP) if name == "markup" else (lms[name], TEXT[:300])


def _open(driver, path, query=None):
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri() + ("?" + urllib.parse.urlencode(query) if query else ""))


def _no_console_errors(driver):
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def _text(driver, css):
    return driver.find_element("css selector", css).text


def _rgb(style):
    return tuple(int(v) for v in re.findall(r"\d+", style)[:3])


def _diverging(v):
    """view.js's colour of v in [-1, 1]."""
    c = round(255 * (1 - min(1, abs(v))))
    return (255, c, c) if v >= 0 else (c, c, 255)


@pytest.mark.parametrize("name", ["lstm", "word", "lines"])
def test_report_shows_the_api_scores(driver, lms, pages, name):
    tr = lms[name].trace(TEXT[:300])
    _open(driver, pages[name][0])
    assert _text(driver, "#token-count") == str(tr.count)
    assert _text(driver, "#mean-bits") == f"{tr.mean_bits:.3f}"
    assert _text(driver, "#perplexity") == f"{tr.perplexity:.3f}"
    _no_console_errors(driver)


def test_report_of_words_like_markup_keeps_its_scripts(driver, lms, pages):
    lm, text = _read(lms, "markup")
    tr = lm.trace(text)
    assert {"<!--<script>", "</script>"} <= {t.strip() for t in tr.tokens}
    page = pages["markup"][0].read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data
    _open(driver, pages["markup"][0])
    assert driver.execute_script("return document.scripts.length") == 3
    assert _text(driver, "#token-count") == str(tr.count)
    spans = driver.find_elements("css selector", ".tok")
    assert [s.get_attribute("textContent") for s in spans] == tr.tokens
    _no_console_errors(driver)


def _point(driver, at, how):
    """Show the panel of position `at` as a visitor would: hover, click, or keyboard focus."""
    span = driver.find_element("css selector", f'.tok[data-i="{at}"]')
    if how == "hover":
        ActionChains(driver).move_to_element(span).perform()
    elif how == "click":
        span.click()
    else:
        driver.execute_script("arguments[0].focus()", span)


def _top5_is_the_api_s(driver, lm, tr, at):
    rows = driver.find_elements("css selector", "#top5 .guess")
    shown = [(r.get_attribute("data-token"), r.find_element("css selector", ".g-prob").text) for r in rows]
    assert _text(driver, "#panel").startswith(f"position {at}:")
    assert shown == [(lm.vocab.tokens[i], f"{np.exp(lp):.3f}") for i, lp in zip(tr.top_ids[at], tr.top_logprob[at])]


@pytest.mark.parametrize(("name", "how", "at"), [("gru", "click", 7), ("word", "hover", 9), ("gru", "focus", 11)])
def test_report_top5_at_a_position_is_the_api_s(driver, lms, pages, name, how, at):
    lm = lms[name]
    tr = lm.trace(TEXT[:300])
    _open(driver, pages[name][0])
    _point(driver, at, how)
    _top5_is_the_api_s(driver, lm, tr, at)
    _no_console_errors(driver)


def _recolours_with_the_api_activations(driver, tr, exact):
    """Colour the open page by the last group's (for an LSTM a gate) next-to-last unit; assert each token's
    colour is that of the API's activation: each channel within 1, or 2 where the page holds activations
    1/127.5 apart (not exact)."""
    units = tr.units()
    group = len(units) - 1
    layer, kind, size = units[group]
    unit = size - 2
    Select(driver.find_element("id", "colour-by")).select_by_value(str(group))
    box = driver.find_element("id", "unit")
    box.clear()
    box.send_keys(str(unit))
    spans = driver.find_elements("css selector", ".tok")
    colours = driver.execute_script("return arguments[0].map(s => s.style.backgroundColor)", spans)
    acts = tr.activations[f"l{layer}.{kind}"][:, unit]
    expected = [_diverging(2 * a - 1 if kind in "ifozr" else a) for a in acts]
    assert len(colours) == len(expected)
    assert np.abs(np.array([_rgb(c) for c in colours]) - np.array(expected)).max() <= (1 if exact else 2)


@pytest.mark.parametrize("name", ["scratch-lstm", "rnn"])
def test_report_unit_recolours_with_the_api_activations(driver, lms, pages, name):
    tr = lms[name].trace(TEXT[:300])
    _open(driver, pages[name][0])
    _recolours_with_the_api_activations(driver, tr, exact=False)
    _no_console_errors(driver)


def _found(driver, pattern, literal=False):
    """Search the open page's units for pattern: [(name, unit, score)] as listed, and the list's buttons."""
    driver.find_element("id", "pattern").send_keys(pattern)
    if literal:
        driver.find_element("id", "literal").click()
    driver.find_element("id", "find").click()
    buttons = driver.find_elements("css selector", "#found li button")
    return [(b.get_attribute("data-name"), int(b.get_attribute("data-unit")),
             float(b.find_element("xpath", "following-sibling::span[@class='score']").text)) for b in buttons], buttons


def _ranked_as_the_api(tr, pattern, literal, shown):
    """Assert the page's ranking is find_units's, as far as activations held 1/127.5 apart allow: each score is
    the API's to 0.01, and the order is the API's but for units whose API scores lie within 0.01 of each other."""
    expected = trace.find_units(tr, pattern, literal=literal)
    assert len(shown) == len(expected) == 10
    api_r = {(n, u): r for n, rs in trace.correlations(tr.activations, trace.inside(tr.tokens, pattern, literal))
             .items() for u, r in enumerate(rs)}
    assert all(abs(r - api_r[(n, u)]) < 0.01 for n, u, r in shown)
    ranked = [abs(api_r[(n, u)]) for n, u, _ in shown]
    assert all(a > b - 0.01 for a, b in zip(ranked, ranked[1:]))
    assert {(n, u) for n, u, r in expected if abs(r) > ranked[-1] + 0.01} <= {(n, u) for n, u, _ in shown}


# a regular expression; "." forced literal (the dots, not every character); "(brown" taken literally, as no
# regular expression compiles it
@pytest.mark.parametrize(("name", "pattern", "literal"), [("lstm", "o", False), ("word", r"\n", False),
                                                          ("word", ".", True), ("markup", "(brown", False)])
def test_report_finds_units_as_the_api_ranks_them(driver, lms, pages, name, pattern, literal):
    lm, text = _read(lms, name)
    tr = lm.trace(text)
    _open(driver, pages[name][0])
    shown, buttons = _found(driver, pattern, literal)
    _ranked_as_the_api(tr, pattern, literal, shown)
    buttons[0].click()
    assert Select(driver.find_element("id", "colour-by")).first_selected_option.text.startswith(
        f"layer {shown[0][0][1]}")
    _no_console_errors(driver)


@pytest.mark.parametrize("name", RUNS)
def test_web_greedy_text_equals_charlm_generate(driver, lms, pages, name):
    lm = lms[name]
    prefix = PREFIX[name if name in PREFIX else "char"]
    _open(driver, pages[name][1] / "index.html", {"prefix": prefix, "length": LENGTH})
    WebDriverWait(driver, 60).until(lambda d: d.find_element("id", "output").get_attribute("data-done"))
    output = driver.execute_script("return document.getElementById('output').textContent")
    assert output == lm.generate(prefix, LENGTH)
    _no_console_errors(driver)


@pytest.mark.parametrize("name", CELLS)
def test_web_step_matches_mxnet(driver, lms, pages, name):
    lm = lms[name]
    ids = lm.vocab.encode("the lazy dog jumps")
    logits, _ = lm.model(nd.array(ids, ctx=lm.ctx).reshape((-1, 1)), lm.model.begin_state(1, lm.ctx))
    _open(driver, pages[name][1] / "index.html")
    ours = driver.execute_script("""
        var m = new charlmModel.Model(CHARLM_MODEL), s = m.start();
        return arguments[0].map(function (id) { return Array.from(m.step(s, id).logits); });""",
                                 [int(i) for i in ids])
    np.testing.assert_allclose(np.array(ours), logits.asnumpy()[:, 0], rtol=1e-4, atol=1e-4)
    _no_console_errors(driver)


def _look_inside(driver, pages, name, text):
    """Open the web page of a run and look inside text."""
    _open(driver, pages[name][1] / "index.html")
    driver.execute_script("document.getElementById('inside-text').value = arguments[0]", text)
    driver.find_element("id", "inspect").click()


@pytest.mark.parametrize("name", ["gru", "word"])
def test_web_look_inside_shows_the_api_scores(driver, lms, pages, name):
    text = "the lazy dog jumps over the quick brown fox"
    lm = lms[name]
    tr = lm.trace(text)
    _look_inside(driver, pages, name, text)
    assert _text(driver, "#token-count") == str(tr.count)
    assert _text(driver, "#mean-bits") == f"{tr.mean_bits:.3f}"
    assert driver.find_elements("id", "cap-note") == []
    scale = max(1, int(np.ceil(np.percentile(tr.surprisal[1:], 98))))  # the report's legend top
    assert f"{scale}+ bits" in _text(driver, "#legend")
    _point(driver, 5, "click")
    _top5_is_the_api_s(driver, lm, tr, 5)
    _recolours_with_the_api_activations(driver, tr, exact=True)
    _no_console_errors(driver)


def test_web_look_inside_caps_a_long_text_and_says_so(driver, lms, pages):
    tr = lms["gru"].trace(TEXT, max_tokens=trace.MAX_TOKENS)
    assert tr.capped
    _look_inside(driver, pages, "gru", TEXT)
    assert len(driver.find_elements("css selector", ".tok")) == trace.MAX_TOKENS
    assert _text(driver, "#token-count") == str(tr.count)
    assert _text(driver, "#mean-bits") == f"{tr.mean_bits:.3f}"
    assert f"cut after its first {trace.MAX_TOKENS:,} tokens" in _text(driver, "#cap-note")
    _no_console_errors(driver)


def test_web_page_says_which_characters_it_cannot_read(driver, pages):
    _open(driver, pages["lstm"][1] / "index.html", {"prefix": "the #1", "length": 5})
    WebDriverWait(driver, 10).until(lambda d: d.find_element("id", "output").get_attribute("data-done"))
    assert _text(driver, "#error") == "prefix characters not in the model's vocabulary: \"#1\""
    _no_console_errors(driver)
