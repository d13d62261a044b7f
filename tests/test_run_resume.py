"""colabkit.Run: a plain user loop killed at many steps (SIGKILL from outside) resumes bit for bit.

The loop (tests/_run_loop.py) shuffles, augments inside its Dataset with
colabkit.sample_generator(), uses dropout, NumPy's and Python's RNGs, Adam and
a scheduler, with 0 and 2 DataLoader workers. It is killed at five steps, the
last inside an epoch, rerun each time, and must end with exactly the weights
of an uninterrupted run, having loaded no sample of an interrupted epoch twice.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colabkit import ResumableSampler
from colabkit._training.metrics import read_rows

LOOP = Path(__file__).with_name("_run_loop.py")
EPOCHS, ROWS, BATCH, SEED = 2, 120, 16, 7
STEPS_PER_EPOCH = -(-ROWS // BATCH)  # 8


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_until(root: Path, out: Path, session: str, workers: int, kill_at: int | None = None,
              sig: int = signal.SIGKILL) -> tuple[int, list[str]]:
    """Run the loop; with kill_at, send `sig` once it reports that step done. (returncode, lines)"""
    proc = subprocess.Popen([sys.executable, str(LOOP), str(root), str(out), session, str(workers),
                             "--epochs", str(EPOCHS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env(), start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if kill_at is not None and line.startswith("STEP ") and int(line.split()[1]) >= kill_at:
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, signal.SIGKILL)  # the loop and its DataLoader workers
                else:
                    os.kill(proc.pid, sig)  # the notebook's stop button: the main process only
                kill_at = None
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, lines


def start_of(lines: list[str]) -> tuple[int, int, int]:
    start = next(line for line in lines if line.startswith("START "))
    epoch, batch, step = map(int, start.split()[1:])
    return epoch, batch, step


def loads(out: Path, session: str) -> list[int]:
    path = out / f"loads-{session}.txt"
    return [int(v) for v in path.read_text().split()] if path.exists() else []


def remaining_samples(epoch: int, batch: int) -> list[int]:
    """The indices still to load after (epoch, batch): the rest of that epoch, then whole epochs."""
    sampler = ResumableSampler(ROWS, seed=SEED, num_replicas=1, rank=0)
    left = sampler.order(epoch)[batch * BATCH:]
    for later in range(epoch + 1, EPOCHS):
        left += sampler.order(later)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_killed_at_five_steps_resumes_bit_identical_without_reloading(tmp_path, workers):
    out = tmp_path / "out"
    out.mkdir()
    code, lines = run_until(tmp_path / "reference", out, "reference", workers)
    assert code == 0 and lines[-1] == "DONE", "\n".join(lines[-20:])
    reference = torch.load(out / "weights.pt")
    (out / "weights.pt").unlink()

    root = tmp_path / "killed"
    kill_points = [2, 5, 8, 11, 13]  # step 8 ends epoch 1; the others fall inside an epoch
    starts = []
    for n, kill_at in enumerate(kill_points):
        sig = signal.SIGINT if (workers == 0 and n == 2) else signal.SIGKILL
        code, lines = run_until(root, out, f"s{n}", workers, kill_at, sig)
        assert code != 0 and "DONE" not in lines, "\n".join(lines[-20:])
        if sig == signal.SIGINT:  # KeyboardInterrupt: saved first, then re-raised
            assert any(line.startswith("Interrupted: saved ") for line in lines), "\n".join(lines[-20:])
            assert any("KeyboardInterrupt" in line for line in lines)
        starts.append(start_of(lines))
        assert not (out / "weights.pt").exists()
    code, lines = run_until(root, out, "final", workers)
    assert code == 0 and lines[-1] == "DONE", "\n".join(lines[-30:])
    final_start = start_of(lines)
    starts.append(final_start)

    # every rerun went on from its last published checkpoint (a kill can land before the save after
    # the reported step is on disk, so two sessions may start at the same step), mostly inside an epoch
    steps = [step for _, _, step in starts]
    assert steps[0] == 0 and steps == sorted(steps) and len(set(steps)) >= 4, starts
    assert sum(1 for _, batch, _ in set(starts) if batch > 0) >= 3, starts
    epoch, batch, step = final_start
    assert batch > 0 and step == epoch * STEPS_PER_EPOCH + batch, final_start

    # bit-identical to the uninterrupted run: weights, Adam's moments, the user's own state
    resumed = torch.load(out / "weights.pt")
    for key, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for key, state in reference["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(resumed["optimizer"]["state"][key][name]))
    assert resumed["history"] == reference["history"] and resumed["step"] == reference["step"] == 16

    # no replay: the last rerun loaded exactly the samples still to do, each once (a skip-replay
    # of the interrupted epoch would have loaded batch * 16 samples more)
    loaded = loads(out, "final")
    expected = remaining_samples(epoch, batch)
    assert len(loaded) == len(expected) == ROWS * EPOCHS - batch * BATCH - epoch * ROWS
    assert collections.Counter(loaded) == collections.Counter(expected)
    first = expected[: ROWS - batch * BATCH]
    assert collections.Counter(loaded[: len(first)]) == collections.Counter(first)
    # and every earlier rerun went on past the batches done (no sample of them loaded again)
    for n, (e, b, _) in enumerate(starts[1:-1], start=1):
        order = ResumableSampler(ROWS, seed=SEED, num_replicas=1, rank=0).order(e)
        left_in_epoch = max(0, ROWS - b * BATCH)
        here = loads(out, f"s{n}")[:left_in_epoch]
        assert not collections.Counter(here) - collections.Counter(order[b * BATCH:]), (n, e, b)

    # metrics.csv: one row per step and per epoch, as in the uninterrupted run (no duplicates)
    rows = read_rows(root / "logs" / "loop" / "metrics.csv")
    ref_rows = read_rows(tmp_path / "reference" / "logs" / "loop" / "metrics.csv")
    key = lambda r: (r["kind"], r["epoch"], r["step"])
    assert [key(r) for r in rows] == [key(r) for r in ref_rows]
    assert [r["step"] for r in rows if r["kind"] == "step"] == list(range(1, 17))
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert [strip(r) for r in rows] == [strip(r) for r in ref_rows]


def losses_by_step(lines: list[str]) -> dict[int, float]:
    """step -> the loss the loop printed for it (a step redone after a kill prints the same value)."""
    found = {}
    for line in lines:
        if line.startswith("LOSS "):
            _, step, value = line.split()
            found[int(step)] = float(value)
    return found


@pytest.mark.slow
def test_epoch_mean_train_loss_is_the_mean_of_every_step_across_sigkill_mid_epoch(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code, lines = run_until(tmp_path / "reference", out, "reference", 0)
    assert code == 0 and lines[-1] == "DONE", "\n".join(lines[-20:])
    reference = torch.load(out / "weights.pt")
    (out / "weights.pt").unlink()
    root, seen = tmp_path / "killed", {}
    for n, kill_at in enumerate([3, 11]):  # inside epoch 1 and inside epoch 2
        code, lines = run_until(root, out, f"s{n}", 0, kill_at)
        assert code != 0 and "DONE" not in lines, "\n".join(lines[-20:])
        seen.update(losses_by_step(lines))
    code, lines = run_until(root, out, "final", 0)
    assert code == 0 and lines[-1] == "DONE", "\n".join(lines[-30:])
    assert start_of(lines)[1] > 0  # the last session began inside an epoch
    seen.update(losses_by_step(lines))
    assert sorted(seen) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))

    # by hand: the plain mean of the epoch's step losses, added in step order
    hand = [sum(seen[s] for s in range(e * STEPS_PER_EPOCH + 1, (e + 1) * STEPS_PER_EPOCH + 1)) / STEPS_PER_EPOCH
            for e in range(EPOCHS)]
    resumed = torch.load(out / "weights.pt")
    assert resumed["means"] == hand == reference["means"]  # exact, not approximately
    epoch_rows = [r for r in read_rows(root / "logs" / "loop" / "metrics.csv") if r["kind"] == "epoch"]
    assert [r["train_loss"] for r in epoch_rows] == [float(format(m, ".9g")) for m in hand]
