"""torchrun / DistributedDataParallel set-up, all-reduce of metrics and rank-0 decisions.

`init_distributed()` joins the process group torchrun prepared (gloo on CPU,
nccl on CUDA) and returns a `Processes` object; in a plain `python train.py`
(world size 1) every helper is a cheap no-op, so one script serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Processes:
    """This process's place in a (possibly distributed) run.

    Attributes:
        rank: this process's number (0 for a single process).
        world: how many processes train together.
        device: the torch.device this process trains on.
    """

    rank: int = 0
    world: int = 1
    device: Any = field(default=None)

    @property
    def distributed(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on rank 0, which alone prints and writes outputs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (no-op for one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        """Numbers added up over all processes (e.g. loss sum and row count of validation).

        Args:
            *values: this process's numbers.

        Returns:
            The sums, as Python floats, the same on every process.
        """
        import torch

        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor.tolist()

    def mean(self, total: float, count: float) -> float:
        """The mean over all processes of a sum and a count each process holds (e.g. loss * rows, rows)."""
        total, count = self.sum(total, count)
        return total / count if count else float("nan")

    def smallest(self, value: int) -> int:
        """The smallest value any process has (e.g. the micro-batch all of them can afford)."""
        if not self.distributed:
            return int(value)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([int(value)], device=self._collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def rank0_decision(self, flag: bool) -> bool:
        """Rank 0's decision, sent to every process, so that they all stop (or save) together."""
        if not self.distributed:
            return bool(flag)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([int(bool(flag))], device=self._collective_device())
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def wrap(self, model: Any, **ddp_kwargs: Any) -> Any:
        """The model in DistributedDataParallel under torchrun; the model itself otherwise.

        Args:
            model: a module already on `self.device`.
            **ddp_kwargs: passed to DistributedDataParallel (e.g. broadcast_buffers=False).

        Returns:
            The module to train with (checkpoints store the unwrapped one).
        """
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        on_cuda = self.device is not None and getattr(self.device, "type", "cpu") == "cuda"
        return DistributedDataParallel(model, device_ids=[self.device.index] if on_cuda else None, **ddp_kwargs)

    def close(self) -> None:
        """Leave the process group (call once at the end of the script)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _collective_device(self) -> Any:
        import torch.distributed as dist

        if self.distributed and dist.get_backend() == "nccl":
            return self.device
        return "cpu"


def init_distributed(device: str | None = None) -> Processes:
    """Join torchrun's process group when there is one, and pick the device.

    Under `torchrun --nproc_per_node=N train.py` (WORLD_SIZE > 1) each process
    takes the GPU of its LOCAL_RANK with the nccl backend, or the CPU with gloo
    when there is no GPU or `device="cpu"`. In a single process it only picks
    the device (`colabkit.device(device)`).

    Args:
        device: "cpu", "cuda", "cuda:1", "mps" or None (the best available).

    Returns:
        The `Processes` of this process: rank, world size, device and collective helpers.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from .._status import device as pick_device

        return Processes(device=pick_device(device))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and (device or "cuda").startswith("cuda"):
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), "nccl"
    else:
        chosen, backend = torch.device("cpu"), "gloo"  # gloo: the CPU backend
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Processes(rank=dist.get_rank(), world=dist.get_world_size(), device=chosen)
