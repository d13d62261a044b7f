"""Out-of-memory back-off that keeps the optimizer's batch.

accelerate's `find_executable_batch_size` halves the *batch* on CUDA out of
memory, which changes the training (fewer rows per step, more steps, other
results). `MicroBatcher` keeps the batch the optimizer steps on and halves the
*micro-batch* instead: the batch is cut into pieces whose gradients are
accumulated, each weighted by its share of the batch, so the optimizer sees
the gradient of the whole batch whatever fits in memory. The size it settles
on is recorded in the run's state, so a resumed run starts with it.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from .._validate import check_count
from ..errors import ConfigError, OutOfMemoryBackoffError

STATE_KEY = "micro_batch_size"


class MicroBatcher:
    """Forward and backward a batch in micro-batches; halve them on CUDA out of memory.

    Args:
        optimizer: the optimizer whose gradients are accumulated (zeroed before a retry).
        batch_size: rows per optimizer step (this process's share under torchrun).
        size: rows per forward pass: None (the whole batch, halved on OOM), a
            number, or "auto" (probe() finds the largest that fits first).
        run: a colabkit Run: the size settled on is kept in `run.state` and
            comes back on resume.
        quiet: no note when the micro-batch is halved.

    Raises:
        ConfigError: a size or batch_size that is not a positive whole number (or "auto").
    """

    def __init__(self, optimizer: Any, batch_size: int, size: int | str | None = None, *,
                 run: Any = None, quiet: bool = False) -> None:
        check_count(batch_size, "batch_size", 1, "rows per optimizer step, e.g. 32")
        self.optimizer, self.batch_size, self.run, self.quiet = optimizer, batch_size, run, quiet
        self.auto = size == "auto"
        if size is None or self.auto:
            self._size = batch_size
        else:
            if isinstance(size, str):
                raise ConfigError(f"micro-batch size {size!r}: give a number of rows, 'auto' or None.")
            self._size = min(check_count(size, "micro_batch_size", 1, "rows per forward pass, e.g. 8"),
                             batch_size)
        self.probed = False

    @property
    def size(self) -> int:
        """Rows per forward pass now (the smaller of this and a size the run recorded)."""
        if self.run is not None:
            recorded = self.run.state.get(STATE_KEY)
            if recorded is not None and int(recorded) < self._size:
                self._size = int(recorded)
                self.probed = True
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        self._size = int(value)
        if self.run is not None:
            self.run.state[STATE_KEY] = self._size

    @property
    def steps(self) -> int:
        """Accumulation steps per batch of `batch_size` rows."""
        return math.ceil(self.batch_size / self.size)

    def backward(self, loss_of: Callable[..., Any], *tensors: Any, no_sync: Callable[[], Any] | None = None) -> Any:
        """Gradients of the batch's mean loss, computed `size` rows at a time.

        Call it where `loss.backward()` would go, after `optimizer.zero_grad()`;
        then `optimizer.step()`. On CUDA out of memory the gradients are zeroed,
        the random state (dropout) is put back, and the batch is tried again in
        halves, so the result is exactly that of a run given the smaller size.

        Args:
            loss_of: computes the mean loss of a micro-batch, e.g.
                `lambda x, y: criterion(model(x), y)`.
            *tensors: the batch (inputs, targets...), cut along their first dimension.
            no_sync: under DDP, `model.no_sync`: only the last micro-batch then
                synchronises gradients.

        Returns:
            The batch's mean loss (a detached tensor).

        Raises:
            OutOfMemoryBackoffError: out of memory even at one row.
        """
        import torch

        if self.auto and not self.probed:
            self.probe(loss_of, *tensors)
        while True:
            snapshot = _rng_snapshot()
            try:
                return self._accumulate(loss_of, tensors, no_sync)
            except torch.cuda.OutOfMemoryError as exc:
                error = exc
            self.optimizer.zero_grad(set_to_none=True)
            _rng_restore(snapshot)
            self._halve(error, len(tensors[0]))  # outside the except block: the failed tensors can be freed

    def map(self, function: Callable[..., Any], *tensors: Any) -> list[Any]:
        """`function` over the batch in micro-batches (e.g. validation), halving on out of memory.

        Args:
            function: called with each micro-batch's pieces of `tensors`.
            *tensors: the batch, cut along the first dimension.

        Returns:
            The results of each call, in order.
        """
        import torch

        while True:
            try:
                size = self.size
                return [function(*parts) for parts in zip(*(t.split(size) for t in tensors))]
            except torch.cuda.OutOfMemoryError as exc:
                error = exc
            self._halve(error, len(tensors[0]))

    def probe(self, loss_of: Callable[..., Any], *tensors: Any) -> int:
        """Halve the micro-batch until one forward and backward pass of `tensors` fits.

        Runs on a copy of the random state and zeroes the gradients afterwards,
        so training after it is exactly a run given that size by hand.

        Returns:
            The size that fits.
        """
        import torch

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            while True:
                try:
                    self._accumulate(loss_of, tensors, None)
                    break
                except torch.cuda.OutOfMemoryError as exc:
                    error = exc
                self.optimizer.zero_grad(set_to_none=True)
                self._halve(error, len(tensors[0]))
        self.optimizer.zero_grad(set_to_none=True)
        self.probed = True
        self.size = self.size  # recorded in the run's state
        return self.size

    def _accumulate(self, loss_of: Callable[..., Any], tensors: tuple, no_sync: Any) -> Any:
        rows = len(tensors[0])
        size = self.size
        if size >= rows:  # the usual case: the whole batch fits
            loss = loss_of(*tensors)
            loss.backward()
            return loss.detach()
        pieces = list(zip(*(t.split(size) for t in tensors)))
        total = None
        for i, parts in enumerate(pieces):
            share = len(parts[0]) / rows
            with no_sync() if (no_sync is not None and i < len(pieces) - 1) else nullcontext():
                loss = loss_of(*parts)
                (loss * share).backward()
            weighted = loss.detach() * share
            total = weighted if total is None else total + weighted
        return total

    def _halve(self, error: BaseException, rows: int) -> None:
        current = min(self.size, rows)
        if current <= 1:
            raise OutOfMemoryBackoffError(
                "CUDA ran out of memory even with one row per forward pass. Use a smaller model, free "
                "GPU memory held by other notebooks (Runtime -> Restart session), or train on the CPU."
            ) from error
        self.size = max(1, current // 2)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the failed attempt's blocks back before the retry
        if not self.quiet:
            print(f"CUDA out of memory: micro-batch now {self.size} rows "
                  f"({self.steps} accumulation steps per batch of {self.batch_size})", flush=True)


def _rng_snapshot() -> tuple:
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _rng_restore(snapshot: tuple) -> None:
    import torch

    cpu, cuda = snapshot
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
