"""Staging from a read-only source, as Kaggle's /kaggle/input/<dataset>: nothing is written to it.

Tests run as root, which chmod cannot stop, so besides `chmod -R a-w` the
staging runs in a real subprocess with a Python audit hook that records every
call that could write under the source (open for writing, mkdir, rename,
remove, utime, chmod, ...), and the source tree is compared byte, mode and
mtime for mtime (folders included, so a file created and removed again shows).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from colabkit._stage import SOURCE_MARKER
from tests.conftest import run_python
from tests.test_stage_safety import snapshot, tree
from tests.test_staging import cp_shim, make_tree

WATCHED = r"""
import json, os, sys
from pathlib import Path

source = os.path.realpath(sys.argv[1])
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def under_source(path):
    if isinstance(path, int) or path is None:
        return False
    real = os.path.realpath(os.fsdecode(path))
    return real == source or real.startswith(source + "/")

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(flags, int) and flags & WRITE_FLAGS) or (mode and any(c in mode for c in "wax+"))
        if writing and under_source(path):
            writes.append([event, os.fsdecode(path)])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.utime", "os.chmod", "os.chown", "os.truncate",
                   "os.symlink", "os.link", "os.mkfifo", "os.mknod"):
        if under_source(args[0]):
            writes.append([event, os.fsdecode(args[0])])
    elif event in ("os.rename", "os.replace"):
        if under_source(args[0]) or under_source(args[1]):
            writes.append([event, os.fsdecode(args[0])])
    elif event == "subprocess.Popen":
        writes.append(["spawn", [os.fsdecode(a) for a in args[1]]])

sys.addaudithook(hook)
import colabkit
what = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
result = colabkit.stage(sys.argv[1], what, workers=int(sys.argv[3]), quiet=True)
print(json.dumps({"result": str(result), "writes": writes}))
"""


def stage_watched(source: Path, dest: Path | None, workers: int, env: dict | None = None) -> dict:
    result = run_python(WATCHED, str(source), str(dest) if dest else "-", str(workers), env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def kaggle_input(tmp_path) -> Path:
    """A Kaggle-like dataset under input/, made read-only (a-w) as Kaggle mounts it."""
    dataset = tmp_path / "kaggle" / "input" / "food-11"
    make_tree(dataset / "training", 60)
    (dataset / "labels.csv").write_text("id,label\n1,0\n")
    (dataset / "link.csv").symlink_to("labels.csv")
    for path in [dataset, *dataset.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    yield dataset
    for path in [dataset, *dataset.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


@pytest.mark.parametrize("workers", [1, 4])  # cp copies a new folder; Python threads
def test_staging_a_read_only_dataset_writes_nothing_to_it_and_its_copy_can_be_updated(
        tmp_path, kaggle_input, workers):
    before = snapshot(kaggle_input.parent)
    env = {**os.environ, "PATH": cp_shim(tmp_path / "bin", 'exec "$REAL" "$@"')}
    run = stage_watched(kaggle_input, None, workers, env=env)
    staged = Path(run["result"])
    assert staged == Path(os.environ["COLABKIT_CACHE_DIR"]) / "staged" / "food-11"
    spawned = [w for w in run["writes"] if w[0] == "spawn"]
    assert [w for w in run["writes"] if w[0] != "spawn"] == []  # no write call touched the source
    assert all(args[-2] == str(kaggle_input) for _, args in spawned)  # cp only ever reads it
    assert bool(spawned) == (workers == 1)
    assert snapshot(kaggle_input.parent) == before  # bytes, modes and mtimes of files and folders
    assert tree(staged) == {**tree(kaggle_input), "link.csv": ("file", b"id,label\n1,0\n")}
    folders = [staged, *(p for p in staged.rglob("*") if p.is_dir())]
    assert all(p.stat().st_mode & 0o700 == 0o700 for p in folders)  # writable by you: later stages update it
    assert all(p.stat().st_mode & 0o222 == 0 for p in staged.rglob("*") if p.is_file() and p.name != SOURCE_MARKER)
    (staged / "labels.csv").write_text("edited locally\n")  # root ignores the read-only mode, as on Kaggle

    os.utime(kaggle_input / "labels.csv", ns=(1, 1))  # the dataset changed: an update, also read-only
    before = snapshot(kaggle_input.parent)
    run = stage_watched(kaggle_input, None, workers)
    assert [w for w in run["writes"] if w[0] != "spawn"] == []
    assert snapshot(kaggle_input.parent) == before
    assert (staged / "labels.csv").read_text() == "id,label\n1,0\n"


def test_staging_one_read_only_file_writes_nothing_beside_it(tmp_path, kaggle_input):
    before = snapshot(kaggle_input.parent)
    run = stage_watched(kaggle_input / "labels.csv", tmp_path / "work", 1)
    assert run["writes"] == []
    assert snapshot(kaggle_input.parent) == before
    assert Path(run["result"]).read_text() == "id,label\n1,0\n"
