"""Manifests from outside (damaged or hostile), Drive's trash, and manifests of earlier versions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from colabkit._checkpoint.manager import (
    MANIFEST_NAME,
    CheckpointManager,
    CheckpointWarning,
)


def _snapshot(folder: Path, skip: Path) -> dict[str, bytes]:
    """Every file under `folder` (but not under `skip`) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and skip not in p.parents and p != skip}


def _three(folder: Path) -> tuple[CheckpointManager, list[Path]]:
    ckpt = CheckpointManager(folder, keep_last=3)
    return ckpt, [ckpt.save({"v": torch.full((4,), float(i))}, epoch=i + 1, metric=10.0 - i) for i in range(3)]


def _hostile_manifest(folder: Path, change) -> None:
    text = (folder / MANIFEST_NAME).read_text()
    data = json.loads(text)
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data, allow_nan=True))


@pytest.mark.parametrize("what, change", [
    ("metric Infinity", lambda m: m["checkpoints"][0].update(metric=float("inf"))),
    ("metric NaN", lambda m: m["checkpoints"][1].update(metric=float("nan"))),
    ("seq Infinity", lambda m: m["checkpoints"][2].update(seq=float("inf"))),
    ("seq huge float", lambda m: m["checkpoints"][2].update(seq=1e300)),
    ("seq text", lambda m: m["checkpoints"][0].update(seq="1")),
    ("seq true", lambda m: m["checkpoints"][0].update(seq=True)),
    ("epoch negative", lambda m: m["checkpoints"][0].update(epoch=-1)),
    ("epoch list", lambda m: m["checkpoints"][0].update(epoch=[1])),
    ("size NaN", lambda m: m["checkpoints"][0].update(size=float("nan"))),
    ("hash number", lambda m: m["checkpoints"][0].update(hash=123)),
    ("hash garbage", lambda m: m["checkpoints"][0].update(hash="md5:abc")),
    ("entry a string", lambda m: m["checkpoints"].append("ckpt-000009.pt")),
    ("checkpoints an object", lambda m: m.update(checkpoints={"a": 1})),
    ("best unknown", lambda m: m.update(best="../elsewhere.pt")),
    ("duplicate", lambda m: m["checkpoints"].append(dict(m["checkpoints"][0]))),
])
def test_a_manifest_with_hostile_values_is_rebuilt_and_later_saves_work(tmp_path, what, change):
    """Issue 10 item 9: Infinity/NaN/wrong types raised OverflowError/ValueError and blocked saves."""
    ckpt, paths = _three(tmp_path / "ck")
    _hostile_manifest(ckpt.directory, change)
    fresh = CheckpointManager(ckpt.directory, keep_last=3)
    with pytest.warns(CheckpointWarning, match="manifest .* is damaged"):
        assert fresh.latest() == paths[-1]
    model = torch.nn.Module()
    model.register_buffer("v", torch.zeros(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        assert fresh.resume(model).path == paths[-1] and torch.equal(model.v, torch.full((4,), 2.0))
        newest = fresh.save({"v": torch.ones(4)}, epoch=4, metric=0.5)
    rebuilt = json.loads((ckpt.directory / MANIFEST_NAME).read_text())  # strict JSON again
    assert [e["file"] for e in rebuilt["checkpoints"]] == [p.name for p in paths[1:]] + [newest.name]
    assert rebuilt["best"] == newest.name
    assert CheckpointManager(ckpt.directory).latest() == newest


@pytest.mark.parametrize("name", ["../ckpt-000001.pt", "/{outside}/ckpt-000001.pt", "sub/../../ckpt-000001.pt",
                                  "ckpt-000001.pt/..", "..", "ckpt-000001.pt\x00", "ckpt-000001.pt\n"])
def test_a_manifest_naming_a_file_outside_the_folder_is_never_read_retired_or_written(tmp_path, name):
    outside = tmp_path / "outside"
    folder = outside / "ck"
    victim_maker = CheckpointManager(tmp_path / "maker", keep_last=1)
    victim = victim_maker.save({"v": torch.full((4,), 666.0)})  # a valid checkpoint someone could plant
    outside.mkdir()
    (outside / victim.name).write_bytes(victim.read_bytes())
    (outside / "notes.txt").write_text("the user's own file")
    ckpt = CheckpointManager(folder, keep_last=1)
    ckpt.save({"v": torch.zeros(4)}, epoch=1)
    name = name.format(outside=str(outside).lstrip("/"))
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["checkpoints"].insert(0, {"file": name, "seq": 0, "epoch": 0, "step": None, "metric": -1.0,
                                   "size": 10, "hash": None, "time": None})
    data["best"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    before = _snapshot(outside, folder)
    opened: list[str] = []
    real_load = torch.load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        fresh = CheckpointManager(folder, keep_last=1)
        try:
            torch.load = lambda f, *a, **k: opened.append(str(f)) or real_load(f, *a, **k)
            assert fresh.load()["v"].tolist() == [0.0] * 4
            for epoch in (2, 3):
                fresh.save({"v": torch.full((4,), float(epoch))}, epoch=epoch, metric=-5.0)
            model = torch.nn.Module()
            model.register_buffer("v", torch.zeros(4))
            assert fresh.resume(model).epoch == 3
        finally:
            torch.load = real_load
    assert _snapshot(outside, folder) == before  # nothing outside read-modified, retired or written
    assert all(Path(f).parent == folder for f in opened), opened
    # keep_last=1 plus the best (epoch 2: -5.0, the older of a tie)
    assert sorted(p.name for p in folder.iterdir()) == [
        "ckpt-000002-epoch0002.pt", "ckpt-000003-epoch0003.pt", MANIFEST_NAME]


# ------------------------------------------------------------------ earlier versions


def test_a_folder_written_by_an_earlier_version_with_sha256_keeps_loading_and_verifying(tmp_path):
    """Before xxh3: the manifest held "sha256" and torch.save wrote the file by path (with CRC)."""
    folder = tmp_path / "ck"
    folder.mkdir()
    entries = []
    for seq in (1, 2):
        path = folder / f"ckpt-{seq:06d}-epoch{seq:04d}.pt"
        torch.save({"format": "colabkit.checkpoint/1",
                    "meta": {"seq": seq, "epoch": seq, "step": None, "metric": None, "time": "2026-01-01T00:00:00Z"},
                    "state": {"v": torch.full((1000,), float(seq))}}, str(path))
        data = path.read_bytes()
        entries.append({"file": path.name, "seq": seq, "epoch": seq, "step": None, "metric": None,
                        "size": len(data), "sha256": "sha256:" + hashlib.sha256(data).hexdigest(),
                        "time": "2026-01-01T00:00:00Z"})
    (folder / MANIFEST_NAME).write_text(json.dumps(
        {"format": "colabkit.checkpoints/1", "monitor": "min", "best": None, "checkpoints": entries}, indent=1))
    ckpt = CheckpointManager(folder, keep_last=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert ckpt.load()["v"][0].item() == 2.0
    newest = folder / entries[1]["file"]
    data = bytearray(newest.read_bytes())
    data[data.find(torch.full((4,), 2.0).numpy().tobytes()) + 8] ^= 1  # a flipped bit in the tensor data
    newest.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="hash does not match.*sha256:"):
        assert ckpt.latest() == folder / entries[0]["file"]
    third = ckpt.save({"v": torch.ones(3)}, epoch=3)  # a new entry next to the old ones
    listed = json.loads((folder / MANIFEST_NAME).read_text())["checkpoints"]
    assert listed[0]["hash"].startswith("sha256:") and listed[-1]["hash"].startswith("xxh3_128:")
    assert listed[-1]["file"] == third.name


# ------------------------------------------------------------------ Drive's trash


def test_on_the_drive_mount_everything_retired_is_empty_when_unlinked(tmp_path, fake_colab, monkeypatch):
    """Issue 10 item 7: deleted files go to Drive's trash (30 days, counted in the quota)."""
    folder = fake_colab.mydrive / "project" / "checkpoints"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = folder / f".ckpt-000050.pt.{int(dead.stdout)}-deadbeef.tmp"
    stale.write_bytes(b"x" * 5000)  # a killed writer's leftover
    os.utime(stale, (1_000_000, 1_000_000))
    alive = folder / f".ckpt-000060.pt.{os.getppid()}-cafebabe.tmp"
    alive.write_bytes(b"y" * 5000)  # a live writer's temp: never touched
    os.utime(alive, (1_000_000, 1_000_000))
    unlinked: dict[str, int] = {}
    real_unlink = os.unlink

    def recording_unlink(path, *args, **kwargs):
        unlinked[os.path.basename(path)] = os.lstat(path).st_size
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", recording_unlink)
    ckpt = CheckpointManager(folder, keep_last=1, monitor=None)
    paths = [ckpt.save({"w": torch.full((5000,), float(i))}, epoch=i + 1) for i in range(3)]
    retired = {name: size for name, size in unlinked.items() if not name.endswith(".lock")}
    assert {paths[0].name, paths[1].name, stale.name} <= set(retired)
    assert any(n.startswith(f".{MANIFEST_NAME}.old-") for n in retired)  # the superseded manifests
    assert all(size == 0 for size in retired.values()), retired
    assert alive.read_bytes() == b"y" * 5000
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, paths[2].name, MANIFEST_NAME])
    assert ckpt.load()["w"][0].item() == 2.0
