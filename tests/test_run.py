"""colabkit.Run in-process: reruns, fresh starts, configuration changes, early stopping,
interrupts, user state, metrics, TensorBoard and the loss curve; the sampler and per-sample seeds."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import torch
from torch import nn

import colabkit
from colabkit._training.metrics import read_rows
from colabkit.errors import ConfigError, RunConfigError


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n, 5, generator=g)
        self.y = self.x.sum(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        g = colabkit.sample_generator(i)
        return self.x[i] + 0.1 * torch.randn(5, generator=g), self.y[i]


def train(root, *, epochs=2, lr=0.05, hidden=8, data="rows-40", interrupt_at=None, valid=None, batch_size=8,
          dataset=None, **kwargs):
    """A student's loop on Run; returns (run, model)."""
    colabkit.seed_everything(0)
    config = {"epochs": epochs, "lr": lr, "hidden": hidden, "data": data}
    run = colabkit.Run("hw", config=config, structural=["data"], root=root, **kwargs)
    model = nn.Sequential(nn.Linear(5, hidden), nn.Dropout(0.1), nn.Linear(hidden, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    run.track(model, optimizer)
    loader = run.loader(dataset or Rows(), batch_size=batch_size)
    for epoch in run.epochs():
        model.train()
        for x, y in run.batches(loader):
            loss = ((model(x).squeeze(1) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            if interrupt_at is not None and run.step + 1 == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # the stop button, in the middle of a step
            optimizer.step()
            run.log(train_loss=loss)
        value = valid(epoch) if valid else loss.item()
        if run.log(valid_loss=value):
            run.state.best = value
        run.state.setdefault("history", []).append(epoch)
    return run, model


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_of_a_finished_run_does_nothing_and_more_epochs_continue_exactly(tmp_path, capsys):
    run, model = train(tmp_path / "a", epochs=2)
    assert run.finished and run.epoch == 2 and run.step == 10
    assert run.state.history == [0, 1]
    before = tree_digest(run.checkpoint_dir)
    capsys.readouterr()
    _, model2 = train(tmp_path / "a", epochs=2)
    out = capsys.readouterr().out
    assert "is complete (2 of 2 epochs done); nothing to do" in out
    assert tree_digest(run.checkpoint_dir) == before  # nothing trained, nothing written
    assert same(weights(model), weights(model2))  # the finished weights are restored for use
    more, model3 = train(tmp_path / "a", epochs=3)
    assert "resumes after epoch 2" in capsys.readouterr().out
    assert more.epoch == 3 and more.state.history == [0, 1, 2]
    _, model4 = train(tmp_path / "b", epochs=3)
    assert same(weights(model3), weights(model4))  # 2 + 1 epochs == 3 epochs, bit for bit


def test_fresh_moves_the_old_run_aside_and_deletes_nothing(tmp_path, capsys):
    run, _ = train(tmp_path, epochs=1)
    folders = [run.checkpoint_dir, run.output_dir, run.log_dir]
    digests = {f.name + f.parent.name: tree_digest(f) for f in folders}
    capsys.readouterr()
    new, _ = train(tmp_path, epochs=1, fresh=True)
    assert "starts over; the earlier one was moved to" in capsys.readouterr().out
    assert new.step == 5 and not new.resumed
    for folder in folders:
        aside = [p for p in folder.parent.iterdir() if p.name.startswith(f"{folder.name}.old-")]
        assert len(aside) == 1
        assert tree_digest(aside[0]) == digests[folder.name + folder.parent.name]


def test_a_changed_model_shape_stops_with_one_message_and_the_ways_on(tmp_path, capsys):
    train(tmp_path, epochs=1, hidden=8)
    before = tree_digest(tmp_path)
    with pytest.raises(RunConfigError) as info:
        train(tmp_path, epochs=2, hidden=16)
    message = str(info.value)
    assert "applied" not in capsys.readouterr().out  # no note of a change that was refused
    assert "the model's shape changed: 0.weight is [8, 5] in the checkpoint but [16, 5] now" in message
    assert "hidden 8 -> 16" in message and "epochs 1 -> 2" in message
    assert "fresh=True (--fresh" in message and "--run NAME" in message
    assert "\n" not in message and "size mismatch" not in message  # one message, no raw load_state_dict text
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    assert {k: v for k, v in tree_digest(tmp_path).items() if "tensorboard" not in k} == \
        {k: v for k, v in before.items() if "tensorboard" not in k}  # nothing changed on disk


def test_a_structural_key_stops_before_anything_is_built(tmp_path):
    train(tmp_path, epochs=1)
    with pytest.raises(RunConfigError) as info:
        colabkit.Run("hw", config={"epochs": 1, "lr": 0.05, "hidden": 8, "data": "other.csv"},
                     structural=["data"], root=tmp_path)
    message = str(info.value)
    assert "data cannot change within a run" in message and 'data "rows-40" -> "other.csv"' in message
    assert "fresh=True" in message and "--run NAME" in message


def test_a_learning_rate_change_is_applied_with_a_one_line_note(tmp_path, capsys):
    train(tmp_path, epochs=1, lr=0.05)
    capsys.readouterr()
    colabkit.seed_everything(0)
    run = colabkit.Run("hw", config={"epochs": 2, "lr": 0.01, "hidden": 8, "data": "rows-40"},
                       structural=["data"], root=tmp_path)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.1), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run.track(model, optimizer)
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("note: ")]
    assert notes == ["note: configuration changed since the checkpoint, applied: epochs 1 -> 2, lr 0.05 -> 0.01"]
    assert optimizer.param_groups[0]["lr"] == 0.01  # not the saved 0.05
    assert optimizer.state  # the momentum buffers came back
    assert colabkit._fsio.read_json(run.log_dir / "config.json")["lr"] == 0.01


def test_a_finished_run_with_a_changed_config_names_the_change_and_the_ways_on(tmp_path, capsys):
    train(tmp_path, epochs=1, lr=0.05)
    capsys.readouterr()
    run, _ = train(tmp_path, epochs=1, lr=0.2)
    out = capsys.readouterr().out
    assert "is complete (1 of 1 epochs done), and its configuration has changed since: lr 0.05 -> 0.2" in out
    assert "Nothing was trained" in out and "fresh=True (--fresh" in out and "--run NAME" in out
    assert colabkit._fsio.read_json(run.log_dir / "config.json")["lr"] == 0.05  # what it was trained with


def test_checkpoints_not_written_by_run_are_refused_with_the_ways_on(tmp_path):
    folder = tmp_path / "checkpoints" / "hw"
    colabkit.CheckpointManager(folder).save(colabkit.training_state(nn.Linear(2, 2)), epoch=1)
    with pytest.raises(RunConfigError, match="colabkit.Run did not write"):
        colabkit.Run("hw", epochs=2, root=tmp_path)


def test_early_stopping_is_state_the_run_carries(tmp_path, capsys):
    values = [3.0, 2.0, 2.5, 2.4, 1.0]
    run, _ = train(tmp_path, epochs=5, patience=2, valid=lambda e: values[e])
    assert run.stopped_early and run.epoch == 4 and run.best == 2.0 and run.best_epoch == 2
    assert run.state.best == 2.0
    assert "Early stop: no better valid_loss in 2 epochs" in capsys.readouterr().out
    info = colabkit._fsio.read_json(run.log_dir / "run.json")
    assert info["stopped_epoch"] == 4 and info["best_epoch"] == 2
    again, _ = train(tmp_path, epochs=8, patience=2, valid=lambda e: values[e])
    assert "stopped early after epoch 4" in capsys.readouterr().out and again.epoch == 4
    stopper = colabkit.EarlyStopping(2, mode="max")
    assert [stopper.update(v, i + 1) for i, v in enumerate([0.5, 0.7, 0.6, 0.65])] == [True, True, False, False]
    assert stopper.stopped and stopper.best_epoch == 2
    with pytest.raises(ConfigError):
        colabkit.EarlyStopping(0)


def test_every_minutes_checkpoints_inside_epochs_and_ten_minutes_by_default(tmp_path):
    assert colabkit.Run("d", epochs=1, root=tmp_path).every == 10.0
    run, _ = train(tmp_path, epochs=1, every=1e-9, keep_last=10)
    names = [p.name for p in run.checkpoints.checkpoints()]
    assert any("epoch0000-step00000003" in n for n in names)  # mid-epoch, after 3 batches
    assert names[-1].endswith("epoch0001-step00000005.pt")
    with pytest.raises(ConfigError):
        colabkit.Run("e", epochs=1, root=tmp_path, every=0)


def test_keyboard_interrupt_saves_between_steps_then_reraises_and_resumes_exactly(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "a", epochs=2, interrupt_at=7)
    out = capsys.readouterr().out
    assert "Stopping after this step" in out and "Interrupted: saved ckpt-" in out
    assert "epoch0001-step00000007" in out
    run, model = train(tmp_path / "a", epochs=2)
    assert run.resumed
    _, reference = train(tmp_path / "b", epochs=2)
    assert same(weights(model), weights(reference))
    steps = [r["step"] for r in read_rows(run.log_dir / "metrics.csv") if r["kind"] == "step"]
    assert steps == list(range(1, 11))  # one row per step, none twice


def test_user_state_comes_back_as_dict_and_attributes(tmp_path):
    train(tmp_path, epochs=1)
    run2, _ = train(tmp_path, epochs=2)
    assert run2.state["history"] == [0, 1] and run2.state.history == [0, 1]
    with pytest.raises(AttributeError, match="run.state has no 'missing'"):
        run2.state.missing


def test_metrics_csv_tensorboard_and_an_overlaid_loss_curve(tmp_path):
    run_a, _ = train(tmp_path / "a", epochs=3)
    run_b, _ = train(tmp_path / "b", epochs=3, lr=0.01)
    rows = read_rows(run_a.log_dir / "metrics.csv")
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epoch_rows] == [1, 2, 3]
    assert all({"train_loss", "step"} <= set(r) for r in rows if r["kind"] == "step")
    assert all({"valid_loss", "lr", "seconds"} <= set(r) for r in epoch_rows)
    assert list(open(run_a.log_dir / "metrics.csv").readline().strip().split(","))[:5] == \
        ["epoch", "step", "kind", "train_loss", "valid_loss"]
    assert list((run_a.log_dir / "tensorboard").glob("events.out.tfevents.*"))
    png = run_a.plot()
    assert png == run_a.output_dir / "loss_curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = colabkit.plot_metrics(run_a, run_b.log_dir, path=tmp_path / "both.png")
    assert both.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError):
        colabkit.plot_metrics(tmp_path / "nothing", path=tmp_path / "x.png")


def test_sample_generator_depends_on_seed_epoch_and_index_only():
    a = torch.rand(3, generator=colabkit.sample_generator(5))
    b = torch.rand(3, generator=colabkit.sample_generator(5))
    c = torch.rand(3, generator=colabkit.sample_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    from colabkit._training.data import KeyedDataset

    class Draw:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.rand(1, generator=colabkit.sample_generator()).item()

    keyed = KeyedDataset(Draw())
    assert keyed[(0, 1, 4)] == keyed[(0, 1, 4)]
    assert len({keyed[(0, 1, 4)], keyed[(0, 2, 4)], keyed[(1, 1, 4)], keyed[(0, 1, 5)]}) == 4
    with pytest.raises(ConfigError, match="pass the index"):
        colabkit.sample_seed()


@pytest.mark.parametrize("length,replicas", [(10, 2), (11, 2), (7, 3)])
def test_resumable_sampler_splits_like_distributed_sampler_and_resumes_by_position(length, replicas):
    for rank in range(replicas):
        ours = colabkit.ResumableSampler(length, seed=4, num_replicas=replicas, rank=rank)
        torchs = torch.utils.data.DistributedSampler(range(length), num_replicas=replicas, rank=rank, seed=4)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            torchs.set_epoch(epoch)
            assert list(ours) == list(torchs)
        full = ours.order(3)
        ours.set_epoch(3, start=2)
        assert list(ours) == full[2:] and len(ours) == len(full) - 2
        assert ours.state_dict() == {"seed": 4, "epoch": 3, "start": 2}


def test_loader_refuses_a_sampler_and_batches_needs_its_loader(tmp_path):
    run = colabkit.Run("x", epochs=1, root=tmp_path)
    with pytest.raises(ConfigError, match="chooses the sampler itself"):
        run.loader(Rows(), 4, sampler=None)
    plain = torch.utils.data.DataLoader(Rows(), batch_size=4)
    with pytest.raises(ConfigError, match="run.loader"):
        next(iter(run.batches(plain)))


def test_the_loop_needs_track_first_and_logged_tensors_hold_no_graph(tmp_path):
    run = colabkit.Run("y", epochs=1, root=tmp_path)
    with pytest.raises(ConfigError, match=r"run.track\(model"):
        next(iter(run.epochs()))
    model = nn.Linear(5, 1)
    run.track(model, torch.optim.SGD(model.parameters(), lr=0.1))
    loader = run.loader(Rows(), batch_size=20)
    for _ in run.epochs():
        for x, y in run.batches(loader):
            loss = ((model(x).squeeze(1) - y) ** 2).mean()
            run.log(train_loss=loss)
            assert run.metrics.rows[-1]["train_loss"].grad_fn is None
            loss.backward()
        run.log(valid_loss=1.0)
    assert [r["kind"] for r in read_rows(run.log_dir / "metrics.csv")] == ["step", "step", "epoch"]


def test_a_batch_size_changed_mid_epoch_goes_on_at_the_same_sample(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, epochs=1, interrupt_at=3)  # 3 batches of 8 done: 24 samples

    class Counting(Rows):
        loaded = []

        def __getitem__(self, i):
            self.loaded.append(i)
            return super().__getitem__(i)

    data = Counting()
    run, _ = train(tmp_path, epochs=1, batch_size=4, dataset=data)
    order = colabkit.ResumableSampler(40, seed=0, num_replicas=1, rank=0).order(0)
    assert data.loaded == order[24:] and run.step == 3 + 4


def test_a_random_split_subset_loads_through_run_loader(tmp_path):
    # the course sample splits with random_split: a torch Subset has __getitems__, which the
    # loader must not be handed through Run's (seed, epoch, index) keys
    train_set, _valid_set = torch.utils.data.random_split(Rows(), [32, 8], generator=torch.Generator().manual_seed(0))
    run, model = train(tmp_path, epochs=1, dataset=train_set)
    assert run.finished
    again, model2 = train(tmp_path / "again", epochs=1, dataset=train_set)
    assert same(weights(model), weights(model2))


def test_the_epoch_row_and_epoch_means_give_the_mean_train_loss_of_the_epochs_steps(tmp_path):
    def by_hand(run):
        steps = [r for r in run.metrics.rows if r["kind"] == "step"]
        return {e: sum(r["train_loss"] for r in steps if r["epoch"] == e) / sum(r["epoch"] == e for r in steps)
                for e in sorted({r["epoch"] for r in steps})}

    run, _ = train(tmp_path / "whole", epochs=2)
    hand = by_hand(run)
    epoch_rows = [r for r in run.metrics.rows if r["kind"] == "epoch"]
    assert [r["train_loss"] for r in epoch_rows] == [hand[1], hand[2]]  # exact: the same additions
    assert run.epoch_means == {"train_loss": hand[2]}
    assert len({hand[1], hand[2]}) == 2 and all(isinstance(v, float) for v in hand.values())
    csv_rows = [r for r in read_rows(run.log_dir / "metrics.csv") if r["kind"] == "epoch"]
    assert [r["train_loss"] for r in csv_rows] == [float(format(hand[e], ".9g")) for e in (1, 2)]

    # stopped mid-epoch (a real SIGINT during step 3) and resumed: the epoch still averages all its steps
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped", epochs=2, interrupt_at=3)
    resumed, _ = train(tmp_path / "stopped", epochs=2)
    assert resumed.resumed
    assert [r["train_loss"] for r in resumed.metrics.rows if r["kind"] == "epoch"] == [hand[1], hand[2]]
    assert resumed.epoch_means == {"train_loss": hand[2]}


def test_metrics_csv_appends_new_rows_and_a_half_row_from_a_kill_is_left_out(tmp_path):
    from colabkit._training.metrics import MetricsLog

    log = MetricsLog(tmp_path, tensorboard=False)
    step = lambda n: {"epoch": 1, "step": n, "kind": "step", "train_loss": torch.tensor(n / 8)}
    for n in (1, 2):
        log.add(step(n))
    log.flush()
    first = (tmp_path / "metrics.csv").stat().st_ino
    log.add(step(3))
    log.flush()  # same columns: the new row is appended, the file is not written again whole
    assert (tmp_path / "metrics.csv").stat().st_ino == first
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == [1, 2, 3]
    log.add({"epoch": 1, "step": 3, "kind": "epoch", "valid_loss": 0.5})
    log.flush()  # a new column: rewritten whole (atomically), the earlier rows with an empty cell
    text = (tmp_path / "metrics.csv").read_text()
    assert text.splitlines()[0] == "epoch,step,kind,train_loss,valid_loss" and text.count("\n") == 5
    assert read_rows(tmp_path / "metrics.csv")[-1] == {"epoch": 1, "step": 3, "kind": "epoch", "valid_loss": 0.5}

    # a kill in the middle of an append leaves half a row: readers leave it out, a resume rewrites the file
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write("2,4,step,0.")
    assert len(read_rows(tmp_path / "metrics.csv")) == 4
    again = MetricsLog(tmp_path, tensorboard=False)
    again.restore(4, 3, 4, [])
    again.add(step(4) | {"epoch": 2})
    again.flush()
    assert (tmp_path / "metrics.csv").read_text().endswith("\n2,4,step,0.5,\n")
    assert [(r["kind"], r["step"]) for r in read_rows(tmp_path / "metrics.csv")] == \
        [("step", 1), ("step", 2), ("step", 3), ("epoch", 3), ("step", 4)]
