"""Training throughput of templates/train.py against a bare hand-written PyTorch loop.

Both train the template's model (Regressor) on the same rows, with the same
batch size, optimizer and number of epochs, validating after every epoch as
the course loop does. The template adds what colabkit brings: a verified,
fsynced checkpoint every epoch, the progress bar, OOM back-off and the
bookkeeping for exact resume. Throughput is training rows per second over the
epoch loop (data loading before it and the export after it are not counted).

The bundled table is small (283 training rows, an epoch of a few
milliseconds), so it is repeated to give epochs of a realistic length (about
two seconds here); the fixed cost per epoch, and the ratio on the bundled rows as
they are, are reported in the detail line.
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


def _template():
    spec = importlib.util.spec_from_file_location("colabkit_template_train_bench", TEMPLATES / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _repeat_rows(source: Path, target: Path, times: int) -> None:
    with open(source, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for copy in range(times):
            writer.writerows([f"{copy}-{row[0]}", *row[1:]] for row in rows)


def _bare_loop(train, train_csv: Path, epochs: int, seed: int = 5201314) -> tuple[float, int]:
    """The course's loop by hand, on the template's model and data: (seconds, rows trained)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    table = train.read_table(train_csv, "target")
    dataset = train.CsvDataset(table.features, table.targets)
    train_set, valid_set = train.split(dataset, 0.2, seed)
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    valid_loader = DataLoader(valid_set, batch_size=32, shuffle=False)
    model = train.Regressor(len(table.columns), [64, 32], 0.1)
    model.fit_scaling(table.features[train_set.indices], table.targets[train_set.indices])
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        total = 0.0
        with torch.no_grad():
            for x, y in valid_loader:
                total += loss_fn(model(x), y).item() * len(x)
        _ = total / len(valid_set)
    return time.perf_counter() - start, epochs * len(train_set)


def run(quick: bool = False) -> list[Figure]:
    import torch

    train = _template()
    # One intra-op thread for both loops: a batch of 32 rows gains nothing from more, and on
    # a shared 2-core machine OpenMP threads waiting on a descheduled sibling swamp the timing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times, epochs, repeat = (100, 2, 3) if quick else (300, 3, 6)
    template_best = bare_best = 0.0
    template_cpu = bare_cpu = float("inf")
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-train-") as tmp:
        folder = Path(tmp)
        train_csv = folder / "train.csv"
        _repeat_rows(TEMPLATES / "data" / "diabetes.train.csv", train_csv, times)
        saved = {k: os.environ.get(k) for k in ("COLABKIT_DRIVE_DIR", "COLABKIT_PROJECT_DIR")}
        os.environ["COLABKIT_DRIVE_DIR"] = str(folder / "drive")
        os.environ.pop("COLABKIT_PROJECT_DIR", None)
        try:
            # the bundled data as it is: epochs of a few milliseconds, for the record
            with contextlib.redirect_stdout(io.StringIO()):
                small = train.main(["--project", "bench", "--run", "small", "--epochs", "20",
                                    "--early-stop", "21"])
            small_seconds, small_rows = _bare_loop(train, TEMPLATES / "data" / "diabetes.train.csv", 20)
            small_ratio = (small["train_samples"] / small["train_seconds"]) / (small_rows / small_seconds)
            ratios = []
            for attempt in range(repeat):  # pairs in alternating order; noise on a shared machine
                for side in (("template", "bare") if attempt % 2 == 0 else ("bare", "template")):
                    cpu = time.process_time()
                    if side == "template":
                        with contextlib.redirect_stdout(io.StringIO()):
                            summary = train.main([
                                "--project", "bench", "--run", f"run{attempt}", "--train-csv", str(train_csv),
                                "--epochs", str(epochs), "--early-stop", str(epochs + 1),
                            ])
                        template_cpu = min(template_cpu, time.process_time() - cpu)
                        template_rate = summary["train_samples"] / summary["train_seconds"]
                    else:
                        seconds, rows = _bare_loop(train, train_csv, epochs)
                        bare_cpu = min(bare_cpu, time.process_time() - cpu)
                        bare_rate = rows / seconds
                template_best, bare_best = max(template_best, template_rate), max(bare_best, bare_rate)
                ratios.append(template_rate / bare_rate)
        finally:
            torch.set_num_threads(threads)
            from colabkit import _project as project

            project.deactivate()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    rows_per_epoch = summary["train_samples"] // epochs
    per_epoch_extra_ms = (rows_per_epoch / template_best - rows_per_epoch / bare_best) * 1e3
    detail = (f"template {template_best:,.0f} rows/s, bare loop {bare_best:,.0f} rows/s; "
              f"{epochs} epochs of {rows_per_epoch:,} rows (bundled data x{times}), "
              f"{rows_per_epoch / bare_best * 1e3:.0f} ms per bare epoch, template adds "
              f"{per_epoch_extra_ms:.1f} ms per epoch (checkpoint, bar, bookkeeping; best runs), 1 torch thread; "
              f"CPU time of the whole run (data loading and export included), bare / template: "
              f"{bare_cpu / template_cpu:.3f}; on the bundled 283 rows as they are (epochs of "
              f"{small_seconds / 20 * 1e3:.0f} ms) the ratio is {small_ratio:.2f}: per-epoch "
              "checkpoints cost little once an epoch lasts a few seconds")
    # best of each side, like _common.best_time; the median of the pair ratios shows the spread
    detail = (f"best of {repeat} alternating runs each (median of the pair ratios "
              f"{statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}); " + detail)
    return [Figure("template loop / bare loop (training throughput)", template_best / bare_best, 0.97,
                   "higher", detail)]
