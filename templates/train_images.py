#!/usr/bin/env python
"""Image classification, the course's HW3 (food-11), resumable at any step on colabkit.

    python train_images.py                     # the bundled 8x8 digits (data/digits.zip)
    python train_images.py --archive data/food11.zip --image-size 128 --mode RGB --flip 1
    python train_images.py --fresh             # start over (the old run is moved aside, not deleted)

The data is ONE archive on Drive (reading thousands of small files from the Drive mount is slow):
it is copied to the local disk and extracted there once per session. Inside it, a folder holds
train/, valid/ and test/ image folders; a training image's class is its sub-folder's name
(train/3/a.jpg) or its file name's prefix (train/3_12.jpg, as in food-11). Rerun the same
command after a disconnect: it continues at the batch where it stopped.
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

import colabkit
from colabkit.errors import ColabkitError, ConfigError

# ---- 1. Config: edit here, or override on the command line (--epochs 20, --lr 1e-3, ...). ------------
CONFIG = {
    "project": None,          # folder under MyDrive; None: the one %colab_setup chose, else ML2022
    "run": "images",          # this experiment: checkpoints/<run>, outputs/<run>, logs/<run>
    "archive": "data/digits.zip",  # relative: to the project, its data/, then this folder
    "splits": "train,valid,test",  # folder names inside the archive (older food-11: training,...)
    "image_size": 8,          # images are resized to image_size x image_size (food-11: 128)
    "mode": "L",              # "L": grayscale, "RGB": color photos
    "flip": 0,                # 1: random horizontal flips (photos); a mirrored digit is no digit
    "seed": 6666,
    "epochs": 8,
    "batch_size": 64,
    "lr": 3e-3,
    "width": 32,              # channels of the first convolution (doubled in the second)
    "early_stop": 5,          # stop after this many epochs without a better validation accuracy
    "every": 10.0,            # minutes between checkpoints inside an epoch (one after each epoch too)
    "device": None,           # None: cuda if available, else cpu
    "num_workers": 0,         # DataLoader worker processes (2 in Colab keeps a GPU busy)
}


def parse_args(argv=None) -> dict:
    """CONFIG with the command line's flags applied; --help shows every default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for key, default in CONFIG.items():
        kind = {int: int, float: float, str: str}.get(type(default), lambda v: int(v) if v.isdigit() else v)
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=default, help="see CONFIG")
    parser.add_argument("--fresh", action="store_true", help="start over; the old run is kept aside")
    config = vars(parser.parse_args(argv))
    for key in ("image_size", "width"):  # the other counts are checked where they are used
        if type(config[key]) is not int or config[key] < 1:
            raise ConfigError(f"{key} = {config[key]!r}: give a whole number >= 1.")
    if config["mode"] not in ("L", "RGB"):
        raise ConfigError(f"mode = {config['mode']!r}: use L (grayscale) or RGB (color).")
    if len(config["splits"].split(",")) != 3:
        raise ConfigError(f"splits = {config['splits']!r}: give three folder names, e.g. train,valid,test.")
    return config


# ---- 2. Data: the archive is staged (copied and extracted) to the local disk once per session. -------
def stage_archive(name: str, train_split: str, project) -> Path:
    """The local folder holding the split folders (the archive may wrap them in one more folder)."""
    places = dict.fromkeys([project.root / name, project.data / name, Path(__file__).parent / name])
    archive = next((place for place in places if place.is_file()), None)  # an absolute name: one place
    if archive is None:
        raise ConfigError(f"{name} was not found (looked in {', '.join(map(str, places))}); put the "
                          "archive there (or %fetch its Drive id into data/) or set archive.")
    folder = colabkit.stage(archive, extract=True, quiet=True)
    for root in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (root / train_split).is_dir():
            return root
    raise ConfigError(f"{archive.name} has no {train_split}/ folder (at its top or one level down); "
                      "set splits to its folder names.")


class ImageFolder(Dataset):
    """The images under `folder`, with their class from the sub-folder or the file name's prefix."""

    def __init__(self, folder: Path, config: dict, classes=None, augment=False):
        self.files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        if not self.files:
            raise ConfigError(f"{folder} holds no .png or .jpg images; check the archive and splits.")
        names = [p.parent.name if p.parent != folder else p.stem.split("_")[0] for p in self.files]
        self.classes = classes or sorted(set(names), key=lambda c: (len(c), c))  # "2" before "10"
        self.labels = [self.classes.index(n) if n in self.classes else -1 for n in names]  # test: -1
        self.config, self.augment = config, augment

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index: int):
        size = self.config["image_size"]
        with Image.open(self.files[index]) as image:  # Pillow decodes; numpy hands it to torch
            pixels = np.asarray(image.convert(self.config["mode"]).resize((size, size)), dtype=np.float32)
        x = torch.from_numpy(pixels / 255).reshape(size, size, -1).permute(2, 0, 1)  # (channels, H, W)
        if self.augment:  # draw from this sample's own generator: a resumed run redraws the same
            x = augment(x, colabkit.sample_generator(index), self.config["flip"])
        return x, self.labels[index]


def augment(x: torch.Tensor, generator: torch.Generator, flip: int) -> torch.Tensor:
    """A random horizontal flip and a random shift (pad, then crop back), with torch operations.

    In Colab, torchvision is installed and its transforms can replace this, e.g.
        T = torchvision.transforms; tf = T.Compose([T.RandomResizedCrop(128), T.RandomHorizontalFlip()])
    but they draw from torch's global generator: seed it per sample to keep resumes exact:
        with torch.random.fork_rng(): torch.manual_seed(colabkit.sample_seed(index)); x = tf(x)
    """
    if flip and torch.rand((), generator=generator) < 0.5:
        x = x.flip(-1)
    pad = max(1, x.shape[-1] // 8)
    i, j = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return F.pad(x, (pad, pad, pad, pad))[:, i:i + x.shape[-2], j:j + x.shape[-1]]


# ---- 3. Model: a small convolutional network (the course's sample stacks five such blocks). ----------
def small_cnn(channels: int, classes: int, width: int) -> nn.Module:
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(channels, width), *block(width, 2 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


# ---- 4. Validation: model.eval() (batch norm uses its running statistics), torch.no_grad(). ----------
@torch.no_grad()
def validate(model, loader, loss_fn, procs) -> tuple[float, float]:
    model.eval()
    loss_sum = correct = rows = 0.0
    for x, y in loader:
        logits = model(x.to(procs.device))
        y = y.to(procs.device)
        loss_sum += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        rows += len(y)
    loss_sum, correct, rows = procs.sum(loss_sum, correct, rows)  # every process: its own share
    return loss_sum / rows, correct / rows


def main(argv=None) -> dict:
    config = parse_args(argv)
    procs = colabkit.init_distributed(config["device"])  # torchrun: one process per GPU; else a no-op
    colabkit.seed_everything(config["seed"])
    project = (config["project"] is None and colabkit.active_project()) or colabkit.setup(
        config["project"] or "ML2022", mount=False, chdir=False, quiet=True)  # a script finds the mount
    run = colabkit.Run(config["run"], config={k: v for k, v in config.items() if k != "fresh"},
                       structural=["archive", "splits", "image_size", "mode", "width"], root=project.root,
                       fresh=config["fresh"], seed=config["seed"], every=config["every"],
                       monitor="valid_acc", mode="max", patience=config["early_stop"])

    train_dir, valid_dir, test_dir = config["splits"].split(",")
    if not run.main:
        procs.barrier()  # rank 0 stages the archive first; the others then find it staged
    root = stage_archive(config["archive"], train_dir, project)
    if run.main:
        procs.barrier()
    train_set = ImageFolder(root / train_dir, config, augment=True)
    valid_set = ImageFolder(root / valid_dir, config, classes=train_set.classes)
    test_set = ImageFolder(root / test_dir, config, classes=train_set.classes)
    batch = max(1, config["batch_size"] // procs.world)  # per process
    train_loader = run.loader(train_set, batch, shuffle=True, num_workers=config["num_workers"])
    valid_loader = DataLoader(Subset(valid_set, range(procs.rank, len(valid_set), procs.world)), batch,
                              num_workers=config["num_workers"])  # every process: its own share
    if run.main:
        print(f"device: {procs.device}; data: {len(train_set)} training, {len(valid_set)} validation, "
              f"{len(test_set)} test images, {len(train_set.classes)} classes (from {root})")

    # ---- 5. Model, loss and optimizer. ---------------------------------------------------------------
    channels = 1 if config["mode"] == "L" else 3
    model = small_cnn(channels, len(train_set.classes), config["width"]).to(procs.device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    run.track(model, optimizer)  # a rerun restores weights, optimizer, random state and the loop's place
    trained = procs.wrap(model)  # DistributedDataParallel under torchrun, else the model itself

    # ---- 6. Training loop: one optimizer step per batch; validation and a checkpoint after each epoch. ----
    bar = tqdm(total=config["epochs"] * math.ceil(len(train_loader.sampler) / batch), initial=run.step,
               unit="step", mininterval=2, disable=None if run.main else True)  # ONE bar for the run
    for epoch in run.epochs():  # empty when the run is finished; continues mid-epoch after a crash
        trained.train()
        for x, y in run.batches(train_loader):  # a checkpoint every `every` minutes, between steps
            loss = loss_fn(trained(x.to(procs.device)), y.to(procs.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(train_loss=loss)  # a row of logs/<run>/metrics.csv
            bar.update()
        valid_loss, valid_acc = validate(model, valid_loader, loss_fn, procs)
        best = run.log(valid_loss=valid_loss, valid_acc=valid_acc)  # best: by maximum accuracy
        line = (f"epoch {epoch + 1:>3}/{config['epochs']}  valid loss {valid_loss:.4f}  accuracy {valid_acc:.4f}"
                f"  train loss {run.epoch_means['train_loss']:.4f}" + "  *best" * best)  # train: the epoch's mean
        if run.main:  # on the bar (a terminal or notebook), else one line per epoch (a log file)
            bar.set_postfix_str(line, refresh=False) if not bar.disable else print(line, flush=True)
    bar.close()

    # ---- 7. Test predictions with the best model, in Kaggle's format: Id,Category. -------------------
    summary = {"run": run, "model": run.output_dir / "model.safetensors",
               "predictions": run.output_dir / "predictions.csv"}
    if run.main:
        run.load_best(model)
        model.eval()
        with torch.no_grad():
            test_loader = DataLoader(test_set, batch_size=batch, num_workers=config["num_workers"])
            labels = torch.cat([model(x.to(procs.device)).argmax(1).cpu() for x, _ in test_loader])
        summary["model"] = colabkit.save_model(model, summary["model"])
        temp = summary["predictions"].with_name(".predictions.csv.tmp")
        with open(temp, "w", newline="") as handle:
            csv.writer(handle).writerows([["Id", "Category"], *(
                [path.stem, train_set.classes[k]] for path, k in zip(test_set.files, labels.tolist()))])
        os.replace(temp, summary["predictions"])  # never half a file under the final name
        summary["plot"] = run.plot()
        print(f"best validation accuracy {run.best:.4f} at epoch {run.best_epoch}; outputs in "
              f"{run.output_dir}")
    procs.close()  # leaves the process group (torchrun)
    return summary


if __name__ == "__main__":
    colabkit.install_excepthook()  # a plain-language hint under a traceback (shapes, devices, OOM)
    try:
        main()
    except ColabkitError as exc:  # a bad configuration or a Drive problem: one line, no traceback
        sys.exit(f"train_images.py: error: {exc}")
