"""Run: a resumable training run around the user's own loop.

The loop stays in the user's script (as in the PyTorch tutorials and
Lightning Fabric's examples); `Run` only supplies the iterators it runs on
and the bookkeeping behind them:

    run = colabkit.Run("hw1", config=CONFIG)
    run.track(model, optimizer)
    loader = run.loader(train_set, batch_size=32)
    for epoch in run.epochs():
        for x, y in run.batches(loader):
            ...                         # forward, loss, backward, step
        run.log(valid_loss=evaluate(model))

`epochs()` starts where the run stood and checkpoints at the end of each
epoch; `batches()` continues an interrupted epoch at its next batch (the
sampler's position is part of the checkpoint, so no batch is loaded again)
and checkpoints every `every` minutes; an interrupted cell (KeyboardInterrupt)
is saved first, then re-raised. Everything restored (weights, optimizer,
scheduler, GradScaler, every RNG, the position, early stopping and the
user's own `run.state`) is plain data in one verified checkpoint file.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _fsio
from .._state import capture_rng_state, restore_rng_state, training_state, unwrap_model
from .._validate import check_count, check_duration
from ..errors import ConfigError, RunConfigError
from . import config as _config
from .data import KeyedDataset, ResumableSampler
from .distributed import Processes
from .early_stop import EarlyStopping
from .metrics import MetricsLog, plain_number, plot_metrics, write_config, write_run_info

RUN_FORMAT = "colabkit.run/1"
DEFAULT_EVERY_MINUTES = 10.0


class RunState(dict):
    """The user's own loop state (best metric, history, counters): saved and restored with the run.

    A dict that also reads and writes keys as attributes (`run.state.history`
    is `run.state["history"]`). Values must be plain data: numbers, strings,
    lists, dicts, tensors.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"run.state has no {name!r} yet; set it first (run.state.{name} = ...) or use "
                f"run.state.get({name!r}, default)."
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


def _raw_rng() -> tuple:
    """The global RNG states as the libraries give them (cheap; taken before every batch)."""
    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_raw_rng(raw: tuple) -> None:
    import numpy as np
    import torch

    py, npy, cpu, cuda = raw
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _plain_rng(raw: tuple | None) -> dict[str, Any]:
    """A raw snapshot in training_state()'s plain-data form (the current one when None)."""
    if raw is None:
        return capture_rng_state()
    now = _raw_rng()
    try:
        _set_raw_rng(raw)
        return capture_rng_state()
    finally:
        _set_raw_rng(now)


def _world() -> Processes:
    import sys as _sys

    if "torch" in _sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = None
            if dist.get_backend() == "nccl":  # nccl collectives need tensors on this process's GPU
                import torch

                device = torch.device("cuda", torch.cuda.current_device())
            return Processes(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
    return Processes()


class Run:
    """A resumable training run: folders, checkpoints, resume, metrics, early stopping.

    Creating it finds the run's newest usable checkpoint and compares its
    configuration with `config`: a change that makes the checkpoint
    unusable stops here, before anything is built, with one message naming
    the changed keys and the two ways on (`fresh=True` or a new run name);
    other changes are applied with a one-line note.

    Args:
        name: the run's name: folders checkpoints/<name>, outputs/<name> and
            logs/<name> of the project.
        config: the run's settings as plain data (a dict, dataclass or argparse
            Namespace), stored as logs/<name>/config.json and in each checkpoint.
        structural: config keys that make a checkpoint unusable when they
            change (e.g. the data columns); the model's shape is checked on
            its own in `track()`.
        epochs: how many epochs the run has in all (default: config["epochs"]);
            a rerun with more continues.
        every: minutes between mid-epoch checkpoints (default 10); None: only
            at the end of each epoch.
        root: the project folder (default: colabkit.active_project(), else the
            current folder).
        fresh: move this run's folders aside (<name>.old-<time>, nothing is
            deleted) and start over.
        seed: seed of the shuffle and of `sample_generator()` (the global RNGs
            are yours to seed, e.g. colabkit.seed_everything(seed)).
        monitor: the `log()` key early stopping and the best checkpoint follow.
        mode: "min" (a loss) or "max" (an accuracy).
        patience: epochs without a better `monitor` before stopping; None: never.
        keep_last: checkpoints kept, besides the best one.
        tensorboard: also write TensorBoard events (when the package is installed).
        quiet: print nothing (notes and errors still reach you through exceptions).

    Raises:
        RunConfigError: the configuration changed so that the checkpoint cannot be resumed.
        ConfigError: a bad argument (name, epochs, every, mode, patience...).
    """

    def __init__(self, name: str = "train", *, config: Any = None, structural: Any = (), epochs: int | None = None,
                 every: float | None = DEFAULT_EVERY_MINUTES, root: str | os.PathLike[str] | None = None,
                 fresh: bool = False, seed: int = 0, monitor: str = "valid_loss", mode: str = "min",
                 patience: int | None = None, keep_last: int = 3, tensorboard: bool = True,
                 quiet: bool = False) -> None:
        # the public name: colabkit._checkpoint is private (and being split up)
        from .. import CheckpointManager

        self.name = _fsio.safe_component(name, "run name", "use a name like 'hw1' or 'resnet-lr3e-4'")
        self.config = _config.plain_config(config)
        self.structural = [structural] if isinstance(structural, str) else list(structural)
        for key in self.structural:
            if not isinstance(key, str):
                raise ConfigError(f"structural lists config keys (strings), got {key!r}.")
        if epochs is None:
            epochs = self.config.get("epochs")
        if epochs is None:
            raise ConfigError("Run() needs the number of epochs: Run(..., epochs=20), or an 'epochs' key in config.")
        self.total_epochs = check_count(epochs, "epochs", 1, "e.g. epochs=20")
        self.every = None if every is None else check_duration(every, "every", "minutes")
        self.seed = check_count(seed, "seed", 0, "any non-negative integer")
        self.monitor, self.mode = monitor, mode
        self.stopper = EarlyStopping(patience, mode=mode)
        self.quiet = quiet
        self.processes = _world()
        self.main = self.processes.main
        self.state = RunState()

        project_root = self._project_root(root)
        self.root = project_root
        self.checkpoint_dir = project_root / "checkpoints" / self.name
        self.output_dir = project_root / "outputs" / self.name
        self.log_dir = project_root / "logs" / self.name
        if fresh and self.main:
            self._move_aside()
        if self.main:
            for folder in (self.checkpoint_dir, self.output_dir, self.log_dir):
                folder.mkdir(parents=True, exist_ok=True)
        self.processes.barrier()

        self.checkpoints = CheckpointManager(self.checkpoint_dir, keep_last=keep_last, monitor=mode,
                                             async_save=True)
        self.metrics = MetricsLog(self.log_dir, write=self.main, tensorboard=tensorboard)
        # where the loop stands
        self.epoch = 0             # epochs done (= the 0-based number of the epoch in progress)
        self.batch = 0             # batches done in the epoch in progress
        self.position = 0          # samples done in the epoch in progress (where its sampler goes on)
        self.step = 0              # batches done in all
        self.seconds = 0.0         # training time in all, over every session
        self.resumed = False
        self.changed: dict[str, tuple[Any, Any]] = {}
        self._payload: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._tracked: dict[str, Any] = {}
        self._in_epoch = False
        self._in_batches = False
        self._pending = False       # a batch was handed out and its end not yet seen
        self._boundary_rng: tuple | None = None
        self._steps_seen = 0        # optimizer.step() calls (a post-hook counts them)
        self._steps_at_yield = 0
        self._epoch_row: dict[str, Any] = {}
        # the epoch's step metrics, for its row's means: exact sums (Python floats, added in step order, so
        # a resume that restores them from the checkpoint goes on with the same additions) and the step rows
        # not yet added (their tensors are turned into numbers only at a save or the epoch's end, no sync per step)
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._unsummed: list[dict[str, Any]] = []
        self._last_means: dict[str, float] = {}
        self._session_start: float | None = None
        self._last_save = time.monotonic()
        self._interrupted = False
        self._saved_interrupt = False
        self._stop_requested = False  # a SIGINT arrived during a step: stop at the next batch
        self._defer_interrupt = False
        self._stopped_epoch: int | None = None
        self._config_written = False
        self._load_latest()

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _project_root(root: Any) -> Path:
        if root is not None:
            return Path(root).expanduser().absolute()
        from .._project import active_project

        project = active_project()
        return project.root if project is not None else Path.cwd()

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for folder in (self.checkpoint_dir, self.output_dir, self.log_dir):
            if not folder.exists():
                continue
            aside, n = folder.with_name(f"{folder.name}.old-{stamp}"), 1
            while aside.exists():
                n += 1
                aside = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
            folder.rename(aside)  # nothing is deleted: the old run stays recoverable
            moved.append(str(aside))
        if moved:
            self._say(f"fresh: run {self.name!r} starts over; the earlier one was moved to " + ", ".join(moved))

    def _say(self, message: str) -> None:
        if self.main and not self.quiet:
            print(message, flush=True)

    def _load_latest(self) -> None:
        if not self.checkpoints.checkpoints():
            return
        payload = self.checkpoints.load()  # the newest usable one (unusable ones are skipped, warned)
        run = payload.get("extra", {}).get("run") if isinstance(payload, dict) else None
        if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
            raise RunConfigError(
                f"{self.checkpoint_dir} holds checkpoints that colabkit.Run did not write, so run "
                f"{self.name!r} cannot resume from them. {_config.ways_on(self.name)}"
            )
        saved_config = run.get("config") or {}
        self.changed = _config.changes(saved_config, self.config)
        structural = set(self.structural) | set(run.get("structural") or [])
        blocking = {k: v for k, v in self.changed.items() if k in structural}
        if blocking:
            raise _config.refuse(self.name, "settings it was trained with changed ("
                                 + ", ".join(blocking) + " cannot change within a run)", self.changed)
        self._payload = payload
        self.epoch, self.batch, self.step = int(run["epoch"]), int(run["batch"]), int(run["step"])
        self.position = int(run.get("position", 0))
        self.seconds = float(run.get("seconds", 0.0))
        self.stopper.load_state_dict(run.get("early_stop") or {})
        self._stopped_epoch = run.get("stopped_epoch")
        self.state.update(payload.get("extra", {}).get("user") or {})
        self.metrics.restore(int(run.get("rows", 0)), self.step, run.get("tail_start"), run.get("tail"))
        means = run.get("means") or {}
        self._sums = {str(k): float(v) for k, v in (means.get("sums") or {}).items()}
        self._counts = {str(k): int(v) for k, v in (means.get("counts") or {}).items()}
        self._pending_rng = payload.get("rng")
        self.resumed = True
        where = (f"after epoch {self.epoch}" if self.batch == 0
                 else f"in epoch {self.epoch + 1}, after batch {self.batch}")
        if self.finished:
            why = (f"stopped early after epoch {self.epoch}: no better {self.monitor} in "
                   f"{self.stopper.patience} epochs" if self.stopper.stopped else f"{self.epoch} of "
                   f"{self.total_epochs} epochs done")
            if self.changed:
                self._say(f"Run {self.name!r} is complete ({why}), and its configuration has changed since: "
                          f"{_config.describe(self.changed)}. Nothing was trained. {_config.ways_on(self.name)}")
            else:
                more = "" if self.stopper.stopped else ", or give more epochs to continue"
                self._say(f"Run {self.name!r} is complete ({why}); nothing to do. Use fresh=True (--fresh) "
                          f"to start over{more}.")
            return
        self._say(f"Run {self.name!r} resumes {where} (step {self.step}) from {Path(payload_path(self)).name}.")

    # ------------------------------------------------------------------ public state

    @property
    def finished(self) -> bool:
        """True when the run has done all its epochs or stopped early."""
        return self.stopper.stopped or (self.epoch >= self.total_epochs and self.batch == 0)

    @property
    def epoch_means(self) -> dict[str, float]:
        """The mean of each metric logged inside `batches()`, over the steps of the epoch in progress.

        What the course prints per epoch (`train loss X  valid loss Y`): after
        the epoch's batches, `run.epoch_means["train_loss"]` is the mean of every
        step's `run.log(train_loss=...)` in that epoch, also when the epoch was
        interrupted and resumed mid-way (the sums travel in the checkpoint). The
        epoch's row in metrics.csv gets these means too (unless the epoch's own
        `run.log()` gives that key). Between epochs: the last epoch's means.
        Under torchrun each process averages its own steps.

        Returns:
            {metric name: mean} (numbers only; strings logged are left out).
        """
        self._add_up()
        if not self._counts:
            return dict(self._last_means)
        return {key: self._sums[key] / count for key, count in self._counts.items()}

    @property
    def stopped_early(self) -> bool:
        """True once early stopping has ended the run."""
        return self.stopper.stopped

    @property
    def best(self) -> float | None:
        """The best value of `monitor` so far (None before the first epoch's log)."""
        return self.stopper.best

    @property
    def best_epoch(self) -> int | None:
        """The epoch (1-based) of the best `monitor` value."""
        return self.stopper.best_epoch

    # ------------------------------------------------------------------ tracking

    def track(self, model: Any, optimizer: Any = None, scheduler: Any = None, scaler: Any = None) -> None:
        """Name the objects the run saves, and restore them when the run resumes.

        Call it once, after building them the same way as before (the model on
        its device). A checkpoint whose weights no longer fit the model (a
        changed layer size) stops here with one message and the ways on; the
        optimizer's learning rate and other settings as now given apply when
        the configuration changed, otherwise the saved ones (a scheduler's)
        continue. The RNGs are restored when the loop continues, so code
        between here and the loop may draw random numbers as before.

        Args:
            model: the module (DDP / compiled wrappers are unwrapped for saving).
            optimizer: its optimizer.
            scheduler: a learning-rate scheduler.
            scaler: a torch.amp GradScaler.

        Raises:
            RunConfigError: the checkpoint does not fit the model or optimizer.
        """
        self._tracked = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        if optimizer is not None and hasattr(optimizer, "register_step_post_hook"):
            optimizer.register_step_post_hook(self._count_step)
        if self._payload is None:
            self._write_config()
            return
        state = self._payload
        bare = unwrap_model(model)
        problem = _config.shape_mismatch(state["model"], bare.state_dict())
        if problem:
            raise _config.refuse(self.name, problem, self.changed)
        fresh_groups = ([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
                        if optimizer is not None else [])
        try:
            bare.load_state_dict(state["model"])
            for key, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
                if target is None:
                    continue
                if state.get(key) is None:
                    raise ValueError(f"the checkpoint holds no {key} state, but a {key} is tracked now")
                target.load_state_dict(state[key])
        except (ValueError, RuntimeError, KeyError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _config.refuse(self.name, f"the saved state does not fit what is tracked now ({detail})",
                                 self.changed) from None
        if optimizer is not None and self.changed:
            for group, fresh in zip(optimizer.param_groups, fresh_groups):
                for key, value in fresh.items():
                    if key != "initial_lr":
                        group[key] = value
        self._payload = None  # restored; the RNG follows when the loop continues
        if self.changed and not self.finished:
            self._say(f"note: configuration changed since the checkpoint, applied: {_config.describe(self.changed)}")
        self._write_config()

    def _write_config(self) -> None:
        """logs/<run>/config.json: the configuration the run trains with (not a refused or unused one)."""
        if self.main and not self._config_written and not (self.finished and self.changed):
            write_config(self.log_dir, self.config)
            self._config_written = True

    def _count_step(self, *args: Any, **kwargs: Any) -> None:
        self._steps_seen += 1

    # ------------------------------------------------------------------ data

    def loader(self, dataset: Any, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
               num_workers: int = 0, **kwargs: Any) -> Any:
        """A DataLoader whose order is part of the run's state, so an epoch resumes mid-way.

        Shuffled from (seed, epoch) by a ResumableSampler (each process its
        own share under torchrun, like DistributedSampler); every sample is
        loaded with its (seed, epoch, index) known, so `sample_generator()`
        inside `__getitem__` gives the same augmentation in every worker and
        after a resume.

        Args:
            dataset: a map-style Dataset (`__len__` and `__getitem__`).
            batch_size: rows per batch (per process under torchrun).
            shuffle: reshuffle every epoch (False for a fixed order).
            drop_last: drop the last incomplete batch.
            num_workers: DataLoader worker processes (kept alive between epochs).
            **kwargs: other DataLoader arguments (pin_memory, collate_fn,
                prefetch_factor...); not sampler, batch_sampler or generator.

        Returns:
            A torch DataLoader to iterate with `run.batches(loader)`.

        Raises:
            ConfigError: a sampler or batch_sampler was given, or a bad batch size.
        """
        import torch
        from torch.utils.data import DataLoader

        for key in ("sampler", "batch_sampler", "shuffle", "generator"):
            if key in kwargs:
                raise ConfigError(f"run.loader() chooses the {key} itself (that is how it resumes mid-epoch); "
                                  f"drop {key}=... from the call.")
        check_count(batch_size, "batch_size", 1, "rows per batch, e.g. 32")
        check_count(num_workers, "num_workers", 0, "0 loads data in the main process")
        sampler = ResumableSampler(len(dataset), seed=self.seed, shuffle=shuffle,
                                   num_replicas=self.processes.world, rank=self.processes.rank, keyed=True)
        generator = torch.Generator()  # its own: making an iterator leaves the global RNG alone
        generator.manual_seed(self.seed)
        if num_workers > 0:
            kwargs.setdefault("persistent_workers", True)
        return DataLoader(KeyedDataset(dataset), batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=num_workers, generator=generator, **kwargs)

    # ------------------------------------------------------------------ the loop

    def epochs(self) -> Iterator[int]:
        """The epochs still to train (0-based), starting where the run stood.

        Empty when the run is finished. After each epoch (when the loop comes
        back for the next one) the epoch's row goes into metrics.csv, early
        stopping decides, and a checkpoint is saved. KeyboardInterrupt (the
        cell's stop button) saves a checkpoint first.

        Yields:
            The number of the epoch in progress (0 for the first).
        """
        if self.finished:
            return
        if self._tracked.get("model") is None:
            raise ConfigError("Call run.track(model, optimizer, ...) before `for epoch in run.epochs():`, so the "
                              "run knows what to save and restore.")
        self._write_config()
        handler = self._catch_interrupt()
        self._session_start = time.monotonic()
        try:
            while not self.finished:
                self._in_epoch = True
                self._epoch_row = {}
                if self.batch == 0:
                    self._continue_rng()
                yield self.epoch
                self._end_epoch()
            self.checkpoints.wait()
            if self.stopper.stopped:
                self._say(f"Early stop: no better {self.monitor} in {self.stopper.patience} epochs "
                          f"(best {self.stopper.best:.6g} at epoch {self.stopper.best_epoch}).")
        except GeneratorExit:
            self._save_if_interrupted()
            raise
        finally:
            self._in_epoch = False
            self._restore_interrupt(handler)
            self.metrics.close()

    def batches(self, loader: Any) -> Iterator[Any]:
        """The loader's batches for the epoch in progress, continuing an interrupted epoch.

        Checkpoints (between two batches) every `every` minutes. The batches
        already trained on before a resume are not loaded again.

        Args:
            loader: a DataLoader made by `run.loader()`.

        Yields:
            The batches, as the loader gives them.

        Raises:
            ConfigError: used outside `for epoch in run.epochs()`, or on a loader not made by run.loader().
        """
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, ResumableSampler):
            raise ConfigError("run.batches() needs a DataLoader made by run.loader(...) (its order is part of "
                              "the checkpoint); build the training loader with run.loader(dataset, batch_size).")
        if not self._in_epoch:
            raise ConfigError("run.batches(loader) goes inside `for epoch in run.epochs():`.")
        batch_size = loader.batch_size
        # the position is kept in samples: a batch size changed on a rerun goes on at the same sample
        sampler.set_epoch(self.epoch, self.position)
        if self.batch:
            self._continue_rng()
        self._batch_size = batch_size
        self._in_batches = True
        self._pending = False
        self._boundary_rng = None
        self._defer_interrupt = True  # from here to the end of the batches, a stop waits for a boundary
        iterator = iter(loader)
        try:
            while True:
                if self._pending:  # the batch handed out last is done
                    self._pending = False
                    self.batch += 1
                    self.position += batch_size
                    self.step += 1
                    if self._stop_requested:  # the stop button, pressed during that step
                        self._stop_at_boundary()
                    if self._save_due():
                        self._save(metric=None)
                try:
                    batch = next(iterator)
                except StopIteration:
                    if self._stop_requested:
                        self._stop_at_boundary()
                    self._defer_interrupt = False
                    # where the epoch's validation starts: an interrupt during it resumes from here
                    self._boundary_rng = _raw_rng()
                    break
                self._pending = True
                self._steps_at_yield = self._steps_seen
                yield batch
        except GeneratorExit:
            self._save_if_interrupted()
            raise
        finally:
            self._in_batches = False
            self._defer_interrupt = False

    def _stop_at_boundary(self) -> None:
        """Save exactly between two batches, then stop as the interrupt asked."""
        self._interrupted = self._saved_interrupt = True
        path = self._save(metric=None)
        self.checkpoints.wait()
        self._say(f"Interrupted: saved {path.name}; rerun the same code to continue from there.")
        raise KeyboardInterrupt

    def log(self, **metrics: Any) -> bool:
        """Record metrics: inside `batches()` a step row, after it the epoch's row.

        Values may be numbers or one-element tensors (converted when written,
        not at every step). The epoch row gets lr, seconds and (on CUDA) peak
        GPU memory too. Early stopping follows `monitor` when it is given.

        Args:
            **metrics: e.g. train_loss=loss, valid_loss=0.31, valid_accuracy=0.92.

        Returns:
            True when this epoch's `monitor` value is a new best (save your best
            outputs then); False otherwise, and for step rows.
        """
        # tensors are kept detached (no autograd graph held) and turned into numbers when written
        metrics = {k: (v.detach() if hasattr(v, "detach") else v) for k, v in metrics.items()}
        if self._in_batches:
            row = {"epoch": self.epoch + 1, "step": self.step + 1, "kind": "step", **metrics}
            self.metrics.add(row)
            self._unsummed.append(row)  # added up at the next save or the epoch's end
            return False
        self._epoch_row.update(metrics)
        if self.monitor in metrics:
            value = metrics[self.monitor]
            number = float(value.item() if hasattr(value, "item") else value)
            return not math.isnan(number) and self.stopper.is_better(number)
        return False

    def save(self) -> Path:
        """Checkpoint now (between two steps) and wait until it is on disk; returns its path."""
        path = self._save(metric=None, between_steps=True)
        self.checkpoints.wait()
        return path

    # ------------------------------------------------------------------ internals

    def _add_up(self) -> None:
        """Add the step rows logged since the last call to the epoch's sums, in step order."""
        for row in self._unsummed:
            for key, value in row.items():
                if key in ("epoch", "step", "kind"):
                    continue
                number = row[key] = plain_number(value)  # converted once (metrics.csv then writes it as is)
                if isinstance(number, (int, float)):
                    self._sums[key] = self._sums.get(key, 0.0) + number
                    self._counts[key] = self._counts.get(key, 0) + 1
        self._unsummed.clear()

    def _continue_rng(self) -> None:
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None

    def _save_due(self) -> bool:
        due = self.every is not None and time.monotonic() - self._last_save >= self.every * 60.0
        return self.processes.rank0_decision(due) if self.processes.distributed else due

    def _elapsed(self) -> float:
        return self.seconds + (time.monotonic() - self._session_start if self._session_start else 0.0)

    def _end_epoch(self) -> None:
        if self._in_batches or self._pending:
            return
        self.epoch += 1
        self.batch = 0
        self.position = 0
        means = self.epoch_means if self._counts or self._unsummed else {}
        self._last_means = means
        self._sums, self._counts = {}, {}
        row = {"epoch": self.epoch, "step": self.step, "kind": "epoch", **means, **self._epoch_row}
        optimizer = self._tracked.get("optimizer")
        if optimizer is not None and optimizer.param_groups:
            row["lr"] = optimizer.param_groups[0].get("lr")
        row["seconds"] = round(self._elapsed(), 3)
        peak = _peak_gpu_mb()
        if peak is not None:
            row["peak_gpu_mb"] = peak
        self.metrics.add(row)
        metric = None
        if self.monitor in self._epoch_row:
            metric = self._epoch_row[self.monitor]
            self.stopper.update(metric, self.epoch)
            stop = self.processes.rank0_decision(self.stopper.stopped)
            self.stopper.stopped = stop
            if stop:
                self._stopped_epoch = self.epoch
        self._epoch_row = {}
        self._boundary_rng = None
        self._save(metric=metric)

    def _save(self, metric: Any, between_steps: bool = False) -> Path:
        tracked = self._tracked
        if tracked.get("model") is None:
            raise ConfigError("Call run.track(model, optimizer, ...) before the loop, so the run knows what to save.")
        batch, step, rng, position = self.batch, self.step, None, self.position
        if between_steps:  # a save asked for from inside the loop's body (interrupt, run.save())
            if self._pending:  # only after a second interrupt: stopped inside a step (best effort)
                if self._steps_seen > self._steps_at_yield:
                    batch, step = batch + 1, step + 1  # the batch handed out is done: its step ran
                    position += self._batch_size
            elif self._in_epoch and not self._in_batches:
                rng = self._boundary_rng  # after the epoch's batches: continue from their end
        seconds = self._elapsed()
        self._add_up()
        rows = len(self.metrics)
        # metrics.csv is rewritten at the end of each epoch (and at most once a minute inside one);
        # the rows after its last write travel in the checkpoint, so a resume loses none of them
        end_of_epoch = metric is not None or not self._in_batches
        if self.main and (end_of_epoch or time.monotonic() - self.metrics.last_write >= 60.0):
            self.metrics.flush()
        tail_start, tail = self.metrics.tail()
        run = {
            "format": RUN_FORMAT, "epoch": self.epoch, "batch": batch, "position": position, "step": step,
            "seconds": seconds,
            "rows": rows, "tail_start": tail_start, "tail": tail, "config": self.config,
            "means": {"sums": dict(self._sums), "counts": dict(self._counts)},
            "structural": self.structural,
            "early_stop": self.stopper.state_dict(), "stopped_epoch": self._stopped_epoch,
            "name": self.name,
        }
        state = training_state(tracked["model"], tracked.get("optimizer"), tracked.get("scheduler"),
                               tracked.get("scaler"), run=run, user=dict(self.state))
        if rng is not None:
            state["rng"] = _plain_rng(rng)
        path = self.checkpoints.save(state, epoch=self.epoch, step=step, metric=metric)
        self._last_save = time.monotonic()
        if self.main and end_of_epoch:
            write_run_info(self.log_dir, {
                "name": self.name, "monitor": self.monitor, "mode": self.mode, "patience": self.stopper.patience,
                "best": self.stopper.best, "best_epoch": self.stopper.best_epoch,
                "stopped_epoch": self._stopped_epoch, "epochs": self.epoch, "step": step,
                "total_epochs": self.total_epochs,
            })
        return path

    def _save_if_interrupted(self) -> None:
        if self._interrupted and not self._saved_interrupt and self._tracked.get("model") is not None:
            self._saved_interrupt = True
            path = self._save(metric=None, between_steps=True)
            self.checkpoints.wait()
            self._say(f"Interrupted: saved {path.name}; rerun the same code to continue from there.")

    def _catch_interrupt(self) -> Any:
        """Note a SIGINT (the notebook's stop button) before it becomes KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGINT)

        def note_interrupt(signum: int, frame: Any) -> None:
            if previous == signal.SIG_IGN:
                return
            if self._defer_interrupt and not self._stop_requested:
                # inside a training step: finish it, save at the next batch, then stop (exact)
                self._stop_requested = True
                if self.main:
                    print("Stopping after this step (interrupt again to stop at once)...", flush=True)
                return
            self._interrupted = True
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGINT, note_interrupt)
        except ValueError:  # pragma: no cover - not the main interpreter
            return None
        self._interrupted = self._saved_interrupt = self._stop_requested = False
        return previous

    @staticmethod
    def _restore_interrupt(previous: Any) -> None:
        if previous is not None:
            try:
                signal.signal(signal.SIGINT, previous)
            except (ValueError, TypeError):  # pragma: no cover
                pass

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self._interrupted = True
            self._save_if_interrupted()
        self.checkpoints.wait()

    # ------------------------------------------------------------------ after training

    def best_checkpoint(self) -> Path | None:
        """The checkpoint with the best `monitor` value (else the newest), or None."""
        return self.checkpoints.best() or self.checkpoints.latest()

    def load_best(self, model: Any) -> Path | None:
        """Put the best checkpoint's weights into `model` (e.g. before test predictions).

        Args:
            model: a module built like the tracked one.

        Returns:
            The checkpoint used, or None when there is none yet.
        """
        path = self.best_checkpoint()
        if path is None:
            return None
        state = self.checkpoints.load(path)
        unwrap_model(model).load_state_dict(state["model"])
        return path

    def plot(self, path: str | os.PathLike[str] | None = None, *others: Any, metric: str | None = None) -> Path | None:
        """The loss curve from metrics.csv as outputs/<run>/loss_curve.png (rank 0 only).

        Args:
            path: where to write the PNG (default outputs/<run>/loss_curve.png).
            *others: other runs (Run objects or logs folders) to overlay.
            metric: one column to draw instead of the losses.

        Returns:
            The PNG's path; None on ranks other than 0, or when matplotlib is
            missing (a note says how to install it).
        """
        if not self.main:
            return None
        from ..errors import MissingDependencyError

        target = Path(path) if path is not None else self.output_dir / "loss_curve.png"
        try:
            return plot_metrics(self, *others, path=target, metric=metric, title=f"Run {self.name}")
        except MissingDependencyError as exc:
            self._say(f"note: {exc}")
            return None

    def __repr__(self) -> str:
        return (f"Run({self.name!r}, epoch={self.epoch}/{self.total_epochs}, batch={self.batch}, "
                f"step={self.step}, root={str(self.root)!r})")


def payload_path(run: Run) -> Path:
    """The newest checkpoint's path (for messages)."""
    found = run.checkpoints.checkpoints()
    return found[-1] if found else run.checkpoint_dir


def _peak_gpu_mb() -> float | None:
    if "torch" not in sys.modules:
        return None
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)
