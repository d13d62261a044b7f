"""Several processes saving into one checkpoint folder at once (issue 10, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from colabkit._checkpoint.manager import (
    MANIFEST_NAME,
    CheckpointManager,
    CheckpointWarning,
)

WRITER = Path(__file__).with_name("_ckpt_writer.py")


@pytest.mark.slow
@pytest.mark.parametrize("modes", [("sync", "sync", "sync"), ("sync", "async", "async")])
def test_concurrent_writers_each_get_their_own_file_and_nothing_is_lost(tmp_path, modes):
    folder, go = tmp_path / "ck", tmp_path / "go"
    count = 8
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(folder), str(writer), str(count), mode, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for writer, mode in enumerate(modes)]
    for proc in procs:  # warmed up: then start them together
        assert proc.stdout.readline().strip() == "ready"
    go.write_text("go")
    returned = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        returned += json.loads(out.strip().splitlines()[-1])
    paths = [Path(p) for p, *_ in returned]
    assert len(set(paths)) == len(paths) == count * len(modes)  # no two saves got one name
    seqs = [int(p.name[5:11]) for p in paths]
    assert len(set(seqs)) == len(seqs)  # nor one sequence number (the order resume() trusts)
    reader = CheckpointManager(folder, keep_last=1000)
    for path, writer, index, numel in returned:
        state = reader.load(path)  # verified against the manifest's hash
        assert (state["writer"], state["index"]) == (writer, index), path
        assert torch.equal(state["w"], torch.full((numel,), float(writer * 1000 + index))), path
    listed = json.loads((folder / MANIFEST_NAME).read_text())["checkpoints"]
    assert sorted(e["file"] for e in listed) == sorted(p.name for p in paths)  # every writer's entry merged
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # nothing is skipped as damaged
        newest = max(paths, key=lambda p: int(p.name[5:11]))
        assert reader.latest() == newest
        assert reader.load()["index"] == reader.load(newest)["index"]


def test_a_writer_stuck_holding_the_lock_is_named_in_the_error(tmp_path, monkeypatch):
    from colabkit._checkpoint import folder as ckpt_folder
    from colabkit.errors import BusyError

    directory = tmp_path / "ck"
    directory.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from colabkit import _fsio\n"
        "with _fsio.locked(Path(sys.argv[1]), 'The checkpoint folder'):\n"
        "    print('held', flush=True); time.sleep(60)\n"), str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(ckpt_folder, "LOCK_TIMEOUT", 0.5)
        with pytest.raises(BusyError, match=f"process {holder.pid}") as busy:
            CheckpointManager(directory).save({"w": torch.ones(2)})
        assert "Wait for that process" in str(busy.value)
    finally:
        holder.kill()
        holder.wait()
    assert CheckpointManager(directory).save({"w": torch.ones(2)}).name == "ckpt-000001.pt"
