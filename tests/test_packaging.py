"""The wheel and the sdist carry the book itself (in the tree it is a symlink), an sdist installs, CI installs
as the README says, and charlm without MXNet says how to install it."""
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = (ROOT / "data" / "timemachine.txt").read_bytes()
NOT_SOURCE = shutil.ignore_patterns(".git", "runs", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis")


def pip(*args, cwd):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The wheel and the sdist, built offline from a copy of the tree (the symlink kept as a clone has it)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    assert (src / "charlm" / "corpora" / "timemachine.txt").is_symlink()
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", str(tmp), cwd=src)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp)], cwd=src, check=True,
                   capture_output=True)
    (wheel,), (sdist,) = tmp.glob("charlm-*.whl"), tmp.glob("charlm-*.tar.gz")
    return wheel, sdist


def test_wheel_carries_the_book(dists):
    with zipfile.ZipFile(dists[0]) as z:
        assert z.read("charlm/corpora/timemachine.txt") == BOOK


@pytest.mark.parametrize("asset", ["view.js", "model.js", "app.js", "style.css"])
def test_wheel_carries_the_page_assets(dists, asset):
    with zipfile.ZipFile(dists[0]) as z:
        assert z.read(f"charlm/assets/{asset}") == (ROOT / "charlm" / "assets" / asset).read_bytes()


@pytest.mark.parametrize("member", ["charlm/corpora/timemachine.txt", "data/timemachine.txt"])
def test_sdist_carries_the_book_as_a_file(dists, member):
    with tarfile.open(dists[1]) as t:
        info = t.getmember(f"{dists[1].name.removesuffix('.tar.gz')}/{member}")
        assert info.isfile()  # not a link
        assert t.extractfile(info).read() == BOOK


def test_sdist_has_what_the_readme_uses(dists):
    with tarfile.open(dists[1]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"configs/tiny.yaml", "configs/default.yaml", "constraints.txt", "docs/config.md", "README.md",
            "tests/bad_input_cases.py", "scripts/config_docs.py"} <= names


def test_sdist_installs_with_the_book(dists, tmp_path):
    pip("install", "--no-deps", "--no-build-isolation", "-q", "--target", str(tmp_path / "t"), str(dists[1]),
        cwd=tmp_path)
    assert (tmp_path / "t" / "charlm" / "corpora" / "timemachine.txt").read_bytes() == BOOK


def test_ci_installs_and_tests_as_the_readme_says():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = re.search(r"^pip install --quiet (.+)$", ci, re.M).group(1)
    assert re.search(r"^pytest -q ", ci, re.M)
    assert f"pip install {install} && pytest -q\n" in readme


def test_engine_without_mxnet_is_a_one_line_error():
    code = ("import sys; sys.modules['mxnet'] = None\n"  # as if not installed: importing it raises ImportError
            "from charlm.errors import CharlmError\n"
            "try:\n    import charlm.engine\nexcept CharlmError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.startswith("MXNet is not installed: pip install mxnet==1.9.1") and out.count("\n") == 1
