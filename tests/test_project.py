"""setup(): persistent project folders, the active project, bad names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import colabkit
from colabkit.errors import DriveNotMountedError, ProjectNameError
from colabkit._project import active_project
from tests.conftest import run_python


def test_setup_creates_layout_and_changes_directory(isolated_env, capsys):
    project = colabkit.setup("ML2022")
    root = isolated_env / "drive" / "ML2022"
    assert project.root == root
    assert (project.data, project.checkpoints, project.outputs, project.logs) == (
        root / "data", root / "checkpoints", root / "outputs", root / "logs")
    assert all(p.is_dir() for p in (project.data, project.checkpoints, project.outputs, project.logs))
    assert Path.cwd() == root
    assert project.path("outputs", "model.pt") == root / "outputs" / "model.pt"
    assert "ML2022" in capsys.readouterr().out
    assert active_project() == project


def test_setup_is_idempotent_and_never_deletes(isolated_env):
    first = colabkit.setup("ML2022", chdir=False)
    (first.data / "train.csv").write_text("id,y\n1,2\n")
    second = colabkit.setup("ML2022", chdir=False)
    assert second.root == first.root
    assert (first.data / "train.csv").read_text() == "id,y\n1,2\n"
    assert Path.cwd() == isolated_env / "work"


def test_custom_subdirs_and_nested_name(isolated_env):
    project = colabkit.setup("ML2022/HW1", subdirs=("data", "models"), chdir=False, quiet=True)
    assert project.root == isolated_env / "drive" / "ML2022" / "HW1"
    assert (project.root / "models").is_dir()
    assert not (project.root / "logs").exists()


@pytest.mark.parametrize("name", [
    "", "   ", "/abs/path", "~/home", "..", "a/../b", "a//b", "ML:2022", "what?", "a*b", 'q"uote',
    "back\\slash", "C:stuff", " padded",
])
def test_bad_names_are_refused_with_the_rule(name, isolated_env):
    with pytest.raises(ProjectNameError, match="Use a name like"):
        colabkit.setup(name, chdir=False)
    assert not (isolated_env / "drive").exists() or not any((isolated_env / "drive").iterdir())


def test_bad_name_is_a_value_error():
    with pytest.raises(ValueError):
        colabkit.setup("../escape")


def test_file_in_the_way_is_not_overwritten(isolated_env):
    drive = isolated_env / "drive"
    drive.mkdir()
    (drive / "ML2022").write_text("a file the user made")
    with pytest.raises(ProjectNameError, match="is a file"):
        colabkit.setup("ML2022")
    assert (drive / "ML2022").read_text() == "a file the user made"


def test_setup_in_colab_mounts(fake_colab, ipython_shell):
    project = colabkit.setup("ML2022", quiet=True)
    assert project.root == fake_colab.mydrive / "ML2022"
    assert len(fake_colab.calls("mount")) == 1


def test_setup_without_mount_needs_an_existing_mount(fake_colab):
    with pytest.raises(DriveNotMountedError):
        colabkit.setup("ML2022", mount=False)


def test_subprocess_inherits_the_active_project(isolated_env):
    project = colabkit.setup("ML2022", chdir=False, quiet=True)
    done = run_python("import colabkit; print(colabkit.active_project().checkpoints)",
                      env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(project.checkpoints)


def test_no_active_project_by_default():
    assert active_project() is None
