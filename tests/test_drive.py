"""mount_drive / flush_drive against the fake google.colab, and locally."""

from __future__ import annotations

import os
import textwrap

import pytest

import colabkit
from colabkit.errors import (
    DriveNotMountedError,
    MountError,
    MountpointNotEmptyError,
    MountTimeoutError,
    NotInNotebookError,
)
from tests.conftest import run_python


def test_local_stand_in_is_created(isolated_env):
    path = colabkit.mount_drive()
    assert path == isolated_env / "drive"
    assert path.is_dir()


def test_flush_outside_colab_says_nothing_to_flush(capsys):
    assert colabkit.flush_drive() is None  # nothing echoed as a last cell's value
    out = capsys.readouterr().out
    assert "nothing to flush" in out and "local folder standing in for Drive" in out


def test_flush_as_the_last_cell_echoes_nothing(ipython_shell, capsys):
    result = ipython_shell.run_cell("import colabkit\ncolabkit.flush_drive()")
    assert result.success and result.result is None
    assert "Out[" not in capsys.readouterr().out


def test_a_file_as_drive_stand_in_is_a_drive_error(isolated_env, monkeypatch):
    from colabkit.errors import DriveError

    standin = isolated_env / "drive-file"
    standin.write_text("mine")
    monkeypatch.setenv("COLABKIT_DRIVE_DIR", str(standin))
    with pytest.raises(DriveError, match="COLABKIT_DRIVE_DIR.*To fix:"):
        colabkit.setup("ML2022")
    monkeypatch.setenv("COLABKIT_DRIVE_DIR", str(standin / "below"))
    with pytest.raises(DriveError, match="not a folder"):
        colabkit.mount_drive()
    assert standin.read_text() == "mine"


def test_an_uncreatable_drive_stand_in_is_a_drive_error(monkeypatch):
    from colabkit.errors import DriveError

    # root may write anywhere a permission bit guards; /proc refuses every new entry
    monkeypatch.setenv("COLABKIT_DRIVE_DIR", "/proc/colabkit-drive")
    with pytest.raises(DriveError, match="/proc/colabkit-drive.*To fix:"):
        colabkit.setup("ML2022", chdir=False)


def test_mount_in_colab(fake_colab, ipython_shell):
    path = colabkit.mount_drive(timeout_ms=5000)
    assert path == fake_colab.mydrive and path.is_dir()
    [call] = fake_colab.calls("mount")
    assert call["mountpoint"] == str(fake_colab.mountpoint)
    assert call["timeout_ms"] == 5000 and call["force_remount"] is False


def test_mount_is_idempotent(fake_colab, ipython_shell):
    colabkit.mount_drive()
    colabkit.mount_drive()
    assert len(fake_colab.calls("mount")) == 1


def test_forced_remount_leaves_drive_first_and_keeps_files(fake_colab, ipython_shell):
    mydrive = colabkit.mount_drive()
    (mydrive / "kept.txt").write_text("data")
    os.chdir(mydrive)
    colabkit.mount_drive(force_remount=True)
    second = fake_colab.calls("mount")[-1]
    assert second["force_remount"] is True
    assert not second["cwd"].startswith(str(fake_colab.mountpoint))
    assert (fake_colab.mydrive / "kept.txt").read_text() == "data"


def test_timeout_becomes_a_clear_error(fake_colab, ipython_shell, monkeypatch):
    monkeypatch.setenv("FAKE_COLAB_MOUNT", "timeout")
    with pytest.raises(MountTimeoutError, match="timeout_ms=240000") as info:
        colabkit.mount_drive(timeout_ms=120000)
    assert "top level of My Drive" in str(info.value)


def test_other_failure_becomes_mount_error(fake_colab, ipython_shell, monkeypatch):
    monkeypatch.setenv("FAKE_COLAB_MOUNT", "fail")
    with pytest.raises(MountError, match="force_remount=True"):
        colabkit.mount_drive()


def test_non_empty_mountpoint(fake_colab, ipython_shell):
    fake_colab.mountpoint.mkdir(parents=True)
    (fake_colab.mountpoint / "stray.csv").write_text("written before mounting")
    with pytest.raises(MountpointNotEmptyError, match="Move them elsewhere"):
        colabkit.mount_drive()
    assert (fake_colab.mountpoint / "stray.csv").exists()  # nothing deleted


def test_no_shell_and_no_mount_is_not_in_notebook(fake_colab):
    # No IPython shell: what a `!python script.py` sees.
    with pytest.raises(NotInNotebookError, match="notebook cell"):
        colabkit.mount_drive()
    assert fake_colab.calls("mount") == []


def test_subprocess_uses_existing_mount(fake_colab, ipython_shell):
    colabkit.mount_drive()
    done = run_python("import colabkit; print(colabkit.mount_drive())", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(fake_colab.mydrive)
    assert len(fake_colab.calls("mount")) == 1  # the subprocess did not mount


def test_subprocess_without_mount_says_what_to_do(fake_colab):
    code = textwrap.dedent("""
        import colabkit
        from colabkit.errors import NotInNotebookError
        try:
            colabkit.mount_drive()
        except NotInNotebookError as exc:
            print("refused:", exc)
    """)
    done = run_python(code, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "notebook cell" in done.stdout


def test_require_drive_without_mount(fake_colab):
    from colabkit._drive import require_drive

    with pytest.raises(DriveNotMountedError, match="mount_drive"):
        require_drive()


def test_flush_in_colab(fake_colab, ipython_shell):
    mydrive = colabkit.mount_drive()
    os.chdir(mydrive)
    assert colabkit.flush_drive() is None
    [call] = fake_colab.calls("flush_and_unmount")
    assert not call["cwd"].startswith(str(fake_colab.mountpoint))
