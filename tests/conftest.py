"""Shared fixtures: an isolated Colab VM / Drive / cache per test, a fake
google.colab at its boundary, and fake nvidia-smi executables on PATH."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
FAKE_COLAB_DIR = TESTS_DIR / "fake_colab"
REPO_ROOT = TESTS_DIR.parent
COLAB_IPYTHON = "7.34.0"  # the IPython version Colab pins


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own VM root, Drive stand-in, cache and working directory."""
    from colabkit import _project as project

    for var in ("COLABKIT_RUNTIME", "COLAB_RELEASE_TAG", "COLABKIT_PROJECT_DIR", "FAKE_COLAB_MOUNT"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "COLABKIT_CONTENT_DIR": tmp_path / "content",
        "COLABKIT_DRIVE_DIR": tmp_path / "drive",
        "COLABKIT_CACHE_DIR": tmp_path / "cache",
        "FAKE_COLAB_LOG": tmp_path / "fake_colab_calls.jsonl",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    (tmp_path / "content").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    project.deactivate()
    yield tmp_path
    project.deactivate()


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """Pretend to be Colab: the fake google.colab is importable and detection says so.

    Returns a helper object with `calls()` (recorded calls) and `mydrive`.
    """
    monkeypatch.syspath_prepend(str(FAKE_COLAB_DIR))
    monkeypatch.setenv("COLABKIT_RUNTIME", "colab")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(FAKE_COLAB_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        monkeypatch.delitem(sys.modules, name)

    class FakeColab:
        content = tmp_path / "content"
        mountpoint = content / "drive"
        mydrive = mountpoint / "MyDrive"
        log = tmp_path / "fake_colab_calls.jsonl"

        def calls(self, name: str | None = None) -> list[dict]:
            if not self.log.exists():
                return []
            entries = [json.loads(line) for line in self.log.read_text().splitlines()]
            return [e for e in entries if name is None or e["call"] == name]

    yield FakeColab()
    for name in [m for m in sys.modules if m == "google.colab" or m.startswith("google.colab.")]:
        sys.modules.pop(name, None)


@pytest.fixture
def ipython_shell():
    """A real IPython InteractiveShell (a fresh singleton per test)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """Install an `nvidia-smi` executable on PATH: fake_nvidia_smi(stdout, exit_code=0, sleep=0).

    It is a real executable run by a real subprocess; only its output is canned.
    With stdout=None, no nvidia-smi is on PATH at all.
    """
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def install(stdout: str | None, exit_code: int = 0, sleep: float = 0.0, stderr: str = "") -> Path:
        target = bindir / "nvidia-smi"
        if stdout is None:
            # shadow any real one with a PATH that has none
            monkeypatch.setenv("PATH", str(bindir))
            return target
        target.write_text(textwrap.dedent(f"""\
            #!{sys.executable}
            import sys, time
            time.sleep({sleep!r})
            sys.stdout.write({stdout!r})
            sys.stderr.write({stderr!r})
            sys.exit({exit_code})
            """))
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return target

    return install


def run_python(code: str, *args: str, env: dict | None = None, cwd=None, timeout: float = 120):
    """Run `python -c code` in a real subprocess with this interpreter."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colabkit-tests"


@pytest.fixture(scope="session")
def colab_ipython_python(tmp_path_factory) -> Path:
    """A virtualenv with IPython 7.34 (Colab's pin), built once and cached.

    It sees torch (and numpy) through a .pth that appends this interpreter's
    site-packages AFTER its own, so its IPython is 7.34 and its torch is ours;
    colabkit comes from this checkout through PYTHONPATH. Cached under
    ~/.cache/colabkit-tests (or this run's temp dir when that is not writable).
    A failed install is a test failure, never a skip.
    """
    import torch

    main_site = str(Path(torch.__file__).resolve().parent.parent)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    cache = _cache_root()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = tmp_path_factory.mktemp("colabkit-tests")
    target = cache / f"ipython-{COLAB_IPYTHON}-py{version}"
    python = target / "bin" / "python"
    marker = target / "colabkit-tests-ready"
    if python.exists() and marker.exists() and marker.read_text() == main_site:
        return python
    shutil.rmtree(target, ignore_errors=True)
    build = target.with_name(f"{target.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(build)],
        [str(build / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"ipython=={COLAB_IPYTHON}"],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(build, ignore_errors=True)
            pytest.fail(f"could not build the IPython {COLAB_IPYTHON} test virtualenv; {' '.join(step)} "
                        f"exited {proc.returncode} (pip needs the package registry):\n{proc.stdout[-2000:]}"
                        f"\n{proc.stderr[-3000:]}", pytrace=False)
    site_dir = build / "lib" / f"python{version}" / "site-packages"
    (site_dir / "zz_colabkit_tests_main_env.pth").write_text(main_site + "\n")
    (build / "colabkit-tests-ready").write_text(main_site)
    try:
        os.rename(build, target)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(build, ignore_errors=True)
    return python
