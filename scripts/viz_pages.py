"""The report and web pages of a run: docs/viz.png, shot by headless Debian chromium, and docs/viz.md's "Sizes and
speed" table.

    python scripts/viz_pages.py shot RUN_DIR [-o docs/viz.png]    # the report on the opening of the bundled book
    python scripts/viz_pages.py sizes RUN_DIR                      # the pages' sizes and times, as a table

Needs chromium, chromium-driver and selenium (the `test` extra)."""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from timing import ROOT, charlm, stamp

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OPENING = 900  # characters of the book: a screenful
BOOK = ROOT / "data" / "timemachine.txt"


def browser(profile, width=1100, height=900):
    """A headless chromium that reaches no network."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def shot(args, tmp):
    """The report of the book's opening, its top-5 panel filled, as a PNG."""
    book = BOOK.read_text(encoding="utf-8")
    start = book.index("The Time Traveller (for so it will be convenient")
    page = tmp / "report.html"
    charlm("viz", "--run", args.run, "--text", book[start:start + OPENING], "-o", page, quiet=True)
    driver = browser(tmp / "profile")
    try:
        driver.get(page.as_uri())
        driver.find_element("css selector", '.tok[data-i="40"]').click()
        driver.save_screenshot(args.output)
    finally:
        driver.quit()
    print(f"wrote {args.output}")


def loaded(driver, url, ready):
    """Seconds from asking chromium for url until the script `ready` returns true."""
    start = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, 120, poll_frequency=0.01).until(lambda d: d.execute_script(ready))
    return time.perf_counter() - start


def sizes(args, tmp):
    """Print the table: the report at 1,000 and 5,000 tokens, the web export, and their times in chromium."""
    rows = []
    for tokens in (1000, 5000):
        page = tmp / f"report-{tokens}.html"
        _, wall = charlm("viz", "--run", args.run, "--data", BOOK, "--max-tokens", tokens, "-o", page, quiet=True)
        rows.append((f"`charlm viz --data data/timemachine.txt --max-tokens {tokens}`",
                     f"{page.stat().st_size / 1e6:.1f} MB page; {wall:.1f} s wall, loading MXNet and the run included"))
    charlm("export", "--format", "web", "--run", args.run, "-o", tmp / "web", quiet=True)
    index, weights = (tmp / "web" / "index.html").stat().st_size, (tmp / "web" / "weights.js").stat().st_size
    rows.append(("`charlm export --format web`", f"`index.html` {index / 1e3:.0f} KB, `weights.js` "
                                                  f"{weights / 1e6:.1f} MB (4 bytes per weight, base64)"))
    driver = browser(tmp / "profile")
    try:
        seconds = loaded(driver, (tmp / "report-5000.html").as_uri(), "return !!document.getElementById('token-count')")
        rows.append(("chromium opening the 5,000-token report", f"{seconds:.1f} s until its text is drawn"))
        url = (tmp / "web" / "index.html").as_uri() + "?prefix=the+time+ma&length=200"
        seconds = loaded(driver, url, "var o = document.getElementById('output'); return o && o.dataset.done === '1'")
        rows.append(("the web page: load, then 200 greedy characters", f"{seconds:.1f} s"))
    finally:
        driver.quit()
    print(stamp())
    print("| what | size or time |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["shot", "sizes"])
    parser.add_argument("run", help="run directory (e.g. the embedded default's: `charlm train`)")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "viz.png"), help="shot: the PNG to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (shot if args.what == "shot" else sizes)(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
