"""CheckpointManager: atomic saves, manifest, rotation, verification and fallback, safe loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import xxhash

import colabkit
from colabkit._checkpoint.manager import (
    MANIFEST_NAME,
    CheckpointManager,
    CheckpointWarning,
)
from colabkit.errors import (
    CheckpointError,
    ConfigError,
    NoUsableCheckpointError,
    UnsafeCheckpointError,
)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def ckpt_files(folder: Path) -> list[str]:
    return [n for n in files(folder) if n.startswith("ckpt-")]


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def small_state(value: float) -> dict:
    """A state_dict that fits torch.nn.Linear(3, 4), every entry equal to `value`."""
    return {"weight": torch.full((4, 3), float(value)), "bias": torch.full((4,), float(value))}


def value_of(state: dict) -> float:
    return state["weight"][0, 0].item()


def test_default_directory_is_cwd_checkpoints_then_project_checkpoints(tmp_path):
    assert CheckpointManager().directory == Path.cwd() / "checkpoints"
    project = colabkit.setup("ML2022", chdir=False, quiet=True)
    assert CheckpointManager().directory == project.checkpoints
    saved = CheckpointManager().save(small_state(1), epoch=1)
    assert saved.parent == project.checkpoints and saved.is_file()


def test_save_publishes_file_and_manifest_and_load_returns_the_state_exactly(tmp_path):
    folder = tmp_path / "ck"
    state = OrderedDict(
        model=OrderedDict(w=torch.randn(5, 3), b=torch.arange(3, dtype=torch.int16)),
        nested={"t": (1, 2.5, "x", None, True), "l": [torch.ones(2), {"deep": b"bytes"}]},
        shape=torch.Size([2, 3]), dtype=torch.float16, device=torch.device("cpu"), tags={"a", "b"},
    )
    path = CheckpointManager(folder).save(state, epoch=3, step=120, metric=0.25)
    assert path.parent == folder and path.is_file()
    assert files(folder) == [path.name, MANIFEST_NAME]  # no temp file left
    entry, = manifest(folder)["checkpoints"]
    data = path.read_bytes()
    assert entry["file"] == path.name
    assert entry["hash"] == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()
    assert entry["size"] == len(data)
    assert (entry["epoch"], entry["step"], entry["metric"]) == (3, 120, 0.25)
    assert entry["time"].endswith("Z")

    loaded = CheckpointManager(folder).load()
    assert type(loaded) is OrderedDict and list(loaded) == list(state)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.int16
    assert loaded["nested"]["t"] == (1, 2.5, "x", None, True)
    assert torch.equal(loaded["nested"]["l"][0], torch.ones(2)) and loaded["nested"]["l"][1] == {"deep": b"bytes"}
    assert (loaded["shape"], loaded["dtype"], loaded["tags"]) == (torch.Size([2, 3]), torch.float16, {"a", "b"})
    assert CheckpointManager(folder).load(path)["nested"]["t"] == (1, 2.5, "x", None, True)
    # the file itself is a plain torch checkpoint, loadable with weights_only
    assert torch.load(path, weights_only=True)["state"]["nested"]["t"][2] == "x"


@pytest.mark.parametrize("monitor, metrics, best_index", [
    ("min", [5.0, 1.0, 4.0, 3.0, 2.0, 6.0], 1),
    ("max", [0.1, 0.9, 0.3, 0.2, 0.5, 0.4], 1),
])
def test_rotation_keeps_last_n_plus_the_best(tmp_path, monitor, metrics, best_index):
    ckpt = CheckpointManager(tmp_path / "ck", keep_last=2, monitor=monitor)
    paths = [ckpt.save(small_state(i), epoch=i + 1, metric=m) for i, m in enumerate(metrics)]
    expected = sorted({paths[best_index].name, paths[-2].name, paths[-1].name})
    assert ckpt_files(ckpt.directory) == expected
    assert [e["file"] for e in manifest(ckpt.directory)["checkpoints"]] == expected
    assert manifest(ckpt.directory)["best"] == paths[best_index].name
    assert ckpt.best() == paths[best_index]
    assert ckpt.latest() == paths[-1]
    assert value_of(ckpt.load(ckpt.best())) == best_index


def test_save_never_reads_back_the_file_it_wrote(tmp_path, monkeypatch):
    """check_plain() vouched for a safe load before writing and the sha256 is of the bytes
    written: loading the new file again would only slow every save down."""
    ckpt = CheckpointManager(tmp_path / "ck", keep_last=2)
    ckpt.save(small_state(0), epoch=1, metric=1.0)
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loaded.append(Path(f).name) or real_load(f, *a, **k))
    paths = [ckpt.save(small_state(i), epoch=i + 1, metric=1.0 + i) for i in (1, 2, 3)]
    assert loaded == []
    assert ckpt_files(ckpt.directory) == sorted({ckpt.best().name, paths[-2].name, paths[-1].name})
    for entry in manifest(ckpt.directory)["checkpoints"]:
        data = (ckpt.directory / entry["file"]).read_bytes()
        assert entry["hash"] == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()


def test_best_changes_and_the_old_best_is_retired(tmp_path):
    ckpt = CheckpointManager(tmp_path / "ck", keep_last=1, monitor="min")
    first = ckpt.save(small_state(0), metric=1.0)
    ckpt.save(small_state(1), metric=2.0)
    assert first.exists()
    third = ckpt.save(small_state(2), metric=0.5)  # new best: the old best goes
    assert ckpt_files(ckpt.directory) == [third.name]


def test_monitor_none_or_keep_best_false_keeps_only_the_last(tmp_path):
    for kwargs in ({"monitor": None}, {"keep_best": False}):
        ckpt = CheckpointManager(tmp_path / str(kwargs), keep_last=2, **kwargs)
        paths = [ckpt.save(small_state(i), metric=m) for i, m in enumerate([0.1, 5, 6, 7])]
        assert ckpt_files(ckpt.directory) == [paths[2].name, paths[3].name]
    assert CheckpointManager(tmp_path / "{'monitor': None}", monitor=None).best() is None


def test_metric_accepts_tensors_and_numpy_and_nan_is_never_best(tmp_path):
    import numpy as np

    ckpt = CheckpointManager(tmp_path / "ck", keep_last=1)
    a = ckpt.save(small_state(0), metric=torch.tensor(0.5))
    ckpt.save(small_state(1), metric=np.float32(0.75))
    ckpt.save(small_state(2), metric=float("nan"))
    assert ckpt.best() == a
    assert [e["metric"] for e in manifest(ckpt.directory)["checkpoints"]] == [0.5, None]


def test_empty_folder_latest_none_resume_none_load_says_what_to_do(tmp_path):
    ckpt = CheckpointManager(tmp_path / "never-created")
    assert ckpt.latest() is None and ckpt.best() is None
    assert ckpt.resume(torch.nn.Linear(2, 2)) is None
    with pytest.raises(NoUsableCheckpointError, match="no checkpoints"):
        ckpt.load()
    assert not ckpt.directory.exists()


@pytest.mark.parametrize("bad", [
    {"obj": object()},
    {"args": __import__("argparse").Namespace(lr=0.1)},
    {"nested": [1, {"fn": len}]},
    {(1, 2.0): "a float in a tuple key is fine", frozenset([1]): "but not a frozenset"},
])
def test_state_that_a_safe_load_could_not_read_back_is_refused_before_writing(tmp_path, bad):
    ckpt = CheckpointManager(tmp_path / "ck")
    with pytest.raises(ConfigError, match="weights_only"):
        ckpt.save(bad)
    assert not ckpt.directory.exists() or ckpt_files(ckpt.directory) == []


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ConfigError, match="monitor"):
        CheckpointManager(tmp_path, monitor="lowest")
    with pytest.raises(ConfigError, match="epoch"):
        CheckpointManager(tmp_path).save({}, epoch=1.5)
    with pytest.raises(ConfigError, match="metric"):
        CheckpointManager(tmp_path).save({}, metric="good")


# ------------------------------------------------------------------ corruption


def _three(tmp_path) -> tuple[CheckpointManager, list[Path]]:
    ckpt = CheckpointManager(tmp_path / "ck", keep_last=3)
    return ckpt, [ckpt.save(small_state(i), epoch=i + 1, metric=10 - i) for i in range(3)]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip, Path.unlink], ids=["truncate", "flip-byte", "delete"])
def test_damaged_newest_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    ckpt, paths = _three(tmp_path)
    damage(paths[-1])
    model = torch.nn.Linear(3, 4)
    with pytest.warns(CheckpointWarning, match=paths[-1].name):
        assert ckpt.latest() == paths[-2]
    with pytest.warns(CheckpointWarning):
        assert value_of(ckpt.load()) == 1
    with pytest.warns(CheckpointWarning):
        info = ckpt.resume(model)
    assert info.path == paths[-2] and info.epoch == 2
    if damage is not Path.unlink:
        assert info.skipped == (paths[-1],)
    assert torch.equal(model.weight, torch.full((4, 3), 1.0))


def test_a_flipped_byte_in_tensor_data_is_caught_by_the_hash(tmp_path):
    ckpt = CheckpointManager(tmp_path / "ck")
    good = ckpt.save({"w": torch.zeros(1000)})
    bad = ckpt.save({"w": torch.zeros(1000)})
    data = bytearray(bad.read_bytes())
    where = data.find(bytes(4000))  # inside the tensor's raw bytes: torch.load alone would not notice
    data[where + 100] = 1
    bad.write_bytes(bytes(data))
    assert torch.load(bad, weights_only=True)["state"]["w"].count_nonzero() == 1
    with pytest.warns(CheckpointWarning, match="hash does not match"):
        assert ckpt.latest() == good
    with pytest.raises(CheckpointError, match="hash") as refused:
        ckpt.load(bad)
    assert str(bad) in str(refused.value) and "without a path" in str(refused.value)


# "empty": what an interrupted copy or Drive sync of the folder can leave
@pytest.mark.parametrize("damage", ["garbage", "truncated-json", "wrong-format", "deleted", "empty"])
def test_damaged_manifest_is_rebuilt_from_the_files(tmp_path, damage):
    ckpt, paths = _three(tmp_path)
    target = ckpt.directory / MANIFEST_NAME
    if damage == "empty":
        target.write_bytes(b"")
    elif damage == "garbage":
        target.write_bytes(os.urandom(64))
    elif damage == "truncated-json":
        target.write_text(target.read_text()[:40])
    elif damage == "wrong-format":
        target.write_text(json.dumps({"format": "something else"}))
    else:
        target.unlink()
    fresh = CheckpointManager(ckpt.directory, keep_last=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fresh.latest() == paths[-1]
    if damage != "deleted":
        assert any(issubclass(w.category, CheckpointWarning) and "manifest" in str(w.message) for w in caught)
    assert value_of(fresh.load()) == 2
    # the next save writes a complete manifest again, metadata recovered from the files
    newest = fresh.save(small_state(3), epoch=4, metric=1.0)
    listed = manifest(ckpt.directory)["checkpoints"]
    assert [e["file"] for e in listed] == [p.name for p in paths[1:]] + [newest.name]  # keep_last=3
    assert [e["metric"] for e in listed] == [9.0, 8.0, 1.0]
    assert [e["epoch"] for e in listed] == [2, 3, 4]
    for entry in listed:
        data = (ckpt.directory / entry["file"]).read_bytes()
        assert entry["hash"] == "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()


def test_every_checkpoint_unusable_is_an_error_and_nothing_is_deleted(tmp_path):
    ckpt, paths = _three(tmp_path)
    for path in paths:
        _truncate(path)
    with pytest.warns(CheckpointWarning), pytest.raises(NoUsableCheckpointError, match="Nothing was deleted"):
        ckpt.resume(torch.nn.Linear(3, 4))
    assert ckpt_files(ckpt.directory) == [p.name for p in paths]


def test_a_complete_file_missing_from_the_manifest_is_found(tmp_path):
    """A crash between os.replace and the manifest update loses nothing."""
    ckpt, paths = _three(tmp_path)
    before = (ckpt.directory / MANIFEST_NAME).read_bytes()
    oldest = paths[0].read_bytes()
    newest = ckpt.save(small_state(3), epoch=4, metric=3.0)
    # as if killed after the rename, before the manifest (and so before retiring the oldest)
    (ckpt.directory / MANIFEST_NAME).write_bytes(before)
    paths[0].write_bytes(oldest)
    fresh = CheckpointManager(ckpt.directory, keep_last=3)
    assert fresh.latest() == newest
    assert fresh.resume(torch.nn.Linear(3, 4)).epoch == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here deserves a warning
        after = fresh.save(small_state(4), epoch=5)
    assert ckpt_files(ckpt.directory) == [paths[2].name, newest.name, after.name]


def test_leftover_temp_files_are_never_checkpoints_and_only_stale_ones_are_cleaned(tmp_path):
    """A temp is never loaded as a checkpoint; a live writer's temp reserves its number (another
    writer must not publish the same name) and is never deleted; a dead writer's temp is retired
    once it is stale (owner gone AND idle, _fsio.is_stale_temp), not before."""
    ckpt, paths = _three(tmp_path)
    stale = ckpt.directory / ".ckpt-000009-epoch0009.pt.424242-deadbeef.tmp"
    stale.write_bytes(paths[-1].read_bytes()[:100])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_progress = ckpt.directory / f".ckpt-000010.pt.{alive.pid}-deadbeef.tmp"
        in_progress.write_bytes(b"being written by a live process")
        assert CheckpointManager(ckpt.directory).latest() == paths[-1]
        assert CheckpointManager(ckpt.directory).checkpoints() == paths
        os.utime(stale, (1_000_000, 1_000_000))
        os.utime(in_progress, (1_000_000, 1_000_000))  # idle for long, but its writer lives
        nxt = CheckpointManager(ckpt.directory).save(small_state(3))
        assert nxt.name == "ckpt-000011.pt"  # 10 is reserved by the live writer's temp
        assert not stale.exists() and in_progress.read_bytes() == b"being written by a live process"
    finally:
        alive.kill()
        alive.wait()
    dead_owner = ckpt.directory / f".ckpt-000012.pt.{alive.pid}-deadbeef.tmp"
    dead_owner.write_bytes(b"left by a killed process")  # its pid is gone, but it is recent
    CheckpointManager(ckpt.directory).save(small_state(4))
    assert dead_owner.exists()  # could be a writer on another machine sharing the Drive folder
    os.utime(dead_owner, (1_000_000, 1_000_000))
    CheckpointManager(ckpt.directory).save(small_state(5))
    assert not dead_owner.exists() and not in_progress.exists()


# ------------------------------------------------------------------ unsafe files


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": "colabkit.checkpoint/1", "meta": {}, "state": {"x": _Payload(marker)}}, path)


def test_the_malicious_payload_is_real(tmp_path):
    """Control: an unsafe torch.load does run it, so the refusals below prove something."""
    evil, marker = tmp_path / "evil.pt", tmp_path / "control-marker"
    _malicious_checkpoint(evil, marker)
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    folder, marker = tmp_path / "ck", tmp_path / "marker"
    folder.mkdir()
    evil = folder / "ckpt-000001-epoch0001.pt"
    _malicious_checkpoint(evil, marker)
    ckpt = CheckpointManager(folder)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        ckpt.load(evil)
    with pytest.warns(CheckpointWarning), pytest.raises(UnsafeCheckpointError, match="could run code"):
        ckpt.resume(torch.nn.Linear(3, 4))
    with pytest.raises(UnsafeCheckpointError):
        colabkit.load_model(torch.nn.Linear(3, 4), evil)
    assert not marker.exists()


def test_malicious_newest_is_skipped_for_the_good_one(tmp_path):
    ckpt, paths = _three(tmp_path)
    marker = tmp_path / "marker"
    _malicious_checkpoint(paths[-1], marker)
    with pytest.warns(CheckpointWarning, match="could run code|hash"):
        assert ckpt.resume(torch.nn.Linear(3, 4)).path == paths[-2]
    assert not marker.exists()


# ------------------------------------------------------------------ devices


def test_a_gpu_checkpoint_loads_on_a_cpu_only_runtime(tmp_path, monkeypatch):
    """The file is written exactly as a CUDA run writes it (storages tagged "cuda:0")."""
    from torch import serialization

    monkeypatch.setattr(serialization, "location_tag", lambda storage: "cuda:0")
    ckpt = CheckpointManager(tmp_path / "ck")
    path = ckpt.save({"w": torch.arange(6.0)}, epoch=1)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a bare load does on a CPU runtime
    state = CheckpointManager(tmp_path / "ck").load()
    assert state["w"].device.type == "cpu" and torch.equal(state["w"], torch.arange(6.0))
    model = torch.nn.Linear(3, 2)
    ckpt.save(colabkit.training_state(model), epoch=2)


# ------------------------------------------------------------------ resume


def test_resume_restores_model_optimizer_scheduler_and_extras(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    ckpt = CheckpointManager(tmp_path / "ck")
    state = colabkit.training_state(model, optimizer, scheduler, epoch=3, best_loss=0.5, patience=2,
                                    config={"lr": 0.01, "layers": [4, 8, 2]})
    ckpt.save(state, epoch=3, step=30, metric=0.5)

    torch.manual_seed(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer2 = torch.optim.AdamW(model2.parameters(), lr=0.01)
    scheduler2 = torch.optim.lr_scheduler.StepLR(optimizer2, step_size=1, gamma=0.5)
    info = ckpt.resume(model2, optimizer2, scheduler2)
    assert (info.epoch, info.step, info.metric) == (3, 30, 0.5)
    assert info.extra == {"epoch": 3, "best_loss": 0.5, "patience": 2, "config": {"lr": 0.01, "layers": [4, 8, 2]}}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert optimizer2.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_resume_from_a_bare_state_dict_restores_the_model(tmp_path):
    source = torch.nn.Linear(3, 2)
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(source.state_dict(), epoch=7)
    target = torch.nn.Linear(3, 2)
    info = ckpt.resume(target)
    assert info.epoch == 7 and info.extra == {}
    assert torch.equal(target.weight, source.weight)


def test_an_unreadable_unlisted_file_is_neither_listed_nor_deleted(tmp_path):
    ckpt, paths = _three(tmp_path)
    stray = ckpt.directory / "ckpt-000004-epoch0004.pt"
    stray.write_bytes(paths[-1].read_bytes()[:500])  # a cut-short copy nobody listed
    with pytest.warns(CheckpointWarning, match="ckpt-000004"):
        assert ckpt.latest() == paths[-1]
    newest = ckpt.save(small_state(5), epoch=5)
    assert newest.name.startswith("ckpt-000005")
    listed = [e["file"] for e in manifest(ckpt.directory)["checkpoints"]]
    assert stray.name not in listed and newest.name in listed and stray.exists()
