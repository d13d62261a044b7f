"""MicroBatcher: out-of-memory back-off keeps the optimizer's batch (injected OOM on CPU).

A forward pass raises torch.cuda.OutOfMemoryError (the real exception class)
whenever it is given more rows than fit; the run must end bit-identical to one
given the smaller micro-batch from the start, keep the size for the resume,
and "auto" must find it before training without disturbing the random state.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import colabkit
from colabkit.errors import ConfigError, OutOfMemoryBackoffError


class Limited(nn.Module):
    """A small network with dropout whose forward "runs out of memory" above `fits` rows."""

    def __init__(self, fits=None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.fits, self.ooms = fits, 0

    def forward(self, x):
        if self.fits is not None and len(x) > self.fits:
            self.ooms += 1
            # draw from the RNG first, as a real forward would before running out of memory
            nn.functional.dropout(torch.ones(len(x)), 0.5)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x).squeeze(1)


class Rows(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 5, generator=g), torch.randn(64, generator=g)

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def train(root, *, fits=None, size=None, epochs=2):
    colabkit.seed_everything(0)
    run = colabkit.Run("oom", config={"epochs": epochs}, root=root, quiet=True)
    model = Limited(fits)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    run.track(model, optimizer)
    micro = colabkit.MicroBatcher(optimizer, 16, size, run=run, quiet=True)
    loader = run.loader(Rows(), 16)
    losses = []
    for _ in run.epochs():
        model.train()
        for x, y in run.batches(loader):
            optimizer.zero_grad()
            loss = micro.backward(lambda xb, yb: ((model(xb) - yb) ** 2).mean(), x, y)
            optimizer.step()
            losses.append(loss.item())
        run.log(valid_loss=losses[-1])
    return run, model, micro, losses


def test_oom_halves_the_micro_batch_and_equals_the_run_at_the_smaller_size(tmp_path):
    run, model, micro, losses = train(tmp_path / "oom", fits=4)
    assert micro.size == 4 and micro.steps == 4 and model.ooms == 2  # 16 -> 8 -> 4, once
    assert run.state["micro_batch_size"] == 4
    _, reference, _, ref_losses = train(tmp_path / "given", size=4)
    for key, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key
    assert losses == ref_losses
    # the batch the optimizer steps on is unchanged: accelerate's back-off would change the steps
    assert run.step == 8


def test_the_size_comes_back_on_resume_without_another_oom(tmp_path):
    train(tmp_path, fits=4, epochs=1)
    run, model, micro, _ = train(tmp_path, fits=4, epochs=2)
    assert run.resumed and model.ooms == 0 and micro.size == 4


def test_auto_probes_first_and_leaves_the_random_state_alone(tmp_path):
    run, model, micro, losses = train(tmp_path / "auto", fits=4, size="auto")
    assert micro.size == 4 and model.ooms == 2 and run.state["micro_batch_size"] == 4
    _, reference, _, ref_losses = train(tmp_path / "given", size=4)
    assert losses == ref_losses
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))


def test_one_row_that_does_not_fit_is_one_clear_error():
    model = Limited(fits=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = colabkit.MicroBatcher(optimizer, 4, quiet=True)
    with pytest.raises(OutOfMemoryBackoffError, match="even with one row per forward pass"):
        micro.backward(lambda x: model(x).sum(), torch.ones(4, 5))
    assert isinstance(OutOfMemoryBackoffError("x"), colabkit.errors.ColabkitError)


def test_map_validates_in_pieces_and_bad_sizes_are_refused():
    model = Limited(fits=2)
    micro = colabkit.MicroBatcher(torch.optim.SGD(model.parameters(), lr=0.1), 8, quiet=True)
    with torch.no_grad():
        parts = micro.map(lambda x: model(x), torch.ones(8, 5))
    assert [len(p) for p in parts] == [2, 2, 2, 2]
    for bad in (0, "big", 2.5, True):
        with pytest.raises(ConfigError):
            colabkit.MicroBatcher(None, 8, bad)
