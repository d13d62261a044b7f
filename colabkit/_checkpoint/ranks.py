"""torch.distributed coordination: rank 0 writes, every rank learns the path and the outcome.

Collectives run in the caller's thread only (never in the writer thread, where
they would interleave with the training loop's own).
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import CheckpointWriteError


def current() -> Any:
    """torch.distributed when a process group is running (more than one rank), else None."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def is_writer(dist: Any) -> bool:
    return dist is None or dist.get_rank() == 0


def share(dist: Any, value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    box = [value if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def send_outcome(dist: Any, message: str | None) -> None:
    """Rank 0: tell the others whether the write failed (its message) or not (None)."""
    dist.broadcast_object_list([message], src=0)


def receive_outcome(dist: Any) -> None:
    """Ranks other than 0: raise if rank 0 reports that its write failed."""
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CheckpointWriteError(f"Rank 0 could not write the checkpoint: {box[0]}")


def barrier(dist: Any) -> None:
    if dist is not None:
        dist.barrier()
