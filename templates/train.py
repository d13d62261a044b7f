#!/usr/bin/env python
"""Regression on CSV files, the course's HW1 (COVID-19 cases), resumable at any step on colabkit.

    python train.py                          # the bundled diabetes data (or the files CONFIG names)
    python train.py --train-csv covid.train.csv --test-csv covid.test.csv --target tested_positive
    python train.py --epochs 50 --lr 1e-3    # every CONFIG entry is a flag: python train.py --help
    torchrun --nproc_per_node=2 train.py     # several GPUs (or CPU processes)

After a disconnect, rerun the same command: it continues at the batch where it stopped.
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

import colabkit
from colabkit.errors import ColabkitError, ConfigError

# ---- 1. Config: edit it here, or override it on the command line (--epochs 50 --lr 1e-3) -------
CONFIG = {
    "project": None,          # folder under MyDrive; None: the one %colab_setup chose, else ML2022
    "run": "train",           # this experiment: checkpoints/<run>, outputs/<run>, logs/<run>
    "train_csv": "data/diabetes.train.csv",  # relative: to the project, its data/, then this folder
    "test_csv": "data/diabetes.test.csv",
    "target": "target",       # the column to predict; a repeated name means its LAST column
    "features": None,         # None: all but id and target. Or names / 0-based indices (0 is id):
                              # "tested_positive,cli" (a name: ALL its columns), "38,39" (one each)
    "seed": 5201314,          # same seed: same split, same initial weights, same result
    "valid_ratio": 0.2,       # share of the training rows held out for validation
    "epochs": 200,
    "batch_size": 32,         # rows per optimizer step (shared out among torchrun processes)
    "micro_batch_size": None,  # rows per forward pass: None (the batch; halved on CUDA out of memory,
                               # the step still sees the whole batch), a number, or auto (probe first)
    "lr": 3e-4,
    "hidden": "64,32",        # hidden layer sizes
    "early_stop": 20,         # stop after this many epochs without a better validation loss
    "every": 10.0,            # minutes between checkpoints inside an epoch (and one after each)
    "device": None,           # None: cuda if available, else cpu
    "num_workers": 0,         # DataLoader worker processes
}


def parse_args(argv=None) -> dict:
    """CONFIG with the command line's flags applied; `--help` shows every default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for key, default in CONFIG.items():
        kind = {int: int, float: float, str: str}.get(type(default), lambda v: int(v) if v.isdigit() else v)
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=default, help="see CONFIG")
    parser.add_argument("--fresh", action="store_true", help="start over; the old run is kept aside")
    config = vars(parser.parse_args(argv))  # counts and sizes are checked where they are used
    try:
        config["hidden"] = [int(size) for size in str(config["hidden"]).split(",")]
        assert min(config["hidden"]) > 0
    except (ValueError, AssertionError):
        raise ConfigError(f"hidden = {config['hidden']!r}: give positive sizes like 64,32.") from None
    return config


# ---- 2. Data, by column POSITION: the covid files repeat 16 names for 5 days (a dict would merge them)
def read_csv(name: str, project) -> tuple[Path, list[str], list[list[str]]]:
    """The file (in the project, its data/, then beside this script), its header and rows as text."""
    places = dict.fromkeys([project.root / name, project.data / name, Path(__file__).parent / name])
    path = next((place for place in places if place.is_file()), None)  # an absolute name: one place
    if path is None:
        raise ConfigError(f"{name} was not found (looked in {', '.join(map(str, places))}); put it there, "
                          "or fetch it from Drive first (%fetch ID -o NAME), or set train_csv/test_csv.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header, *rows = list(csv.reader(handle)) or [[]]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header) or not header:
            raise ConfigError(f"{path}, line {line}: {len(row)} values for {len(header)} columns.")
    if not rows:
        raise ConfigError(f"{path} needs a header row and data rows.")
    return path, [name.strip() for name in header], rows


def select_columns(header: list[str], target: str, features) -> tuple[int, list[int]]:
    """The target's position and the feature positions (names or indices, see CONFIG)."""
    if target not in header:
        raise ConfigError(f"There is no target column {target!r}; the columns are {', '.join(header[:8])}"
                          f"{', ...' if len(header) > 8 else ''}. Set target (--target).")
    y_col = len(header) - 1 - header[::-1].index(target)  # a repeated name: its last column
    if features is None:
        return y_col, [i for i in range(len(header)) if i != y_col and (i or header[0].lower() != "id")]
    chosen = []
    items = features if isinstance(features, list) else str(features).split(",")
    for item in (str(f).strip() for f in items):
        found = [int(item)] if item.isdigit() else [i for i, name in enumerate(header) if name == item]
        if not found or max(found) >= len(header) or found == [y_col]:
            raise ConfigError(f"features: {item!r} is no feature column of the training file; give names "
                              f"from its header or indices 0..{len(header) - 1} (not the target's {y_col}).")
        chosen += [i for i in found if i != y_col and i not in chosen]
    return y_col, chosen


def numbers(path: Path, header: list[str], rows: list[list[str]], columns: list[int]) -> torch.Tensor:
    """The chosen columns as float32; the first value that is not a finite number stops the run."""
    def finite(text: str) -> bool:
        try:
            return math.isfinite(float(text))
        except ValueError:
            return False
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        bad = next((i for i in columns if not finite(row[i])), None)
        if bad is not None:
            raise ConfigError(f"{path}, line {line}, column {bad} ({header[bad]!r}): {row[bad]!r} is not a "
                              "finite number. Fix it, or leave the column out of features.")
    return torch.tensor([[float(row[i]) for i in columns] for row in rows])


class TableDataset(Dataset):  # rows as (features, target)
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


# ---- 3. Model: standardizes with the training rows' statistics (buffers: saved with the weights)
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

    def fit_scaling(self, x: torch.Tensor, y: torch.Tensor) -> None:
        stats = {"x_mean": x.mean(0), "x_std": x.std(0), "y_mean": y.mean(), "y_std": y.std()}
        for name, value in stats.items():
            getattr(self, name).copy_(value.clamp_min(1e-6) if name.endswith("std") else value)

    def forward(self, x):  # squeeze(1): shape (batch,) like the targets; (batch, 1) would broadcast
        return self.net((x - self.x_mean) / self.x_std).squeeze(1) * self.y_std + self.y_mean


def main(argv=None) -> dict:
    config = parse_args(argv)
    procs = colabkit.init_distributed(config["device"])  # torchrun: one process per GPU; else a no-op
    colabkit.seed_everything(config["seed"])
    project = (config["project"] is None and colabkit.active_project()) or colabkit.setup(
        config["project"] or "ML2022", mount=False, chdir=False, quiet=True)  # a script finds the mount
    # The run: its folders, config.json, metrics.csv; on a rerun it resumes (or says it is finished).
    run = colabkit.Run(config["run"], config={k: v for k, v in config.items() if k != "fresh"},
                       structural=["train_csv", "target", "features", "hidden"], root=project.root,
                       fresh=config["fresh"], seed=config["seed"], every=config["every"],
                       patience=config["early_stop"])
    train_path, header, rows = read_csv(config["train_csv"], project)
    test_path, test_header, test_rows = read_csv(config["test_csv"], project)
    y_col, columns = select_columns(header, config["target"], config["features"])
    expected = header[:y_col] + header[y_col + 1:]  # the test file: the same columns but the target
    if test_header != expected:  # name the first differences, not two lists of 117 names
        diffs = [f"column {i}: {a!r} in training, {b!r} in test"
                 for i, (a, b) in enumerate(zip(expected, test_header)) if a != b][:3]
        raise ConfigError(f"{test_path} needs the training file's columns but the target, in order ({len(expected)}"
                          f"; it has {len(test_header)}): {'; '.join(diffs) or 'more at the end'}. Make them match.")
    x, y = numbers(train_path, header, rows, columns), numbers(train_path, header, rows, [y_col])[:, 0]
    x_test = numbers(test_path, test_header, test_rows, [i - (i > y_col) for i in columns])
    test_ids = [row[0] for row in test_rows] if header[0].lower() == "id" else range(len(test_rows))
    n_valid = round(len(x) * config["valid_ratio"])
    if not 0 < n_valid < len(x):
        raise ConfigError(f"valid_ratio = {config['valid_ratio']} of {len(x)} rows leaves no training or "
                          "validation rows; give a share strictly between 0 and 1, e.g. 0.2.")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config["seed"]))
    train_set = TableDataset(x[order[n_valid:]], y[order[n_valid:]])  # the same split for the same seed
    valid_set = TableDataset(x[order[:n_valid]], y[order[:n_valid]])
    batch = config["batch_size"] // procs.world  # rows per process
    train_loader = run.loader(train_set, batch, shuffle=True, num_workers=config["num_workers"])  # resumable
    valid_loader = DataLoader(Subset(valid_set, range(procs.rank, n_valid, procs.world)), batch)
    if run.main:
        print(f"device: {procs.device}, {procs.world} process(es); data: {len(train_set)} training, "
              f"{n_valid} validation, {len(x_test)} test rows, {len(columns)} features ({train_path.name})")

    # ---- 4. Model, loss function and optimizer ----------------------------------------------------
    model = Regressor(len(columns), config["hidden"]).to(procs.device)
    model.fit_scaling(train_set.x, train_set.y)  # the training rows only, never the validation rows
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    run.track(model, optimizer)  # a rerun restores weights, optimizer, random state and the loop's place
    trained = procs.wrap(model)  # DistributedDataParallel under torchrun, else the model itself
    micro = colabkit.MicroBatcher(optimizer, batch, size=config["micro_batch_size"], run=run)

    # ---- 5. Training loop: zero_grad, forward + loss + backward (in micro-batches), step ----------
    bar = tqdm(total=config["epochs"] * math.ceil(len(train_loader.sampler) / batch), initial=run.step,
               unit="step", mininterval=2, disable=None if run.main else True)  # ONE bar for the run
    for epoch in run.epochs():  # empty when the run is finished; continues mid-epoch after a crash
        trained.train()
        for xb, yb in run.batches(train_loader):  # a checkpoint every `every` minutes, between steps
            optimizer.zero_grad()
            loss = micro.backward(lambda xc, yc: loss_fn(trained(xc), yc), xb.to(procs.device),
                                  yb.to(procs.device), no_sync=getattr(trained, "no_sync", None))
            optimizer.step()
            run.log(train_loss=loss)  # a row of logs/<run>/metrics.csv
            bar.update()

        # ---- 6. Validation: model.eval() and torch.no_grad() (no gradients: faster, less memory) --
        model.eval()
        total = 0.0
        with torch.no_grad():
            for xb, yb in valid_loader:  # micro.map: in micro-batches, halved on CUDA out of memory
                total += sum(micro.map(lambda xc, yc: loss_fn(model(xc), yc).item() * len(xc),
                                       xb.to(procs.device), yb.to(procs.device)))
        valid_loss = procs.mean(total, len(valid_loader.dataset))  # over every process's share
        best = run.log(valid_loss=valid_loss)  # True: a new best; early stopping counts the others
        line = (f"epoch {epoch + 1:>4}/{config['epochs']}  valid loss {valid_loss:10.4f}  train loss "
                f"{run.epoch_means['train_loss']:10.4f}" + "  *best" * best)  # train: the mean of the epoch's steps
        if run.main:  # on the bar (a terminal or notebook), else one line per epoch (a log file)
            bar.set_postfix_str(line, refresh=False) if not bar.disable else print(line, flush=True)
    bar.close()

    # ---- 7. Test predictions with the best model, in Kaggle's format: id,<target> ---------------
    out = {"run": run, "model": run.output_dir / "model.safetensors",
           "predictions": run.output_dir / "predictions.csv"}
    if run.main:
        run.load_best(model)
        model.eval()
        with torch.no_grad():
            predictions = torch.cat([model(xc.to(procs.device)).cpu() for xc in x_test.split(batch)])
        out["model"] = colabkit.save_model(model, out["model"])  # safetensors: weights only, safe to share
        temp = out["predictions"].with_name(".predictions.csv.tmp")
        with open(temp, "w", newline="") as handle:
            csv.writer(handle).writerows([["id", config["target"]], *(
                [i, format(v, ".9g")] for i, v in zip(test_ids, predictions.tolist()))])
        os.replace(temp, out["predictions"])  # written whole, then renamed: never half a file
        out["plot"] = run.plot()  # outputs/<run>/loss_curve.png, drawn from metrics.csv
        print(f"best validation loss {run.best:.4f} at epoch {run.best_epoch}; outputs in {run.output_dir}")
    procs.close()  # waits for every process, then leaves the process group
    return out


if __name__ == "__main__":
    colabkit.install_excepthook()  # a plain-language hint under a traceback (shapes, devices, OOM)
    try:
        main()
    except ColabkitError as exc:  # a bad configuration or a Drive problem: one line, no traceback
        sys.exit(f"train.py: error: {exc}")
