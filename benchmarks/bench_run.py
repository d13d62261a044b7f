"""colabkit.Run around a user's loop against the same bare loop, and the cost of a mid-epoch resume.

Throughput: the same model, data (augmented in the Dataset), batch size and
optimizer, trained by (a) a bare PyTorch loop with a shuffling DataLoader,
(b) the loop on `Run` with a checkpoint at the end of every epoch, (c) the
loop on `Run` with `every=` short enough for about four checkpoints an epoch,
and (d) a Lightning Trainer when lightning is importable (checkpointing every
epoch, its default). Each round runs every contender once, in rotated order;
the figure is the median of the per-round ratios (Run / bare), with spread
and N.

Resume cost: a run checkpointed at batch k of an epoch is resumed by a new
`Run`; the Dataset counts what is loaded before the first optimizer step
after the resume. A skip-replay resume would load the k * batch_size
samples already trained on; `Run` must load none of them. The time to that
first step (Run set-up, restore, first batch) is reported against one step.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ._common import Figure

BATCH = 64


def _dataset(rows: int):
    import torch

    import colabkit

    class Augmented(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(rows, 64, generator=g)
            self.y = self.x[:, :8].sum(1)
            self.loaded = []

        def __len__(self):
            return rows

        def __getitem__(self, i):
            self.loaded.append(i)
            g = colabkit.sample_generator(i)
            return self.x[i] + 0.01 * torch.randn(64, generator=g), self.y[i]

    return Augmented()


def _model():
    from torch import nn

    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 1))


def _step(model, optimizer, x, y):
    loss = ((model(x).squeeze(1) - y) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def _bare(data, epochs: int, root: Path) -> float:
    import torch

    torch.manual_seed(0)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, generator=generator)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            _step(model, optimizer, x, y)
    return time.perf_counter() - start


def _on_run(data, epochs: int, root: Path, every: float | None) -> float:
    import torch

    import colabkit

    torch.manual_seed(0)
    run = colabkit.Run("bench", epochs=epochs, root=root, every=every, quiet=True, tensorboard=False)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    run.track(model, optimizer)
    loader = run.loader(data, BATCH)
    start = time.perf_counter()
    for _ in run.epochs():
        model.train()
        for x, y in run.batches(loader):
            loss = _step(model, optimizer, x, y)
            run.log(train_loss=loss)
        run.log(valid_loss=loss)
    return time.perf_counter() - start


def _lightning(data, epochs: int, root: Path) -> float | None:
    try:
        import lightning as L
    except ImportError:
        return None
    import torch

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def training_step(self, batch, index):
            x, y = batch
            return ((self.net(x).squeeze(1) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=str(root),
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(Module(), loader)
    return time.perf_counter() - start


def _spread(ratios: list[float]) -> str:
    return f"median of {len(ratios)} paired ratios, spread {min(ratios):.3f}..{max(ratios):.3f}"


def _resume_cost(rows: int, k: int, root: Path) -> tuple[int, int, float, float]:
    """(samples of done batches loaded again, samples loaded before the first step, seconds to it, one step)."""
    import torch

    import colabkit

    data = _dataset(rows)
    torch.manual_seed(0)
    run = colabkit.Run("resume", epochs=2, root=root, every=None, quiet=True, tensorboard=False)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    run.track(model, optimizer)
    loader = run.loader(data, BATCH)
    step_times = []
    for _ in run.epochs():
        for n, (x, y) in enumerate(run.batches(loader)):
            began = time.perf_counter()
            _step(model, optimizer, x, y)
            step_times.append(time.perf_counter() - began)
            if n + 1 == k:
                run.save()  # the checkpoint a disconnect would resume from
                break
        break
    done = set(data.loaded[: k * BATCH])
    # a new session: Run, model, optimizer, loader, then the first step
    fresh = _dataset(rows)
    first_step = {}
    began = time.perf_counter()
    torch.manual_seed(0)
    again = colabkit.Run("resume", epochs=2, root=root, every=None, quiet=True, tensorboard=False)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    again.track(model, optimizer)
    loader = again.loader(fresh, BATCH)
    for _ in again.epochs():
        for x, y in again.batches(loader):
            _step(model, optimizer, x, y)
            first_step["seconds"] = time.perf_counter() - began
            first_step["loaded"] = list(fresh.loaded)
            break
        break
    reloaded = sum(1 for i in first_step["loaded"] if i in done)
    return reloaded, len(first_step["loaded"]), first_step["seconds"], statistics.median(step_times)


def run(quick: bool = False) -> list[Figure]:
    import torch

    torch.set_num_threads(1)
    rows = 4096 if quick else 16384  # about 0.5 s / 2 s an epoch here
    epochs, rounds = (2, 3) if quick else (3, 5)
    data = _dataset(rows)
    figures = []
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-run-") as tmp:
        base = Path(tmp)
        # one warm-up epoch to size `every` for about four checkpoints an epoch
        epoch_seconds = _bare(data, 1, base) / 1
        every = epoch_seconds / 4 / 60.0
        contenders = {
            "bare": lambda r: _bare(data, epochs, r),
            "run_epoch": lambda r: _on_run(data, epochs, r, None),
            "run_every": lambda r: _on_run(data, epochs, r, every),
        }
        lightning_ok = _lightning(data, 1, base / "lightning-warmup") is not None
        if lightning_ok:
            contenders["lightning"] = lambda r: _lightning(data, epochs, r)
        names = list(contenders)
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_no in range(rounds):
            order = names[round_no % len(names):] + names[: round_no % len(names)]  # rotated
            for name in order:
                data.loaded.clear()
                times[name].append(contenders[name](base / f"{name}-{round_no}"))
        per_epoch_saves = epochs  # and run_every saves about 4x that
        for name, label in (("run_epoch", "Run, a checkpoint per epoch"),
                            ("run_every", "Run, every= ~4 checkpoints an epoch")):
            ratios = [b / r for b, r in zip(times["bare"], times[name])]  # throughput ratio
            figures.append(Figure(
                f"{label}: throughput vs bare loop", statistics.median(ratios), 0.97, "higher",
                f"{_spread(ratios)}; epochs of {epoch_seconds:.2f} s ({rows} rows, batch {BATCH}), "
                f"{epochs} epochs, {per_epoch_saves if name == 'run_epoch' else '~' + str(4 * epochs)} checkpoints"))
        if lightning_ok:
            ratios = [lt / r for lt, r in zip(times["lightning"], times["run_epoch"])]
            figures.append(Figure("Run (per epoch) throughput vs Lightning Trainer", statistics.median(ratios), 0.97,
                                  "higher", _spread(ratios)))
        else:
            figures.append(Figure("Run vs Lightning Trainer: skipped (lightning not importable)", 1.0, 0.0, "higher"))
        k = 10
        reloaded, loaded, to_first, one_step = _resume_cost(rows, k, base / "resume")
        figures.append(Figure(
            f"resume at batch {k}: samples of done batches loaded again", float(reloaded), 0.0, "lower",
            f"{loaded} samples loaded before the first new step (one batch is {BATCH}; a skip-replay would "
            f"load {k * BATCH} more)"))
        figures.append(Figure(
            "resume: time to first step after resume / one step", to_first / one_step, 1e9, "lower",
            f"{to_first * 1000:.1f} ms to the first step (Run set-up, restore, first batch) vs "
            f"{one_step * 1000:.2f} ms a step"))
    return figures
