"""Runtime detection and the environment contract."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from colabkit import _runtime as runtime
from colabkit.errors import ConfigError


def test_local_by_default():
    assert runtime.in_colab() is False


def test_colab_detected_from_release_tag(monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101-060000_RC00")
    assert runtime.in_colab() is True
    assert runtime.colab_release() == "release-colab_20261101-060000_RC00"


def test_colab_detected_from_imported_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert runtime.in_colab() is True


def test_colab_detected_from_hostname_file(monkeypatch, tmp_path):
    marker = tmp_path / "hostname"
    marker.write_text("colab-vm")
    monkeypatch.setattr(runtime, "COLAB_HOSTNAME_FILE", marker)
    assert runtime.in_colab() is True


@pytest.mark.parametrize("value, expected", [("colab", True), ("local", False), ("COLAB", True)])
def test_override_wins(monkeypatch, value, expected):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "x")  # detection alone would say colab
    monkeypatch.setenv("COLABKIT_RUNTIME", value)
    assert runtime.in_colab() is expected


def test_bad_override_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COLABKIT_RUNTIME", "colob")
    with pytest.raises(ConfigError, match="'colab', 'kaggle' or 'local'"):
        runtime.in_colab()


@pytest.mark.parametrize("how", ["run type", "working folder", "override"])
def test_kaggle_detected(monkeypatch, tmp_path, how):
    monkeypatch.setenv("COLABKIT_KAGGLE_DIR", str(tmp_path / "kaggle"))
    assert runtime.runtime() == "local"
    if how == "run type":
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    elif how == "working folder":
        (tmp_path / "kaggle" / "working").mkdir(parents=True)
    else:
        monkeypatch.setenv("COLABKIT_RUNTIME", "kaggle")
    assert runtime.runtime() == "kaggle" and runtime.in_kaggle() and not runtime.in_colab()
    assert runtime.drive_dir() == tmp_path / "kaggle" / "working"
    assert runtime.kaggle_input_dir() == tmp_path / "kaggle" / "input"


def test_colab_wins_over_kaggle_signs(monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "x")
    assert runtime.runtime() == "colab"


def test_kaggle_root_defaults_to_slash_kaggle(monkeypatch):
    monkeypatch.delenv("COLABKIT_KAGGLE_DIR", raising=False)
    assert runtime.kaggle_working_dir() == Path("/kaggle/working")


def test_paths_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COLABKIT_CONTENT_DIR", str(tmp_path / "vm"))
    assert runtime.mountpoint() == tmp_path / "vm" / "drive"
    assert runtime.colab_drive_dir() == tmp_path / "vm" / "drive" / "MyDrive"
    assert runtime.local_drive_dir() == tmp_path / "drive"
    monkeypatch.setenv("COLABKIT_RUNTIME", "colab")
    assert runtime.drive_dir() == tmp_path / "vm" / "drive" / "MyDrive"
    assert runtime.cache_dir() == tmp_path / "cache"


def test_defaults_without_overrides(monkeypatch):
    for var in ("COLABKIT_CONTENT_DIR", "COLABKIT_DRIVE_DIR", "COLABKIT_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert runtime.content_dir() == Path("/content")
    assert runtime.colab_drive_dir() == Path("/content/drive/MyDrive")
    assert runtime.local_drive_dir() == Path.home() / "colabkit-drive"
    assert runtime.cache_dir() == Path.home() / ".cache" / "colabkit"
    monkeypatch.setenv("COLABKIT_RUNTIME", "colab")
    assert runtime.cache_dir() == Path("/content/colabkit-cache")


def test_is_within(tmp_path):
    assert runtime.is_within(tmp_path / "a" / "b", tmp_path)
    assert runtime.is_within(tmp_path, tmp_path)
    assert not runtime.is_within(tmp_path.parent, tmp_path)
    assert not runtime.is_within(Path(str(tmp_path) + "-other"), tmp_path)
