"""Checkpoint cost: CheckpointManager against bare torch.save / torch.load on the same folder.

- save(): temp file, fsync, sha256, os.replace, manifest, rotation, against
  torch.save + fsync of the same state (~100 MB; --quick: ~25 MB);
- async save(): the time save() blocks the training loop, against a synchronous save;
- resume(): sha256 verification, weights_only load and load_state_dict, against a
  bare torch.load(weights_only=True) of the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._common import Figure, best_in_turns


def _model(megabytes: int):
    import torch

    layers = max(1, megabytes // 4)  # a 1024x1024 float32 Linear is 4 MB
    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Linear(1024, 1024, bias=False) for _ in range(layers)))


def run(quick: bool = False) -> list[Figure]:
    import torch

    import colabkit
    from colabkit._fsio import sha256_file

    megabytes, repeat = (24, 3) if quick else (100, 5)
    model = _model(megabytes)
    state = colabkit.training_state(model, epoch=1)
    size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-", dir=os.environ.get("COLABKIT_BENCH_DIR")) as tmp:
        folder = Path(tmp)
        bare = folder / "bare.pt"

        def torch_save_fsync() -> None:
            torch.save(state, bare)
            fd = os.open(bare, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        sync = colabkit.CheckpointManager(folder / "sync", keep_last=2)
        background = colabkit.CheckpointManager(folder / "async", keep_last=2, async_save=True)
        # each timing starts with no background save still writing (it would slow the others)
        t_bare, t_sync, t_async = best_in_turns(
            torch_save_fsync, lambda: sync.save(state, epoch=1), lambda: background.save(state, epoch=1),
            repeat=repeat, setup=background.wait,
        )
        background.wait()

        latest = sync.latest()
        target = _model(megabytes)
        t_load, t_resume, t_hash = best_in_turns(
            lambda: torch.load(latest, weights_only=True), lambda: sync.resume(target), lambda: sha256_file(latest),
            repeat=repeat,
        )
    detail = f"{size_mb:.0f} MB state, best of {repeat}"
    return [
        Figure("checkpoint save() / torch.save + fsync", t_sync / t_bare, 1.10, "lower",
               f"{detail}: save() {t_sync * 1e3:.0f} ms, torch.save+fsync {t_bare * 1e3:.0f} ms"),
        Figure("async save() blocking time / sync save()", t_async / t_sync, 0.2, "lower",
               f"{detail}: blocks {t_async * 1e3:.0f} ms, sync {t_sync * 1e3:.0f} ms"),
        Figure("resume() with sha256 verification / bare torch.load", t_resume / t_load, 1.3, "lower",
               f"{detail}: resume() {t_resume * 1e3:.0f} ms, torch.load {t_load * 1e3:.0f} ms; "
               f"the sha256 alone takes {t_hash * 1e3:.0f} ms ({t_hash / t_load:.2f}x torch.load), "
               "and resume() also copies the weights into the model"),
    ]
