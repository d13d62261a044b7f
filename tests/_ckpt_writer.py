"""One of several writers on one checkpoint folder: `python _ckpt_writer.py DIR WRITER COUNT MODE GO`.

Waits until the file GO exists (so all writers start together), then saves
COUNT checkpoints whose content says who wrote it and when, and prints one
JSON line: [[path, writer, index, numel], ...] for the paths save() returned.
MODE is "sync" or "async".
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import torch

import colabkit


def main(directory: str, writer: int, count: int, mode: str, go: str) -> None:
    torch.set_num_threads(1)
    ckpt = colabkit.CheckpointManager(directory, keep_last=1000, async_save=mode == "async")
    with tempfile.TemporaryDirectory() as scratch:  # warm up (imports, first torch.save) before the start
        colabkit.CheckpointManager(scratch, async_save=mode == "async").save({"w": torch.ones(1)})
        colabkit.CheckpointManager(scratch).latest()
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    returned = []
    for index in range(count):
        numel = 1000 + 37 * ((writer * 7 + index * 13) % 50) * 100  # sizes differ, so timings interleave
        state = {"writer": writer, "index": index, "w": torch.full((numel,), float(writer * 1000 + index))}
        path = ckpt.save(state, epoch=index + 1, metric=float(index))
        returned.append([str(path), writer, index, numel])
    ckpt.close()
    print(json.dumps(returned))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
