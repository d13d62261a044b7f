"""Training throughput of templates/train.py against a bare PyTorch loop and a Lightning Trainer.

All three train the template's model (Regressor) on the same rows with the same batch size,
optimizer, number of epochs and a validation pass after every epoch, and write the test
predictions at the end. The template adds what colabkit brings through `colabkit.Run`: a
verified, fsynced checkpoint after every epoch (and every `every` minutes), metrics.csv,
the resumable sampler, OOM back-off and the progress bar. The Lightning peer saves a
checkpoint every epoch too (its default ModelCheckpoint). What is timed is the training loop
with its validation passes and checkpoints (for the template: `run.epochs()` from its start to
its end, the last checkpoint's write included; for Lightning: `Trainer.fit`): rows trained per
second. Reading the CSV and the export after training are not counted; they are the same work
on every side.

The bundled table is small (283 training rows), so it is repeated to give epochs of a few
seconds. Rounds rotate the order of the contenders; each round gives one ratio per pair,
and the figure is the median of those paired ratios (their range and N in the detail).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ._common import Figure

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SEED, BATCH, LR, HIDDEN = 5201314, 32, 3e-4, [64, 32]
EVERY_MINUTES = 0.02  # 1.2 s: several mid-epoch checkpoints in an epoch of a few seconds


def _template():
    spec = importlib.util.spec_from_file_location("colabkit_template_train_bench", TEMPLATES / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _repeat_rows(source: Path, target: Path, times: int) -> int:
    with open(source, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for copy in range(times):
            writer.writerows([f"{copy}-{row[0]}", *row[1:]] for row in rows)
    return len(rows) * times


def _tables(train, train_csv: Path):
    """The template's own reading and split, so that every side trains on the same tensors."""
    import torch

    header, *rows = list(csv.reader(open(train_csv, newline="")))
    test_header, *test_rows = list(csv.reader(open(TEMPLATES / "data" / "diabetes.test.csv", newline="")))
    y_col, columns = train.select_columns(header, "target", None)
    x, y = train.numbers(train_csv, header, rows, columns), train.numbers(train_csv, header, rows, [y_col])[:, 0]
    x_test = train.numbers(train_csv, test_header, test_rows, columns)
    n_valid = round(len(x) * 0.2)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    return (train.TableDataset(x[order[n_valid:]], y[order[n_valid:]]),
            train.TableDataset(x[order[:n_valid]], y[order[:n_valid]]), x_test)


def _bare(train, train_csv: Path, epochs: int, out: Path) -> tuple[int, float]:
    """The course's loop by hand: no checkpoints, no metrics, no resume. Returns (rows, seconds)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    torch.manual_seed(SEED)
    train_set, valid_set, x_test = _tables(train, train_csv)
    model = train.Regressor(train_set.x.shape[1], HIDDEN)
    model.fit_scaling(train_set.x, train_set.y)
    loss_fn, optimizer = nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(train_set, BATCH, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    valid_loader = DataLoader(valid_set, BATCH)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            total = sum(loss_fn(model(x), y).item() * len(x) for x, y in valid_loader)
        _ = total / len(valid_set)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predictions = model(x_test)
    torch.save({"model": model.state_dict(), "predictions": predictions}, out / "bare.pt")
    return epochs * len(train_set), seconds


def _lightning(train, train_csv: Path, epochs: int, out: Path) -> tuple[int, float]:
    """The same loop in a Lightning Trainer, checkpointing every epoch. Returns (rows, seconds)."""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    train_set, valid_set, x_test = _tables(train, train_csv)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = train.Regressor(train_set.x.shape[1], HIDDEN)
            self.model.fit_scaling(train_set.x, train_set.y)
            self.loss_fn = nn.MSELoss()

        def training_step(self, batch, index):
            x, y = batch
            return self.loss_fn(self.model(x), y)

        def validation_step(self, batch, index):
            x, y = batch
            self.log("valid_loss", self.loss_fn(self.model(x), y), prog_bar=False)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    L.seed_everything(SEED, verbose=False)
    module = Module()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(out / "lightning"))
    start = time.perf_counter()
    trainer.fit(module, DataLoader(train_set, BATCH, shuffle=True), DataLoader(valid_set, BATCH))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        torch.save(module.model(x_test), out / "lightning-predictions.pt")
    return epochs * len(train_set), seconds


def _timed_epochs(clock: dict):
    """colabkit.Run.epochs, timed from its start to its end (the template's training loop)."""
    import colabkit

    original = colabkit.Run.epochs

    def epochs(self):
        start = time.perf_counter()
        yield from original(self)
        clock["seconds"] = time.perf_counter() - start

    return original, epochs


def run(quick: bool = False) -> list[Figure]:
    import torch

    train = _template()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times, epochs, rounds = (40, 2, 3) if quick else (150, 3, 6)
    try:
        import lightning  # noqa: F401
        import logging

        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        has_lightning = True
    except ImportError:
        has_lightning = False
    saved = {k: os.environ.get(k) for k in ("COLABKIT_DRIVE_DIR", "COLABKIT_PROJECT_DIR")}
    rates: dict[str, list[float]] = {"template": [], "bare": [], "template_every": [], "lightning": []}
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-train-") as tmp:
        folder = Path(tmp)
        train_csv = folder / "train.csv"
        total = _repeat_rows(TEMPLATES / "data" / "diabetes.train.csv", train_csv, times)
        n_train = total - round(total * 0.2)  # the template's split
        os.environ["COLABKIT_DRIVE_DIR"] = str(folder / "drive")
        os.environ.pop("COLABKIT_PROJECT_DIR", None)

        def template(r: int, *every: str) -> tuple[int, float]:
            import colabkit

            clock: dict = {}
            original, colabkit.Run.epochs = _timed_epochs(clock)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    train.main(["--project", "bench", "--run", f"round{r}{''.join(every)}", "--train-csv",
                                str(train_csv), "--epochs", str(epochs), "--early-stop", str(epochs + 1), *every])
            finally:
                colabkit.Run.epochs = original
            return epochs * n_train, clock["seconds"]

        sides = {"template": template, "bare": lambda r: _bare(train, train_csv, epochs, folder),
                 "template_every": lambda r: template(r, "--every", str(EVERY_MINUTES))}
        if has_lightning:
            def peer(r: int) -> tuple[int, float]:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    return _lightning(train, train_csv, epochs, folder)

            sides["lightning"] = peer
        names = list(sides)
        try:
            for name in names:  # warm-up: imports and first-call costs stay out of the rounds
                sides[name](-1 - names.index(name))
            for r in range(rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:  # rotated order
                    rows, seconds = sides[name](r)
                    rates[name].append(rows / seconds)
        finally:
            torch.set_num_threads(threads)
            from colabkit import _project as project

            project.deactivate()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def figure(peer: str, title: str, side: str = "template") -> Figure:
        ratios = [t / p for t, p in zip(rates[side], rates[peer])]
        detail = (f"median of {len(ratios)} paired ratios (rotated order), range {min(ratios):.3f}-"
                  f"{max(ratios):.3f}; median rows/s {side} {statistics.median(rates[side]):,.0f}, "
                  f"{peer} {statistics.median(rates[peer]):,.0f}; {epochs} epochs of {n_train:,} rows "
                  f"(bundled data x{times}), 1 torch thread, the loop timed in-process")
        return Figure(title, statistics.median(ratios), 0.97, "higher", detail)

    figures = [figure("bare", "template train.py / bare loop (training throughput)"),
               figure("bare", f"template, checkpoint every {EVERY_MINUTES * 60:g} s / bare loop",
                      "template_every")]
    if has_lightning:
        figures.append(figure("lightning", "template train.py / Lightning Trainer (throughput)"))
    return figures
