"""The data order as state: a resumable sampler and per-sample random seeds.

A DataLoader's order is reproducible from a seed, but resuming inside an epoch
needs more: the position in that epoch's order (so the batches already trained
on are neither loaded again nor skipped by replaying them), and augmentation
whose randomness does not depend on which worker process drew a sample, or
when. `ResumableSampler` keeps (seed, epoch, position); `sample_generator()`
gives `Dataset.__getitem__` a torch.Generator seeded from (seed, epoch, index).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_MASK64 = (1 << 64) - 1
# the (seed, epoch) of the sample being loaded in this process (a DataLoader worker or the main one)
_current = threading.local()


def _mix(*values: int) -> int:
    """SplitMix64 over the values: nearby inputs give unrelated 63-bit seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1  # torch.Generator.manual_seed takes any int; keep it non-negative


def sample_seed(index: int | None = None) -> int:
    """A seed for one sample's randomness, from (run seed, epoch, sample index).

    Call it inside `Dataset.__getitem__` of a dataset loaded through
    `Run.loader()`: the same sample in the same epoch gets the same seed whether
    it is loaded by worker 0 or 1, first or last, in an uninterrupted run or
    after a resume. Use it for `random.Random(seed)` or
    `numpy.random.default_rng(seed)`; for torch, `sample_generator()`.

    Args:
        index: the sample's index (the one `__getitem__` was called with).
            Optional inside `Run.loader()`, which knows it; required elsewhere.

    Returns:
        A non-negative integer below 2**63.

    Raises:
        ConfigError: called outside `Run.loader()` without an index.
    """
    current = getattr(_current, "key", None)
    if current is None:
        if index is None:
            raise ConfigError(
                "sample_seed() / sample_generator() without an index only works inside a Dataset "
                "loaded through Run.loader(); pass the index: sample_generator(index)."
            )
        seed, epoch = 0, 0
    else:
        seed, epoch, loaded = current
        if index is None:
            index = loaded
    return _mix(seed, epoch, int(index))


def sample_generator(index: int | None = None) -> torch.Generator:
    """A torch.Generator for one sample's augmentation, seeded from (seed, epoch, index).

    Draw every random choice of `__getitem__` from it (`torch.rand(1,
    generator=g)`, `torch.randint(..., generator=g)`, `torch.randperm(...,
    generator=g)`) instead of the global RNG: then a run killed at any step
    and resumed trains on exactly the same augmented samples as an
    uninterrupted one, with any number of workers.

    Args:
        index: the sample's index; optional inside `Run.loader()` (see `sample_seed`).

    Returns:
        A CPU torch.Generator, freshly seeded.

    Raises:
        ConfigError: called outside `Run.loader()` without an index.
    """
    import torch

    generator = torch.Generator()
    generator.manual_seed(sample_seed(index))
    return generator


class KeyedDataset:
    """The user's map-style Dataset, loaded by (seed, epoch, index) keys from a ResumableSampler.

    It sets the sample context that `sample_generator()` reads, in whichever
    process loads the sample, then returns `dataset[index]`. Attributes of the
    user's dataset are reachable through it.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):  # a plain index (e.g. from a sampler of the user's own)
            return self.dataset[key]
        _current.key = key
        try:
            return self.dataset[key[2]]
        finally:
            _current.key = None

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableSampler:
    """Shuffled (or ordered) indices whose state is (seed, epoch, position): resumable mid-epoch.

    The order of an epoch is a permutation drawn from (seed, epoch) alone, so
    it is the same in a resumed run. Under torchrun each process takes its own
    share exactly like torch's DistributedSampler (padded to equal length,
    every `num_replicas`-th index from `rank`). `start` skips the first
    positions of the epoch without loading them: no batch is read twice.

    Used by `Run.loader()`, which also gives each index its (seed, epoch) so
    that `sample_generator()` works in workers.

    Args:
        length: number of samples in the dataset.
        seed: seed of the shuffle.
        shuffle: False keeps the dataset's order.
        num_replicas: processes sharing the data (default: the torch.distributed world size, else 1).
        rank: this process's share (default: its torch.distributed rank, else 0).
        drop_last: drop the tail so every process gets the same number of samples, instead of padding.
        keyed: yield (seed, epoch, index) keys for KeyedDataset instead of bare indices.
    """

    def __init__(self, length: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int | None = None,
                 rank: int | None = None, drop_last: bool = False, keyed: bool = False) -> None:
        if num_replicas is None or rank is None:
            world, me = _world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside 0..{num_replicas - 1}; pass a rank below num_replicas.")
        self.length, self.seed, self.shuffle = int(length), int(seed), bool(shuffle)
        self.num_replicas, self.rank, self.drop_last, self.keyed = num_replicas, rank, drop_last, keyed
        self.epoch = 0
        self.start = 0  # positions of this epoch already done (skipped without loading)
        if drop_last and self.length % num_replicas:
            self.num_samples = self.length // num_replicas
        else:
            self.num_samples = -(-self.length // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and the position to start from (0: the beginning)."""
        self.epoch, self.start = int(epoch), int(start)

    def order(self, epoch: int | None = None) -> list[int]:
        """This process's indices for an epoch, in order (all of them, from position 0)."""
        import torch

        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)  # what DistributedSampler does
            indices = torch.randperm(self.length, generator=generator).tolist()
        else:
            indices = list(range(self.length))
        if self.drop_last:
            indices = indices[: self.total_size]
        elif len(indices) < self.total_size:
            padding = self.total_size - len(indices)
            indices += (indices * (padding // len(indices) + 1))[:padding]
        return indices[self.rank: self.total_size: self.num_replicas]

    def __iter__(self) -> Iterator[Any]:
        indices = self.order()[self.start:]
        if self.keyed:
            seed, epoch = self.seed, self.epoch
            return iter([(seed, epoch, i) for i in indices])
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, int]:
        """{"seed", "epoch", "start"}: enough to continue this epoch where it stood."""
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a `state_dict()`."""
        self.seed, self.epoch, self.start = int(state["seed"]), int(state["epoch"]), int(state["start"])


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
