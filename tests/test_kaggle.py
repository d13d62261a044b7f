"""Kaggle kernels: detection, /kaggle/working as the persistent project folder,
/kaggle/input as a read-only data source; a fake Kaggle layout under a temp folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import colabkit
from tests.conftest import run_python


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """A Kaggle layout (<root>/working, <root>/input/<dataset>) and the kernel's run-type variable."""
    root = tmp_path / "kaggle"
    (root / "working").mkdir(parents=True)
    dataset = root / "input" / "food-11"
    (dataset / "training").mkdir(parents=True)
    for index in range(3):
        (dataset / "training" / f"{index}_0.jpg").write_bytes(bytes([index]) * 100)
    (root / "input" / "covid19-csv").mkdir()
    monkeypatch.setenv("COLABKIT_KAGGLE_DIR", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    return root


def test_setup_uses_kaggle_working(fake_kaggle, isolated_env, capsys):
    project = colabkit.setup("ML2022")
    assert project.root == fake_kaggle / "working" / "ML2022"
    assert project.checkpoints.is_dir() and Path.cwd() == project.root
    assert not (isolated_env / "drive").exists()  # no local Drive stand-in on Kaggle
    assert "saved with the notebook" in capsys.readouterr().out


def test_a_script_started_from_the_kernel_finds_the_same_project(fake_kaggle):
    project = colabkit.setup("ML2022", chdir=False, quiet=True)
    done = run_python("import colabkit; print(colabkit.active_project().root, colabkit.mount_drive())",
                      env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(project.root), str(fake_kaggle / "working")]


def test_status_says_kaggle_and_lists_the_inputs(fake_kaggle, fake_nvidia_smi):
    fake_nvidia_smi("0, Tesla P100-PCIE-16GB, 0, 16384, 0, 35, 535.104.05\n")
    report = colabkit.status()
    assert report.runtime == "kaggle" and report.in_colab is False
    assert report.drive_path == str(fake_kaggle / "working") and report.drive_mounted
    assert report.data_inputs == ["covid19-csv", "food-11"]
    text = str(report)
    assert "Kaggle kernel" in text and "read-only" in text and "food-11" in text
    assert "persistent folder" in text and "Drive is not mounted" not in text
    assert "Kaggle" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["data_input_path"] == str(fake_kaggle / "input")


def test_no_gpu_on_kaggle_gives_kaggles_fix(fake_kaggle, fake_nvidia_smi):
    fake_nvidia_smi(None)
    report = colabkit.status()
    [problem] = [p for p in report.problems if "No GPU" in p]
    assert "Settings → Accelerator" in problem and "Change runtime type" not in problem


def test_stage_copies_from_kaggle_input(fake_kaggle, isolated_env):
    local = colabkit.stage(fake_kaggle / "input" / "food-11", quiet=True)
    assert local.parent == isolated_env / "cache" / "staged"
    assert sorted(p.name for p in (local / "training").iterdir()) == ["0_0.jpg", "1_0.jpg", "2_0.jpg"]
    assert (local / "training" / "2_0.jpg").read_bytes() == b"\x02" * 100


def test_flush_on_kaggle_says_why_nothing_is_flushed(fake_kaggle, capsys):
    assert colabkit.flush_drive() is None
    assert "/kaggle/working is saved with the notebook" in capsys.readouterr().out


def test_cli_status_on_kaggle(fake_kaggle, fake_nvidia_smi):
    import subprocess
    import sys

    fake_nvidia_smi(None)
    done = subprocess.run([sys.executable, "-m", "colabkit", "status", "--json"], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runtime"] == "kaggle"
