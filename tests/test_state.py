"""Training state helpers: RNG capture/restore, seed_everything, DataLoader seeding."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import colabkit
from colabkit.errors import ConfigError
from colabkit._state import capture_rng_state, restore_rng_state


@pytest.fixture(autouse=True)
def restore_torch_determinism():
    """seed_everything flips process-wide torch switches; put them back for other tests."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def draws(generator: torch.Generator | None = None) -> tuple:
    return (
        random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.normal(),
        torch.rand(3).tolist(), torch.randint(0, 1000, (2,), generator=generator).tolist(),
    )


def through_weights_only(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_rng_state_round_trips_through_a_weights_only_file():
    generator = torch.Generator().manual_seed(5)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    draws(generator)
    random.gauss(0, 1)  # leaves a cached gaussian in `random`'s state
    np.random.normal()
    state = through_weights_only(capture_rng_state(generator))
    expected = draws(generator)
    random.seed(99), np.random.seed(99), torch.manual_seed(99), generator.manual_seed(99)
    assert draws(generator) != expected
    restore_rng_state(state, generator)
    assert draws(generator) == expected


def test_seed_everything_makes_runs_repeat_and_sets_determinism():
    assert colabkit.seed_everything(123) == 123
    first = draws()
    colabkit.seed_everything(123)
    assert draws() == first
    colabkit.seed_everything(124)
    assert draws() != first
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled()
    colabkit.seed_everything(7, deterministic=False)
    for bad in (-1, 2**32, 1.5, "7", True):
        with pytest.raises(ConfigError, match="seed"):
            colabkit.seed_everything(bad)


class _Noisy(Dataset):
    """Each item reports numpy/random draws made inside the worker (augmentation stand-in)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.tensor([index, np.random.randint(1 << 30), random.randint(0, 1 << 30)])


def _epoch(loader) -> list[list[int]]:
    return torch.cat(list(loader)).tolist()


def test_dataloader_seeding_repeats_shuffle_and_worker_draws():
    def loader(seed: int):
        return DataLoader(_Noisy(), batch_size=2, shuffle=True, num_workers=2, **colabkit.dataloader_seeding(seed))

    first, again, other = _epoch(loader(0)), _epoch(loader(0)), _epoch(loader(1))
    assert first == again
    assert [row[0] for row in first] != [row[0] for row in other]
    # each worker seeds numpy and random from its own torch seed: no repeated draws across workers
    assert len({row[1] for row in first}) == len(first)
    assert len({row[2] for row in first}) == len(first)


def test_training_state_with_a_generator_continues_the_shuffle_order():
    seeding = colabkit.dataloader_seeding(3)
    loader = DataLoader(range(10), batch_size=5, shuffle=True, generator=seeding["generator"])
    model = torch.nn.Linear(1, 1)
    _epoch(loader)
    state = through_weights_only(colabkit.training_state(model, generator=seeding["generator"], epoch=1))
    expected = [_epoch(loader), _epoch(loader)]
    fresh = colabkit.dataloader_seeding(999)
    loader2 = DataLoader(range(10), batch_size=5, shuffle=True, generator=fresh["generator"])
    colabkit.restore_training_state(state, model, generator=fresh["generator"])
    assert [_epoch(loader2), _epoch(loader2)] == expected


def test_training_state_captures_everything_and_extras_are_plain():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    scaler = torch.amp.GradScaler("cpu")
    state = colabkit.training_state(model, optimizer, scheduler, scaler, epoch=np.int64(4),
                                    best=np.float32(0.5), history=[np.float64(1.0)], batch_size=64)
    assert set(state) == {"format", "model", "optimizer", "scheduler", "scaler", "rng", "extra"}
    assert state["extra"] == {"epoch": 4, "best": 0.5, "history": [1.0], "batch_size": 64}
    assert type(state["extra"]["epoch"]) is int and type(state["extra"]["best"]) is float
    loaded = through_weights_only(state)  # every part is weights_only data
    extras = colabkit.restore_training_state(loaded, torch.nn.Linear(2, 2), torch.optim.SGD(
        torch.nn.Linear(2, 2).parameters(), lr=1.0, momentum=0.9), scheduler, scaler)
    assert extras == state["extra"]


def test_training_state_refuses_extras_a_safe_load_cannot_read():
    from argparse import Namespace

    with pytest.raises(ConfigError, match=r"extra\['config'\].*vars\(args\)"):
        colabkit.training_state(torch.nn.Linear(1, 1), config=Namespace(lr=1))


def test_restore_training_state_explains_mismatches():
    model = torch.nn.Linear(2, 2)
    state = colabkit.training_state(model)
    with pytest.raises(ConfigError, match="no optimizer state"):
        colabkit.restore_training_state(state, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="bare state_dict"):
        colabkit.restore_training_state(model.state_dict(), model)
    with pytest.raises(ConfigError, match="generator"):
        colabkit.restore_training_state(state, model, generator=torch.Generator())


def test_wrapped_models_store_the_bare_module_weights():
    model = torch.nn.Linear(2, 2)
    state = colabkit.training_state(torch.nn.DataParallel(model))
    assert set(state["model"]) == {"weight", "bias"}
    target = torch.nn.Linear(2, 2)
    colabkit.restore_training_state(state, torch.nn.DataParallel(target))
    assert torch.equal(target.weight, model.weight)
