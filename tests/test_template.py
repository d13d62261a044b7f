"""The template ships as package data and is copied without overwriting a user's edits."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from colabkit import copy_template
from colabkit.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {
    "train.py",
    "train_images.py",
    "colab_quickstart.ipynb",
    "data/digits.zip",
    "data/digits.README.md",
    "data/digits.LICENSE",
    "data/diabetes.train.csv",
    "data/diabetes.test.csv",
    "data/diabetes.README.md",
    "data/diabetes.LICENSE",
}


def _relative(paths, root):
    return {p.relative_to(root).as_posix() for p in paths}


def test_copy_template_copies_every_shipped_file_byte_for_byte(tmp_path):
    dest = tmp_path / "project"
    result = copy_template(dest)
    assert _relative(result.copied, dest) == SHIPPED
    assert not result.unchanged and not result.kept
    for name in SHIPPED:
        assert (dest / name).read_bytes() == (REPO / "templates" / name).read_bytes(), name
    assert not (dest / "__init__.py").exists()
    assert not list(dest.rglob("*.tmp"))
    assert "copied     train.py" in str(result)


def test_copy_template_never_overwrites_an_edited_copy(tmp_path):
    dest = tmp_path / "project"
    copy_template(dest)
    edited = "# my edited training script\n"
    (dest / "train.py").write_text(edited)
    (dest / "data" / "diabetes.test.csv").unlink()

    result = copy_template(dest)

    assert (dest / "train.py").read_text() == edited
    assert _relative(result.kept, dest) == {"train.py"}
    assert _relative(result.copied, dest) == {"data/diabetes.test.csv"}
    assert _relative(result.unchanged, dest) == SHIPPED - {"train.py", "data/diabetes.test.csv"}
    assert "kept       train.py" in str(result) and "rename it" in str(result)


def test_copy_template_defaults_to_the_active_project(tmp_path):
    import colabkit

    project = colabkit.setup("ML2022", quiet=True, chdir=False)
    result = copy_template()
    assert result.destination == project.root
    assert (project.root / "train.py").is_file()
    assert (project.data / "diabetes.train.csv").is_file()


def test_copy_template_into_a_file_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file"):
        copy_template(target)
    assert target.read_text() == "keep me"


def test_cli_template_in_a_subprocess(tmp_path):
    dest = tmp_path / "mine"
    done = subprocess.run([sys.executable, "-m", "colabkit", "template", str(dest)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (dest / "train.py").is_file() and (dest / "colab_quickstart.ipynb").is_file()
    # issue 12: stdout is only the destination; the report goes to stderr
    assert done.stdout == f"{dest}\n" and "copied     data/diabetes.train.csv" in done.stderr
    assert (dest / "train_images.py").is_file() and zipfile.is_zipfile(dest / "data" / "digits.zip")
    assert f"Train with: python {dest / 'train.py'}   or   python {dest / 'train_images.py'}" in \
        done.stderr  # a terminal runs it without the `!` a notebook cell needs
    (dest / "train.py").write_text("# edited\n")
    again = subprocess.run([sys.executable, "-m", "colabkit", "template", str(dest)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "kept       train.py" in again.stderr
    assert (dest / "train.py").read_text() == "# edited\n"


def test_colab_setup_template_magic(fake_colab, ipython_shell, capsys):
    from colabkit._extension import load_ipython_extension

    load_ipython_extension(ipython_shell)
    ipython_shell.run_line_magic("colab_setup", "ML2022 --template")
    root = fake_colab.mydrive / "ML2022"
    assert f"Train with: !python {root / 'train.py'}" in capsys.readouterr().out  # a cell needs the `!`
    assert Path.cwd() == root
    assert (root / "train.py").read_bytes() == (REPO / "templates" / "train.py").read_bytes()
    assert (root / "data" / "diabetes.train.csv").is_file()
    assert (root / "data" / "digits.zip").read_bytes() == (REPO / "templates" / "data" / "digits.zip").read_bytes()
    assert (root / "train_images.py").read_bytes() == (REPO / "templates" / "train_images.py").read_bytes()
    (root / "train.py").write_text("# my edits\n")
    ipython_shell.run_line_magic("colab_setup", "ML2022 --template")
    assert (root / "train.py").read_text() == "# my edits\n"


def test_a_real_wheel_ships_the_template_and_copy_template_works_from_it(tmp_path):
    """Build the wheel, install it into a folder, and copy the template from that install."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(wheels)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("colabkit_ml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"colabkit/templates/{name}" for name in SHIPPED} <= names
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    dest = tmp_path / "from-wheel"
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run(
        [sys.executable, "-c",
         "import colabkit, sys; print(colabkit.__file__); colabkit.copy_template(sys.argv[1])", str(dest)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(site)), done.stdout  # really the installed copy
    for name in SHIPPED:
        assert (dest / name).read_bytes() == (REPO / "templates" / name).read_bytes(), name
