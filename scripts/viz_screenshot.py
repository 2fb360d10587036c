"""Make docs/viz.png: `charlm viz` of a run on the opening of the bundled book, shot by headless Debian chromium.

    PYTHONPATH=. python scripts/viz_screenshot.py RUN_DIR [-o docs/viz.png]

Needs chromium, chromium-driver and selenium (the `test` extra)."""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OPENING = 900  # characters of the book: a screenful


def browser(profile, width, height):
    """A headless chromium that reaches no network."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (e.g. one trained with the embedded default config)")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "viz.png"))
    args = parser.parse_args()
    book = (ROOT / "data" / "timemachine.txt").read_text(encoding="utf-8")
    start = book.index("The Time Traveller (for so it will be convenient")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-m", "charlm", "viz", "--run", args.run, "--text",
                        book[start:start + OPENING], "-o", str(page)], check=True, cwd=ROOT)
        driver = browser(Path(tmp) / "profile", 1100, 900)
        try:
            driver.get(page.as_uri())
            driver.find_element("css selector", '.tok[data-i="40"]').click()  # the top-5 panel, filled
            driver.save_screenshot(args.output)
        finally:
            driver.quit()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
