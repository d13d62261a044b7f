"""Run under torchrun (gloo): every rank saves and resumes; only rank 0 may write.

`python -m torch.distributed.run --nproc_per_node=2 _ckpt_dist.py DIR OUT`
Each rank writes OUT/rank<r>.json with what it saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import colabkit


def main(directory: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    report: dict = {"rank": rank, "pid": os.getpid(), "sync": [], "async": [], "files_written": 0}
    import colabkit._checkpoint.torch_io as checkpoint

    real_save = checkpoint.write_torch

    def counting_save(payload, tmp):  # a spy: counts the checkpoint files this rank writes
        report["files_written"] += 1
        return real_save(payload, tmp)

    checkpoint.write_torch = counting_save
    sync = colabkit.CheckpointManager(Path(directory) / "sync", keep_last=10)
    background = colabkit.CheckpointManager(Path(directory) / "async", keep_last=10, async_save=True)
    for epoch in range(3):
        optimizer.zero_grad()
        model(torch.ones(2, 8)).sum().backward()
        optimizer.step()
        state = colabkit.training_state(model, optimizer, epoch=epoch + 1)
        report["sync"].append(str(sync.save(state, epoch=epoch + 1, metric=float(epoch))))
        # right after a synchronous save, the file exists for every rank
        report.setdefault("visible", []).append(Path(report["sync"][-1]).is_file())
        report["async"].append(str(background.save(state, epoch=epoch + 1)))
    background.wait()
    dist.barrier()
    for name, manager in (("sync", sync), ("async", background)):
        fresh = torch.nn.Linear(8, 4)
        info = manager.resume(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
        report[f"{name}_resumed_epoch"] = info.epoch
        report[f"{name}_weights_equal"] = all(
            torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))
    # a folder rank 0 cannot create (a file is in the way): every rank gets the error
    blocked = Path(directory) / "blocked"
    if rank == 0:
        blocked.write_text("a file where the folder should be")
    dist.barrier()
    try:
        colabkit.CheckpointManager(blocked).save(colabkit.training_state(model), epoch=1)
        report["blocked"] = None
    except colabkit.errors.CheckpointWriteError as exc:
        report["blocked"] = str(exc)
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()  # both ranks alive until both are done: a rank torn down early aborts its peer's gloo threads
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
