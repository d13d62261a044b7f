"""torch.distributed: two gloo processes through real torchrun write one set of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from colabkit._checkpoint.manager import MANIFEST_NAME

SCRIPT = Path(__file__).with_name("_ckpt_dist.py")


def test_two_ranks_write_one_set_of_files_and_both_resume(tmp_path):
    folder, out = tmp_path / "ck", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(SCRIPT), str(folder), str(out)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["pid"] != reports[1]["pid"]
    assert (reports[0]["files_written"], reports[1]["files_written"]) == (6, 0)  # rank 0 writes, only
    for kind in ("sync", "async"):
        # both ranks got the same three paths, and exactly those three files exist: one set
        assert reports[0][kind] == reports[1][kind]
        names = sorted(p.name for p in (folder / kind).iterdir())
        assert names == sorted([Path(p).name for p in reports[0][kind]] + [MANIFEST_NAME])
        assert names[:3] == ["ckpt-000001-epoch0001.pt", "ckpt-000002-epoch0002.pt", "ckpt-000003-epoch0003.pt"]
        listed = json.loads((folder / kind / MANIFEST_NAME).read_text())["checkpoints"]
        assert [e["file"] for e in listed] == names[:3]
        for report in reports:
            assert report[f"{kind}_resumed_epoch"] == 3 and report[f"{kind}_weights_equal"]
    assert reports[1]["visible"] == [True, True, True]
    # a write failure on rank 0 is raised on every rank (no rank left waiting forever)
    assert "Could not write the checkpoint folder" in reports[0]["blocked"]
    assert reports[1]["blocked"].startswith("Rank 0 could not write the checkpoint: ")
    assert "Could not write the checkpoint folder" in reports[1]["blocked"]
