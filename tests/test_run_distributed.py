"""colabkit.Run under real torchrun with two gloo processes: killed mid-epoch, resumed, bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("_run_dist.py")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_all(pid: int) -> None:
    """SIGKILL torchrun and every rank at once, from outside (a runtime that disappears)."""
    for target in [pid, *descendants(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def torchrun(root: Path, out: Path, kill_at: int | None = None) -> tuple[int, list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(SCRIPT), str(root), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if kill_at is not None and line.startswith("STEP ") and int(line.split()[1]) >= kill_at:
                kill_all(proc.pid)
                kill_at = None
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            kill_all(proc.pid)
            proc.wait()
    return proc.returncode, lines


@pytest.mark.slow
def test_two_gloo_ranks_killed_mid_epoch_resume_bit_identical(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code, lines = torchrun(tmp_path / "reference", out)
    assert code == 0 and "DONE" in lines, "\n".join(lines[-30:])
    reference = torch.load(out / "weights.pt")
    (out / "weights.pt").unlink()

    code, lines = torchrun(tmp_path / "killed", out, kill_at=3)  # 6 steps an epoch: inside epoch 1
    assert code != 0 and "DONE" not in lines
    code, lines = torchrun(tmp_path / "killed", out)
    assert code == 0 and "DONE" in lines, "\n".join(lines[-30:])
    starts = sorted(tuple(map(int, line.split()[1:])) for line in lines if line.startswith("START "))
    assert len(starts) == 2 and starts[0][1:] == starts[1][1:]  # both ranks at the same place
    _, epoch, batch, step = starts[0]
    assert epoch == 0 and 0 < batch < 6 and step == batch, starts  # inside the first epoch
    resumed = torch.load(out / "weights.pt")
    for key, tensor in reference.items():
        assert torch.equal(tensor, resumed[key]), key
    metrics = (tmp_path / "killed" / "logs" / "ddp" / "metrics.csv").read_text().splitlines()
    steps = [int(row.split(",")[1]) for row in metrics[1:] if row.split(",")[2] == "step"]
    assert steps == list(range(1, 13))
