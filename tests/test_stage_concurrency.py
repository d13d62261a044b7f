"""Two real processes staging into one destination take turns (_fsio.locked), or one gets BusyError."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import colabkit
from colabkit import _stage, errors

from tests.test_stage_safety import tree
from tests.test_staging import hidden_siblings, make_tree

STAGE_WHEN_TOLD = r"""
import sys, time
from pathlib import Path
import colabkit

src, dest, go, workers = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
print(colabkit.stage(src, dest, workers=workers, quiet=True))
"""


@pytest.mark.parametrize("workers", [(1, 1), (2, 3)])  # cp in both; Python threads in both
def test_two_processes_staging_one_destination_both_end_with_the_complete_copy(tmp_path, workers):
    src, dest, go = tmp_path / "src", tmp_path / "dest", tmp_path / "go"
    files = make_tree(src, 600)
    runs = [subprocess.Popen([sys.executable, "-c", STAGE_WHEN_TOLD, str(src), str(dest), str(go), str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in workers]
    time.sleep(0.5)  # both are waiting for the signal
    go.touch()
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.strip() == str(dest)
    assert {rel: data for rel, (kind, data) in tree(dest).items() if kind == "file"} == files
    assert all(kind == "dir" for rel, (kind, _) in tree(dest).items() if rel not in files)
    assert hidden_siblings(tmp_path) == []  # one hidden folder, published once: none left


HOLD_THE_LOCK = r"""
import sys, time
from pathlib import Path
from colabkit._fsio import locked

with locked(Path(sys.argv[1]), "The staged folder"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_a_stage_that_cannot_get_the_lock_in_time_gets_busy_error_naming_the_holder(tmp_path, monkeypatch):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src, 5)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(_stage, "LOCK_TIMEOUT", 0.3)
        with pytest.raises(errors.BusyError, match=f"process {holder.pid}"):
            colabkit.stage(src, dest, quiet=True)
        assert not dest.exists()
    finally:
        holder.kill()
        holder.wait()
    assert colabkit.stage(src, dest, quiet=True) == dest  # once the holder is gone, it goes ahead
    assert (dest / "class1" / "img00001.bin").read_bytes() == (src / "class1" / "img00001.bin").read_bytes()


def test_a_second_stage_waits_for_the_first_then_copies_nothing(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = make_tree(src, 300)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen([sys.executable, "-c", STAGE_WHEN_TOLD, str(src), str(dest), str(src), "1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiter.poll() is None and not dest.exists()  # it waits while the lock is held
    finally:
        holder.kill()
        holder.wait()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert {rel: data for rel, (kind, data) in tree(dest).items() if kind == "file"} == files
