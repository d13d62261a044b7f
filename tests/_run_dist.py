"""A user loop on colabkit.Run under torchrun (gloo): DDP, split data, all-reduced validation.

`python -m torch.distributed.run --nproc_per_node=2 _run_dist.py ROOT OUT`
Every rank prints "START rank epoch batch step"; rank 0 prints "STEP n" after each step
and writes OUT/weights.pt at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

import colabkit


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(2)
        self.x = torch.randn(96, 4, generator=g)
        self.y = self.x.sum(1)

    def __len__(self):
        return 96

    def __getitem__(self, i):
        g = colabkit.sample_generator(i)
        return self.x[i] + 0.05 * torch.randn(4, generator=g), self.y[i]


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    procs = colabkit.init_distributed("cpu")
    colabkit.seed_everything(0)
    run = colabkit.Run("ddp", config={"epochs": 2, "lr": 0.05}, root=root, every=1e-9, seed=3)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.Linear(16, 1)).to(procs.device)
    trained = procs.wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run.track(trained, optimizer)
    print(f"START {procs.rank} {run.epoch} {run.batch} {run.step}", flush=True)
    data = Rows()
    loader = run.loader(data, batch_size=8)  # each rank its own half, like DistributedSampler
    for epoch in run.epochs():
        trained.train()
        for x, y in run.batches(loader):
            loss = ((trained(x).squeeze(1) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(train_loss=loss)
            time.sleep(0.15)  # a step of real length, so that a kill from outside lands inside the run
            if procs.main:
                print(f"STEP {run.step + 1}", flush=True)
        model.eval()
        with torch.no_grad():
            share = range(procs.rank, len(data), procs.world)
            total = float(((model(data.x[share]).squeeze(1) - data.y[share]) ** 2).sum())
        run.log(valid_loss=procs.mean(total, len(share)))
    if procs.main:
        torch.save(model.state_dict(), Path(out) / "weights.pt")
        print("DONE", flush=True)
    procs.barrier()
    procs.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
