"""Asynchronous saving: a CPU snapshot of the state, written by one background thread.

`Snapshots.copy` copies every tensor to CPU memory so that training may
change the originals at once. memory="reuse" keeps those buffers and copies
the next state into them (no allocation: the loop waits only for a memcpy,
but one state's worth of RAM stays held); memory="free" drops them as soon as
the write is done (the extra copy exists only while a write is in flight).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

ASYNC_MEMORY = ("reuse", "free")


class Snapshots:
    """CPU copies of states for the background writer (see the module docstring for `memory`)."""

    def __init__(self, memory: str = "reuse") -> None:
        self.memory = memory
        self._pool: dict[tuple, Any] = {}

    def copy(self, state: Any) -> Any:
        new_pool: dict[tuple, Any] = {}
        snapshot = cpu_copy(state, self._pool, new_pool)
        self._pool = new_pool if self.memory == "reuse" else {}
        return snapshot

    def clear(self) -> None:
        """Give the kept buffers back (the next copy allocates afresh)."""
        self._pool = {}


def release_memory() -> None:
    """Hand the freed snapshot's pages back to the OS.

    glibc keeps freed heap memory for reuse, so without this memory="free"
    held as much as "reuse" (the async benchmark's held-memory figure).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class BackgroundWriter:
    """One write at a time in a thread; its error is kept for the caller's next call."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.message: str | None = None  # the last failure, for other ranks

    def start(self, work: Callable[[], None]) -> None:
        self.message = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="colabkit-checkpoint-writer")
        self._thread.start()

    def fail(self, error: BaseException) -> None:
        """Record a failure found before any thread started (reported like a thread's)."""
        self._error, self.message = error, str(error)

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's next call
            self._error, self.message = exc, str(exc)

    def join(self) -> None:
        """Wait for the write in flight (its error stays recorded)."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def finish(self) -> None:
        """Wait, then raise the recorded error (once)."""
        self.join()
        error, self._error = self._error, None
        if error is not None:
            raise error


def cpu_copy(obj: Any, pool: dict[tuple, Any], new_pool: dict[tuple, Any],
             memo: dict[int, Any] | None = None, key: tuple = ()) -> Any:
    """A deep copy with every tensor copied to CPU memory (tied tensors stay tied).

    Tensors are copied into the buffers of the previous snapshot (`pool`, by
    position in the structure) when shape and dtype match: no fresh allocation,
    so the caller is blocked for little more than a memcpy.
    """
    import torch

    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            source = obj.detach()
            buffer = pool.get(key)
            if source.layout != torch.strided or type(source) is not torch.Tensor:
                buffer = source.to("cpu", copy=True)  # sparse, subclasses: a plain copy
            else:
                if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
                    buffer = torch.empty(source.shape, dtype=source.dtype, device="cpu")
                copy_into(buffer, source)
            new_pool[key] = buffer
            memo[id(obj)] = buffer
        return memo[id(obj)]
    if isinstance(obj, dict):
        return type(obj)((k, cpu_copy(v, pool, new_pool, memo, (*key, k))) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v, pool, new_pool, memo, (*key, i)) for i, v in enumerate(obj))
    if isinstance(obj, set):
        return {cpu_copy(v, {}, {}, memo) for v in obj}
    return obj


def copy_into(buffer: Any, source: Any) -> None:
    """buffer[...] = source, for a contiguous CPU `buffer` of the same shape and dtype.

    A contiguous CPU source goes through one single-threaded memcpy: torch's
    multi-threaded copy stalls badly when the few cores are busy (Colab has
    two), and the training loop waits for this copy.
    """
    import torch

    if source.device.type == "cpu" and source.is_contiguous() and source.numel() > 0:
        try:
            import numpy as np

            np.copyto(buffer.view(-1).view(torch.uint8).numpy(), source.view(-1).view(torch.uint8).numpy())
            return
        except (RuntimeError, TypeError, ValueError):  # conj/neg views and the like
            pass
    buffer.copy_(source)
