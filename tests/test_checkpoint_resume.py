"""Exact resume: a run killed with SIGKILL after epoch k and resumed ends bit-identical."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("_ckpt_train.py")
EPOCHS = 5


def train(directory: Path, out: Path, kill_after: int | None = None) -> list[str]:
    """Run the script; with kill_after, SIGKILL it once it reports that epoch saved."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(directory), str(EPOCHS), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_after is not None and line.strip() == f"saved {kill_after}":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if kill_after is None:
        assert proc.returncode == 0, proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL
    return lines


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("uninterrupted")
    lines = train(folder / "ck", folder / "final.pt")
    assert lines[0] == "start 0" and lines[-1] == f"saved {EPOCHS}"
    return torch.load(folder / "final.pt", weights_only=True)


@pytest.mark.parametrize("kill_after", [1, 3])
def test_killed_and_resumed_run_ends_bit_identical(tmp_path, uninterrupted, kill_after):
    ck, out = tmp_path / "ck", tmp_path / "final.pt"
    train(ck, out, kill_after=kill_after)
    assert not out.exists()
    lines = train(ck, out)
    assert lines[0] == f"start {kill_after}"  # it continued, it did not start over
    resumed = torch.load(out, weights_only=True)
    assert list(resumed) == list(uninterrupted)
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_resuming_without_the_rng_state_would_differ(tmp_path, uninterrupted):
    """Control: the comparison above is sensitive; dropping the RNG/generator state changes the result."""
    ck, out = tmp_path / "ck", tmp_path / "final.pt"
    train(ck, out, kill_after=2)
    from colabkit._checkpoint.manager import CheckpointManager

    manager = CheckpointManager(ck, keep_last=2)
    state = manager.load()
    del state["rng"]["generator"]
    state["rng"]["torch"] = torch.manual_seed(12345).get_state()
    manager.save(state, epoch=2)
    code = (
        "import runpy, sys, colabkit._state as s\n"
        "orig = s.restore_rng_state\n"
        "s.restore_rng_state = lambda state, generator=None: orig(state, None)\n"
        f"sys.argv = ['x', {str(ck)!r}, '{EPOCHS}', {str(out)!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    resumed = torch.load(out, weights_only=True)
    assert any(not torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
