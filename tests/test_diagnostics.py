"""status() and device(): real subprocesses running fake nvidia-smi executables."""

from __future__ import annotations

import json

import pytest

import colabkit
from colabkit.errors import DeviceError
from colabkit._status import query_gpus

ONE_GPU = "0, Tesla T4, 1234, 15360, 37, 52, 535.104.05\n"
TWO_GPUS = ONE_GPU + "1, NVIDIA A100-SXM4-40GB, 0, 40960, 0, 33, 535.104.05\n"
NA_FIELDS = "0, Tesla K80, [N/A], 11441, [N/A], [N/A], 470.82.01\n"


def test_one_gpu(fake_nvidia_smi):
    fake_nvidia_smi(ONE_GPU)
    gpus, outcome = query_gpus()
    assert outcome == "1 GPU(s)"
    [gpu] = gpus
    assert (gpu.index, gpu.name, gpu.memory_used_mib, gpu.memory_total_mib) == (0, "Tesla T4", 1234, 15360)
    assert (gpu.utilization_pct, gpu.temperature_c, gpu.driver) == (37, 52, "535.104.05")
    assert "Tesla T4" in str(gpu) and "15360 MiB" in str(gpu)


def test_two_gpus(fake_nvidia_smi):
    fake_nvidia_smi(TWO_GPUS)
    gpus, _ = query_gpus()
    assert [g.name for g in gpus] == ["Tesla T4", "NVIDIA A100-SXM4-40GB"]
    assert gpus[1].memory_total_mib == 40960


def test_not_available_fields(fake_nvidia_smi):
    fake_nvidia_smi(NA_FIELDS)
    [gpu], _ = query_gpus()
    assert gpu.memory_used_mib is None and gpu.utilization_pct is None and gpu.temperature_c is None
    assert gpu.memory_total_mib == 11441
    assert "n/a" in str(gpu)


def test_garbage_and_extra_lines(fake_nvidia_smi):
    fake_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate\n" + ONE_GPU + "junk,,\n")
    gpus, outcome = query_gpus()
    assert [g.name for g in gpus] == ["Tesla T4"]
    assert "2 unreadable line(s) ignored" in outcome


def test_only_garbage(fake_nvidia_smi):
    fake_nvidia_smi("this is not csv at all\n")
    assert query_gpus() == ([], "nvidia-smi printed no GPU line it could read")


def test_non_zero_exit(fake_nvidia_smi):
    fake_nvidia_smi("", exit_code=9, stderr="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    gpus, outcome = query_gpus()
    assert gpus == [] and "exit 9" in outcome and "couldn't communicate" in outcome


def test_hang_is_cut_off(fake_nvidia_smi):
    fake_nvidia_smi(ONE_GPU, sleep=30)
    gpus, outcome = query_gpus(timeout=0.5)
    assert gpus == [] and "did not answer within 0.5 s" in outcome


def test_absent(fake_nvidia_smi):
    fake_nvidia_smi(None)
    assert query_gpus() == ([], "nvidia-smi not found")


def test_status_report_locally(fake_nvidia_smi, isolated_env):
    fake_nvidia_smi(ONE_GPU)
    colabkit.mount_drive()
    report = colabkit.status()
    assert report.in_colab is False and report.gpus[0].name == "Tesla T4"
    assert report.torch is not None and report.cuda_available is False
    assert report.drive_mounted and report.drive_path == str(isolated_env / "drive")
    assert report.drive_free_gb > 0 and report.local_free_gb > 0 and report.ram_total_gb > 0
    text = str(report)
    assert "local (not Colab)" in text and "Tesla T4" in text and "GB free" in text
    # CPU-only torch with a GPU present: the report says why the GPU is unused
    assert any("CPU-only build" in p for p in report.problems)
    html = report._repr_html_()
    assert "<table" in html and "Tesla T4" in html
    data = report.to_dict()
    assert data["gpus"][0]["memory_total_mib"] == 15360
    json.dumps(data)  # plain data only


def test_colab_without_gpu_prints_the_fix(fake_colab, fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101")
    fake_nvidia_smi(None)
    report = colabkit.status()
    assert report.in_colab and report.colab_release == "release-colab_20261101"
    assert any("Change runtime type" in p for p in report.problems)
    assert any("Drive is not mounted" in p for p in report.problems)
    assert "Colab (release-colab_20261101)" in str(report)


def test_status_never_raises(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("COLABKIT_RUNTIME", "nonsense")
    fake_nvidia_smi("garbage", exit_code=0)
    report = colabkit.status()
    assert any("COLABKIT_RUNTIME" in p for p in report.problems)
    assert any("no GPU line" in p for p in report.problems)


def test_device_is_cpu_here():
    import torch

    assert colabkit.device() == torch.device("cpu")
    assert colabkit.device("cpu") == torch.device("cpu")


def test_device_cuda_missing_says_how(fake_colab):
    with pytest.raises(DeviceError, match="Change runtime type"):
        colabkit.device("cuda")


def test_device_cuda_missing_locally():
    with pytest.raises(DeviceError, match="CUDA build of torch"):
        colabkit.device("cuda:0")


def test_device_unknown_name():
    with pytest.raises(ValueError, match="not a device torch knows"):
        colabkit.device("tpu-ish")


def test_cpu_torch_beside_a_gpu_gets_the_real_fix(fake_colab, fake_nvidia_smi):
    """`pip install torch` does nothing when a CPU torch is installed; the fix is a restart or the CUDA index."""
    fake_nvidia_smi(ONE_GPU)
    [problem] = [p for p in colabkit.status().problems if "CPU-only build" in p]
    assert "Runtime → Restart session" in problem
    assert "`!pip install --force-reinstall torch==" in problem  # a cell command carries its `!`
    assert "--index-url https://download.pytorch.org/whl/cu12" in problem
    assert "`pip install torch`" not in problem and "restores the preinstalled" not in problem


def test_cpu_torch_fix_locally_is_a_shell_command(fake_nvidia_smi):
    fake_nvidia_smi(ONE_GPU)
    [problem] = [p for p in colabkit.status().problems if "CPU-only build" in p]
    assert "`pip install --force-reinstall" in problem and "!pip" not in problem and "Runtime →" not in problem


def test_local_status_names_the_stand_in_not_a_mount(isolated_env):
    colabkit.mount_drive()
    text = str(colabkit.status())
    drive_line = next(line for line in text.splitlines() if line.startswith("Drive"))
    assert "local folder standing in for Drive" in drive_line and "mounted" not in drive_line


def test_every_command_in_a_problem_carries_its_cell_prefix(fake_colab, fake_nvidia_smi):
    import re

    fake_nvidia_smi(ONE_GPU)
    for problem in colabkit.status().problems:
        for command in re.findall(r"`([^`]*)`", problem):
            if command.split()[0] in ("pip", "python", "nvidia-smi", "colab_setup", "colab_status"):
                pytest.fail(f"{command!r} lacks its ! or %: {problem}")
