"""A student's own loop on colabkit.Run, run as a subprocess by tests/test_run_resume.py.

    python _run_loop.py ROOT OUT SESSION WORKERS [--epochs N] [--every MIN] [--lr LR] [--hidden H]

Prints "START epoch batch step" once the run is set up, "LOSS n value" and
"STEP n" after every optimizer step (flushed, so the test can kill it at chosen steps).
The Dataset records every sample it loads in OUT/loads-SESSION.txt (from
whichever process loads it) and draws its augmentation from
colabkit.sample_generator(). At the end it writes OUT/weights.pt.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import colabkit


class NoisyDataset(torch.utils.data.Dataset):
    """120 rows of a linear target; each load adds random noise and a random feature drop-out."""

    def __init__(self, log: str):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(120, 6, generator=g)
        self.y = self.x @ torch.linspace(-1, 1, 6) + 0.1
        self.log = log

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        with open(self.log, "a") as handle:
            handle.write(f"{index}\n")
        g = colabkit.sample_generator(index)  # augmentation: the same in any worker, after any resume
        x = self.x[index] + 0.05 * torch.randn(6, generator=g)
        x = x * (torch.rand(6, generator=g) > 0.1)
        return x, self.y[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("session")
    parser.add_argument("workers", type=int)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=float, default=1e-9)  # minutes: a checkpoint between every two batches
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    config = {"epochs": args.epochs, "lr": args.lr, "hidden": args.hidden, "data": "noisy-120"}

    colabkit.seed_everything(0)
    run = colabkit.Run("loop", config=config, structural=["data"], root=args.root, every=args.every,
                       patience=10, fresh=args.fresh, seed=7)
    model = nn.Sequential(nn.Linear(6, args.hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(args.hidden, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.9)
    run.track(model, optimizer, scheduler)
    print(f"START {run.epoch} {run.batch} {run.step}", flush=True)
    loader = run.loader(NoisyDataset(str(out / f"loads-{args.session}.txt")), batch_size=16,
                        num_workers=args.workers)
    for epoch in run.epochs():
        model.train()
        for x, y in run.batches(loader):
            x = x + 0.01 * float(np.random.randn()) + 0.01 * random.random()  # numpy and Python RNGs too
            loss = ((model(x).squeeze(1) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.log(train_loss=loss)
            print(f"LOSS {run.step + 1} {float(loss)!r}", flush=True)  # for the hand-computed epoch mean
            print(f"STEP {run.step + 1}", flush=True)
        model.eval()
        with torch.no_grad():
            valid = ((model(loader.dataset.dataset.x).squeeze(1) - loader.dataset.dataset.y) ** 2).mean()
        if run.log(valid_loss=valid):
            run.state.best_valid = float(valid)
        run.state.setdefault("history", []).append(float(valid))
        run.state.setdefault("means", []).append(run.epoch_means["train_loss"])  # the epoch's mean train loss
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "history": run.state.get("history"), "step": run.step,
                "means": run.state.get("means")}, out / "weights.pt")
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
