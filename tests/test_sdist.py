"""Packaging: the sdist is complete enough to run its own tests, its metadata is
what PyPI shows, and the README's test command is the one CI runs."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """Build the sdist from this checkout, offline (setuptools is installed: --no-isolation)."""
    pytest.importorskip("build", reason="the sdist test needs the `build` package (pip install build)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [archive] = out.glob("colabkit_ml-*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def unpacked(sdist, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as tar:  # our own sdist; the data filter only where this Python has it (>= 3.11.4)
        tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    [root] = target.iterdir()
    return root


def test_sdist_holds_what_the_tests_need(unpacked):
    for needed in ("tests/conftest.py", "tests/__init__.py", "tests/_magics_shell_script.py",
                   "tests/_data_helpers.py", "tests/fake_colab/google/colab/drive.py",
                   "templates/train.py", "pyproject.toml", "LICENSE", ".ci/run"):
        assert (unpacked / needed).is_file(), needed
    tracked_tests = {p.relative_to(REPO).as_posix() for p in (REPO / "tests").rglob("*.py")
                     if "__pycache__" not in p.parts}
    shipped = {p.relative_to(unpacked).as_posix() for p in (unpacked / "tests").rglob("*.py")}
    assert tracked_tests <= shipped, tracked_tests - shipped
    assert not list(unpacked.rglob("__pycache__")) and not list(unpacked.rglob("*.pyc"))


@pytest.mark.slow
def test_the_unpacked_sdist_collects_its_suite(unpacked):
    env = dict(os.environ, PYTHONPATH=str(unpacked))  # the sdist's colabkit, not this checkout's
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=unpacked, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = re.search(r"(\d+) tests? collected", done.stdout)
    assert collected and int(collected.group(1)) > 100, done.stdout[-1000:]
    assert "error" not in done.stdout.lower().split("collected")[-1]


def test_metadata_is_what_pypi_shows(unpacked):
    meta = email.parser.Parser().parsestr((unpacked / "PKG-INFO").read_text(encoding="utf-8"))
    assert meta["Name"] == "colabkit-ml" and meta["Author"]
    assert meta["License-Expression"] == "MIT"
    urls = meta.get_all("Project-URL")
    assert urls and all(re.match(r"^[^,]+, https://\S+$", url) for url in urls)
    classifiers = meta.get_all("Classifier")
    versions = {c.rsplit(" ", 1)[-1] for c in classifiers if re.match(r"Programming Language :: Python :: 3\.\d+$", c)}
    assert {"3.10", "3.11", "3.12", "3.13"} <= versions
    assert meta["Requires-Python"] == ">=3.10"
    assert not any(c.startswith("License ::") for c in classifiers)  # the expression says it (PEP 639)


def test_twine_check_is_clean(sdist):
    if shutil.which("twine") is None and subprocess.run([sys.executable, "-m", "twine", "--version"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("twine is not installed (pip install twine)")
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(sdist)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr


def test_readme_opens_for_a_user_of_the_package():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    top = readme[:readme.index("## In Colab")]
    assert "pip install colabkit-ml" in top and "import colabkit" in top and "%colab_setup" in top
    assert top.count("```python") == 3  # the three-cell quickstart
    assert "python3 -m venv" not in top  # the checkout's set-up comes later
    for placeholder in ("git+<", "<this repository>", "this project's machines", "TODO", "XXX"):
        assert placeholder not in readme, placeholder


def test_readme_keeps_exactly_two_checkout_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Contributing / from a checkout"):]
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)
    assert len(commands) == 2 and all(c in section for c in commands)
    test_command = next(c for c in commands if c.endswith("python -m pytest"))
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci
