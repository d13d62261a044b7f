#!/usr/bin/env python
"""Regression on a CSV file, the course's HW1 (COVID-19 cases), resumable at any step on colabkit.

    python train.py                          # the bundled diabetes data (or the files CONFIG names)
    python train.py --train-csv covid.train.csv --test-csv covid.test.csv --target tested_positive
    python train.py --epochs 50 --lr 1e-3    # every CONFIG entry is a flag: python train.py --help
    python train.py --fresh                  # start over (the old run is moved aside, not deleted)
    torchrun --nproc_per_node=2 train.py     # several GPUs (or CPU processes)

Rerun the same command after a disconnect: it continues at the batch where it stopped.
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

import colabkit
from colabkit.errors import ColabkitError, ConfigError

# ---------------------------------------------------------------------------------------------
# 1. Config: edit here, or override on the command line (--epochs 50, --features 1,2,3, ...).
# ---------------------------------------------------------------------------------------------
CONFIG = {
    "project": "ML2022",      # folder under MyDrive (a local folder outside Colab)
    "run": "train",           # this experiment: checkpoints/<run>, outputs/<run>, logs/<run>
    "train_csv": "data/diabetes.train.csv",  # relative: to the project, its data/, then this folder
    "test_csv": "data/diabetes.test.csv",
    "target": "target",       # column to predict; a repeated name means its LAST column
    "features": None,         # None: every column but id and target. Or names and 0-based column
                              # indices of the file (0 is id), e.g. "tested_positive,cli" or "38,39":
                              # a name selects ALL its columns (covid: 5 days), an index exactly one
    "seed": 5201314,          # same seed: same split, same initial weights, same result
    "valid_ratio": 0.2,       # share of the training rows held out for validation
    "epochs": 200,
    "batch_size": 32,         # rows per optimizer step (shared out among torchrun processes)
    "micro_batch_size": None,  # rows per forward pass: None (= batch, halved on CUDA out of memory),
                               # a number, or "auto" (probe what fits first)
    "lr": 3e-4,
    "hidden": "64,32",        # hidden layer sizes
    "early_stop": 20,         # stop after this many epochs without a better validation loss
    "every": 10.0,            # minutes between checkpoints inside an epoch (one after each epoch too)
    "device": None,           # None: cuda if available, else cpu
    "num_workers": 0,         # DataLoader worker processes
}


def parse_args(argv=None) -> dict:
    """CONFIG with the command line's flags applied; --help shows every default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for key, default in CONFIG.items():
        kind = type(default) if isinstance(default, (int, float)) else str
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=default, help=" ")
    parser.add_argument("--fresh", action="store_true", help="start over; the old run is kept aside")
    config = vars(parser.parse_args(argv))
    for key, smallest in [("epochs", 1), ("batch_size", 1), ("early_stop", 1), ("num_workers", 0)]:
        if type(config[key]) is not int or config[key] < smallest:
            raise ConfigError(f"{key} = {config[key]!r}: give a whole number >= {smallest}.")
    if not 0 < config["valid_ratio"] < 1:
        raise ConfigError(f"valid_ratio = {config['valid_ratio']} must lie strictly between 0 and 1 "
                          "(0.2 holds out 20% of the training rows).")
    try:
        config["hidden"] = [int(size) for size in str(config["hidden"]).split(",")]
        assert all(size > 0 for size in config["hidden"])
    except (ValueError, AssertionError):
        raise ConfigError(f"hidden = {config['hidden']!r}: give positive sizes like 64,32.") from None
    return config


# ---------------------------------------------------------------------------------------------
# 2. Data: CSV columns are kept by POSITION. The course's covid files repeat 16 names for each of
#    5 days; a dict keyed by name would silently merge them.
# ---------------------------------------------------------------------------------------------
def find(name: str, project) -> Path:
    places = [Path(name)] if Path(name).is_absolute() else [
        project.root / name, project.data / name, Path(__file__).resolve().parent / name]
    for place in places:
        if place.is_file():
            return place
    raise ConfigError(f"{name} was not found (looked in {', '.join(map(str, places))}); put it there "
                      "or set train_csv/test_csv (fetch Drive files first with %fetch ID).")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header, *rows = list(csv.reader(handle)) or [[]]
    if not header or not rows:
        raise ConfigError(f"{path} needs a header row and data rows.")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}, line {line}: {len(row)} values for {len(header)} columns.")
    return [name.strip() for name in header], rows


def select_columns(header: list[str], target: str, features) -> tuple[int, list[int]]:
    """The target's position and the feature positions (names or 0-based indices, see CONFIG)."""
    if target not in header:
        raise ConfigError(f"There is no target column {target!r}; the columns are {', '.join(header[:8])}"
                          f"{', ...' if len(header) > 8 else ''}. Set target (--target).")
    y_col = len(header) - 1 - header[::-1].index(target)  # a repeated name: its last column
    skip = {y_col, 0} if header[0].lower() == "id" else {y_col}
    if features is None:
        return y_col, [i for i in range(len(header)) if i not in skip]
    chosen = []
    for item in str(features).split(",") if isinstance(features, str) else features:
        item = str(item).strip()
        found = [int(item)] if item.isdigit() else [i for i, name in enumerate(header) if name == item]
        found = [i for i in found if i != y_col]
        if not found or max(found) >= len(header):
            raise ConfigError(f"features: {item!r} is no column of the training file; give names from "
                              f"its header or indices 0..{len(header) - 1}.")
        chosen += [i for i in found if i not in chosen]
    return y_col, chosen


def numbers(path: Path, header: list[str], rows: list[list[str]], columns: list[int]) -> torch.Tensor:
    """The chosen columns as float32; the first value that is not a finite number stops the run."""
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        bad = next((i for i in columns if not finite(row[i])), None)
        if bad is not None:
            raise ConfigError(f"{path}, line {line}, column {bad} ({header[bad]!r}): {row[bad]!r} is not a "
                              "finite number. Fix it, or leave the column out of features.")
    return torch.tensor([[float(row[i]) for i in columns] for row in rows])


def finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def check_test_header(train: list[str], test: list[str], y_col: int, path: Path) -> None:
    """The test file has the training file's columns without the target: report the first differences."""
    expected = train[:y_col] + train[y_col + 1:]
    if test != expected:
        diffs = [f"column {i}: {a!r} in training, {b!r} in test" for i, (a, b) in
                 enumerate(zip(expected, test)) if a != b][:3]
        raise ConfigError(f"{path} has {len(test)} columns, the training file {len(expected)} besides the "
                          f"target; {'; '.join(diffs) or 'the extra columns are at the end'}. "
                          "Both files need the same columns in the same order.")


class TableDataset(Dataset):
    """Rows as (features, target), or features alone for the test rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


# ---------------------------------------------------------------------------------------------
# 3. Model: standardizes its inputs with the training rows' statistics (saved with the model).
# ---------------------------------------------------------------------------------------------
class Regressor(nn.Module):
    def __init__(self, n_features: int, hidden: list[int]):
        super().__init__()
        for name, shape in [("x_mean", n_features), ("x_std", n_features), ("y_mean", ()), ("y_std", ())]:
            self.register_buffer(name, torch.zeros(shape))
        layers, width = [], n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x):
        z = self.net((x - self.x_mean) / self.x_std).squeeze(1)  # (batch,), like the targets: a
        return z * self.y_std + self.y_mean                      # (batch, 1) would broadcast silently

    def fit_scaling(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Mean and spread of the TRAINING rows (never the validation rows)."""
        for name, value in [("x_mean", x.mean(0)), ("x_std", x.std(0)), ("y_mean", y.mean()), ("y_std", y.std())]:
            getattr(self, name).copy_(value.clamp_min(1e-6) if name.endswith("std") else value)


# ---------------------------------------------------------------------------------------------
# 4. Validation: model.eval() (no dropout), torch.no_grad() (no gradients: faster, less memory).
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, loader, loss_fn, micro, procs) -> float:
    model.eval()
    total, rows = 0.0, 0
    for x, y in loader:
        total += micro.evaluate(lambda xc, yc: loss_fn(model(xc), yc) * len(xc), x.to(procs.device),
                                y.to(procs.device))
        rows += len(x)
    total, rows = procs.sum(total, rows)  # every process validated its own share
    return total / rows


def main(argv=None) -> dict:
    config = parse_args(argv)
    procs = colabkit.init_distributed(config["device"])  # torchrun: one process per GPU; else a no-op
    try:
        return train(config, procs)
    finally:
        procs.close()


def train(config: dict, procs) -> dict:
    colabkit.seed_everything(config["seed"])
    project = colabkit.setup(config["project"], mount=False, chdir=False, quiet=True)  # finds Drive
    run = colabkit.Run(config["run"], config={k: v for k, v in config.items() if k != "fresh"},
                       structural=["train_csv", "target", "features", "hidden"], root=project.root,
                       fresh=config["fresh"], seed=config["seed"], every=config["every"],
                       patience=config["early_stop"])

    # Data: the training file's columns decide; the test file must have the same ones.
    train_path, test_path = find(config["train_csv"], project), find(config["test_csv"], project)
    header, rows = read_csv(train_path)
    test_header, test_rows = read_csv(test_path)
    y_col, columns = select_columns(header, config["target"], config["features"])
    check_test_header(header, test_header, y_col, test_path)
    x, y = numbers(train_path, header, rows, columns), numbers(train_path, header, rows, [y_col])[:, 0]
    x_test = numbers(test_path, test_header, test_rows, [i - (i > y_col) for i in columns])
    test_ids = [row[0] for row in test_rows] if header[0].lower() == "id" else list(range(len(test_rows)))
    n_valid = round(len(x) * config["valid_ratio"])
    if not 0 < n_valid < len(x):
        raise ConfigError(f"valid_ratio {config['valid_ratio']} of {len(x)} rows leaves no training or "
                          "validation rows; use e.g. 0.2.")
    train_set, valid_set = torch.utils.data.random_split(
        TableDataset(x, y), [len(x) - n_valid, n_valid], torch.Generator().manual_seed(config["seed"]))
    batch = config["batch_size"] // procs.world  # per process
    if batch < 1:
        raise ConfigError(f"batch_size {config['batch_size']} < {procs.world} processes; raise --batch-size.")
    train_loader = run.loader(train_set, batch, shuffle=True, num_workers=config["num_workers"])
    valid_loader = run.loader(valid_set, batch, shuffle=False, num_workers=config["num_workers"])
    if run.main:
        print(f"device: {procs.device}, {procs.world} process(es); data: {len(train_set)} training, "
              f"{n_valid} validation, {len(x_test)} test rows, {len(columns)} features ({train_path.name})")

    # -----------------------------------------------------------------------------------------
    # 5. Model, loss and optimizer.
    # -----------------------------------------------------------------------------------------
    model = Regressor(len(columns), config["hidden"])
    model.fit_scaling(x[train_set.indices], y[train_set.indices])
    model.to(procs.device)
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    run.track(model, optimizer)  # a rerun restores weights, optimizer, random state and the loop's place
    trained = procs.wrap(model)  # DistributedDataParallel under torchrun, else the model itself
    # micro-batches: the optimizer always sees batch_size rows; on CUDA out of memory each batch is
    # split in halves whose gradients add up (the size is kept for a resume)
    micro = colabkit.MicroBatcher(optimizer, batch, size=config["micro_batch_size"], run=run)

    # -----------------------------------------------------------------------------------------
    # 6. Training loop: one optimizer step per batch; validation and a checkpoint after each epoch.
    # -----------------------------------------------------------------------------------------
    for epoch in run.epochs():  # empty when the run is finished; continues mid-epoch after a crash
        trained.train()
        for xb, yb in run.batches(train_loader):
            optimizer.zero_grad()
            loss = micro.backward(lambda xc, yc: loss_fn(trained(xc), yc), xb.to(procs.device),
                                  yb.to(procs.device), no_sync=getattr(trained, "no_sync", None))
            optimizer.step()
            run.log(train_loss=loss)
        valid_loss = validate(model, valid_loader, loss_fn, micro, procs)
        best = run.log(valid_loss=valid_loss)  # True: a new best; early stopping counts the others
        if run.main:
            print(f"epoch {epoch + 1:>4}/{config['epochs']}  valid loss {valid_loss:10.4f}"
                  + ("  *best" if best else ""), flush=True)

    # -----------------------------------------------------------------------------------------
    # 7. Test predictions with the best model, in Kaggle's format: id,<target>.
    # -----------------------------------------------------------------------------------------
    summary = {"run": run, "model": run.output_dir / "model.safetensors",
               "predictions": run.output_dir / "predictions.csv"}
    if run.main:
        run.load_best(model)
        model.eval()
        with torch.no_grad():
            predictions = torch.cat([model(xc.to(procs.device)).cpu() for xc in x_test.split(batch)])
        summary["model"] = colabkit.save_model(model, summary["model"])
        temp = summary["predictions"].with_name(".predictions.csv.tmp")
        with open(temp, "w", newline="") as handle:
            csv.writer(handle).writerows([["id", config["target"]], *(
                [i, format(v, ".9g")] for i, v in zip(test_ids, predictions.tolist()))])
        os.replace(temp, summary["predictions"])  # never half a file under the final name
        summary["plot"] = run.plot()
        print(f"best validation loss {run.best:.4f} at epoch {run.best_epoch}; outputs in {run.output_dir}")
    procs.barrier()
    return summary


if __name__ == "__main__":
    colabkit.install_excepthook()  # a plain-language hint under a traceback (shapes, devices, OOM)
    try:
        main()
    except ColabkitError as exc:  # a bad configuration or a Drive problem: one line, no traceback
        sys.exit(f"train.py: error: {exc}")
