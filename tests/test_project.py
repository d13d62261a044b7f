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


@pytest.mark.parametrize("name", [
    "a$b", "semi;colon", "amp&", "pipe|", "back`tick", "it's", 'say"hi"', "trailing.", "trailing ",
    "ML2022/HW1.", "ML2022/ HW1", "tab\there", "new\nline", "nul\x00", "esc\x1b[31m",
    "zero\u200bwidth", "bidi\u202eevil", "iso\u2066late", "bom\ufeff", "soft\u00adhyphen",
    "line\u2028sep", "a" * 256, "ML2022/" + "é" * 128,
])
def test_names_that_break_shells_or_drive_are_refused(name, isolated_env):
    with pytest.raises(ProjectNameError, match="Use a name like"):
        colabkit.setup(name, chdir=False)
    assert not (isolated_env / "drive").exists() or not any((isolated_env / "drive").iterdir())


@pytest.mark.parametrize("name", ["ML2022", "ML 2022", "ML2022/HW1", "v1.2-final_run", "深度学习", "a" * 255,
                                  "Übung (2)", "50%", "x+y=z", "#1", "@home"])
def test_ordinary_names_are_accepted(name, isolated_env):
    project = colabkit.setup(name, chdir=False, quiet=True)
    assert project.root == (isolated_env / "drive").joinpath(*name.split("/"))
    assert project.root.is_dir()


def test_readme_states_the_rule_the_code_applies():
    from colabkit._project import FORBIDDEN_CHARS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Nested\nproject names") if "Nested\nproject names" in readme
                     else readme.index("Project names"):][:1500]
    for ch in FORBIDDEN_CHARS:
        assert f"`{ch}`" in section or f"`` {ch} ``" in section, ch
    for words in ("control characters", "zero-width", "trailing dot", "255 bytes"):
        assert words in section, words


def test_every_accepted_name_stays_inside_mydrive_and_round_trips(isolated_env):
    from hypothesis import HealthCheck, given, settings, strategies as st

    from colabkit._project import name_problem

    mydrive = colabkit.mount_drive()
    part = st.text(st.characters(), min_size=1, max_size=12)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(part, min_size=1, max_size=3).map("/".join) | st.text(max_size=20))
    def check(name):
        if name_problem(name) is not None:
            with pytest.raises(ProjectNameError):
                colabkit.setup(name, chdir=False, quiet=True)
            return
        project = colabkit.setup(name, chdir=False, quiet=True)
        real = Path(os.path.realpath(project.root))
        assert real.is_relative_to(os.path.realpath(mydrive)) and real != Path(os.path.realpath(mydrive))
        assert project.root.relative_to(mydrive).as_posix() == name  # the folder has exactly that name
        assert os.path.basename(name) in os.listdir(project.root.parent)

    check()


def test_folders_follow_subdirs(isolated_env):
    project = colabkit.setup("ML2022", subdirs=("data", "models", "runs"), chdir=False, quiet=True)
    assert project.folders == {name: project.root / name for name in ("data", "models", "runs")}
    assert project.models == project.root / "models" and project.runs.is_dir()
    with pytest.raises(AttributeError, match="its folders are data, models, runs"):
        project.weights
    assert project.checkpoints == project.root / "checkpoints"  # where CheckpointManager writes
