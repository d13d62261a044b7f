"""Checkpoint cost against the tools users would pick instead, side by side in one run.

- resume: `CheckpointManager.resume()` (xxh3-128 verified, mmap load, restore
  into model + Adam) against plain `torch.load` + `load_state_dict`, Lightning
  `fabric.load`, `torch.load(mmap=True)` + restore and safetensors (weights
  only), each measured ONCE per fresh process (how a rerun resumes), warm and
  cold page cache (cold: posix_fadvise DONTNEED on the file first), with the
  peak extra anonymous memory (RssAnon sampled every 2 ms above the level
  before loading: what can run a 12.7 GB Colab VM out of memory; page cache
  and clean mapped file pages are reclaimable and not counted);
- save: `save()` against an atomic torch.save without torch's CRC + fsync +
  os.replace (the fair baseline), plain torch.save + fsync, Fabric save and
  safetensors save_file (weights only);
- async: the time save() blocks, and the extra memory held with
  async_memory="reuse" / "free" (Lightning's async checkpointing holds 2.0x);
- lock: what the folder lock adds to one save().

Every ratio is the median of per-round paired ratios (order rotated each
round), with its spread (min-max) and N. Sizes 10 and 100 MiB (--quick: 10);
COLABKIT_BENCH_LARGE=1 adds 1 GiB (needs ~6 GB RAM, minutes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import Figure, fsync_file

MiB = 1 << 20


# ------------------------------------------------------------------ shared helpers


def _build(megabytes: int) -> tuple[Any, Any]:
    """A model whose training state (weights + Adam's two moments) is about `megabytes`."""
    import torch

    torch.manual_seed(0)
    params = megabytes * MiB // 4 // 3  # float32; Adam keeps two more copies
    layers = max(1, params // (1024 * 1024))
    width = max(1, params // (1024 * layers))
    model = torch.nn.Sequential(*(torch.nn.Linear(1024, width, bias=False) for _ in range(layers)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return model, optimizer


def _anon_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakAnon:
    """Samples RssAnon in a thread; `.peak` is the highest value seen."""

    def __enter__(self) -> _PeakAnon:
        import threading

        self.peak = self.start = _anon_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _anon_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon_bytes())


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _paired(contenders: dict[str, Callable[[], object]], rounds: int,
            setup: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Seconds of each contender per round, the order rotated every round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            if setup is not None:
                setup()
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _ratio(times: dict[str, list[float]], name: str, baseline: str) -> tuple[float, str]:
    ratios = [a / b for a, b in zip(times[name], times[baseline])]
    median = statistics.median(ratios)
    ms = statistics.median(times[name]) * 1e3, statistics.median(times[baseline]) * 1e3
    return median, (f"median of {len(ratios)} paired ratios {median:.2f} (spread {min(ratios):.2f}-"
                    f"{max(ratios):.2f}); {name} {ms[0]:.0f} ms, {baseline} {ms[1]:.0f} ms")


# ------------------------------------------------------------------ resume, in fresh processes

_PROBES = ("colabkit", "torch.load", "torch.load(mmap)", "fabric.load", "safetensors")


def _probe(kind: str, folder: str, megabytes: int) -> dict[str, float]:
    """Run in a fresh process: one resume of `kind`; its seconds and peak extra anonymous memory."""
    import torch

    torch.set_num_threads(1)
    model, optimizer = _build(megabytes)
    root = Path(folder)
    if kind == "fabric.load":
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator="cpu", devices=1)
    import colabkit

    # imported and built before the clock starts, like torch for all and Fabric for fabric.load:
    # the first use of colabkit.CheckpointManager imports its module (~27 ms here), a once-per-process
    # cost that is not the resume's
    manager = colabkit.CheckpointManager(root / "colabkit")
    with _PeakAnon() as memory:
        start = time.perf_counter()
        if kind == "colabkit":
            info = manager.resume(model, optimizer)
            assert info is not None
        elif kind in ("torch.load", "torch.load(mmap)"):
            state = torch.load(root / "plain.pt", weights_only=True, mmap=kind.endswith("(mmap)"))
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        elif kind == "fabric.load":
            fabric.load(root / "fabric.ckpt", {"model": model, "optimizer": optimizer})
        else:
            from safetensors.torch import load_model

            load_model(model, str(root / "model.safetensors"))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak": memory.peak - memory.start}


def _write_sources(folder: Path, megabytes: int) -> tuple[float, dict[str, Path]]:
    import torch

    import colabkit

    model, optimizer = _build(megabytes)
    state = colabkit.training_state(model, optimizer)
    files = {"colabkit": colabkit.CheckpointManager(folder / "colabkit").save(state, epoch=1)}
    files["torch.load"] = files["torch.load(mmap)"] = folder / "plain.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, folder / "plain.pt")
    files["safetensors"] = folder / "model.safetensors"
    try:
        from safetensors.torch import save_model

        save_model(model, str(files["safetensors"]))
    except ImportError:
        files.pop("safetensors")
    try:
        from lightning.fabric import Fabric

        Fabric(accelerator="cpu", devices=1).save(folder / "fabric.ckpt", {"model": model, "optimizer": optimizer})
        files["fabric.load"] = folder / "fabric.ckpt"
    except ImportError:
        pass
    size = sum(t.numel() * t.element_size() for t in state["model"].values())
    size += sum(t.numel() * t.element_size() for s in state["optimizer"]["state"].values()
                for t in s.values() if hasattr(t, "numel"))
    return size, files


def _resume_figures(megabytes: int, rounds: int, root: Path) -> list[Figure]:
    folder = root / f"resume-{megabytes}"
    folder.mkdir()
    size, files = _write_sources(folder, megabytes)
    kinds = [k for k in _PROBES if k in files]
    figures = []
    for cache in ("warm", "cold"):
        seconds: dict[str, list[float]] = {k: [] for k in kinds}
        peaks: dict[str, list[float]] = {k: [] for k in kinds}
        for index in range(rounds):
            shift = index % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                if cache == "cold":
                    _drop_cache(files[kind])
                else:
                    files[kind].read_bytes()  # in the page cache
                out = subprocess.run([sys.executable, "-m", "benchmarks.bench_checkpoint", "probe", kind,
                                      str(folder), str(megabytes)], capture_output=True, text=True,
                                     check=True, cwd=Path(__file__).resolve().parent.parent)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                seconds[kind].append(result["seconds"])
                peaks[kind].append(result["peak"])
        label = f"{size / MiB:.0f} MiB, {cache} cache, fresh process"
        ratio, detail = _ratio(seconds, "colabkit", "torch.load")
        figures.append(Figure(f"resume() / torch.load+load_state_dict ({label})", ratio, 0.6, "lower", detail))
        if "fabric.load" in seconds:
            ratio, detail = _ratio(seconds, "colabkit", "fabric.load")
            figures.append(Figure(f"resume() / fabric.load ({label})", ratio, 1.0, "lower", detail))
        for peer in ("torch.load(mmap)", "safetensors"):
            if peer in seconds:
                ratio, detail = _ratio(seconds, "colabkit", peer)
                figures.append(Figure(f"resume() / {peer} (reference; {label})", ratio, float("inf"),
                                      "lower", detail))
        peak = {k: statistics.median(v) / size for k, v in peaks.items()}
        figures.append(Figure(f"resume() peak extra memory / state ({label})", peak["colabkit"], 0.5, "lower",
                              "peaks (RssAnon above the level before loading, x state): "
                              + ", ".join(f"{k} {v:.2f}" for k, v in peak.items())))
    return figures


# ------------------------------------------------------------------ save, lock, async (in process)


def _save_figures(megabytes: int, rounds: int, root: Path) -> list[Figure]:
    import torch

    import colabkit

    folder = root / f"save-{megabytes}"
    folder.mkdir()
    model, optimizer = _build(megabytes)
    state = colabkit.training_state(model, optimizer)
    manager = colabkit.CheckpointManager(folder / "colabkit", keep_last=2)

    def atomic_no_crc() -> None:  # the fair baseline: what save() must do at least
        tmp, final = folder / ".atomic.tmp", folder / "atomic.pt"
        torch.serialization.set_crc32_options(False)
        try:
            torch.save(state, tmp)
        finally:
            torch.serialization.set_crc32_options(True)
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_file(folder)  # the rename is durable only once its folder is synced

    def torch_save() -> None:
        torch.save(state, folder / "plain.pt")
        fsync_file(folder / "plain.pt")

    contenders: dict[str, Callable[[], object]] = {
        "save()": lambda: manager.save(state, epoch=1), "atomic torch.save (no CRC)+fsync": atomic_no_crc,
        "torch.save+fsync": torch_save}
    try:
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator="cpu", devices=1)

        def fabric_save() -> None:
            fabric.save(folder / "fabric.ckpt", {"model": model, "optimizer": optimizer})
            fsync_file(folder / "fabric.ckpt")

        contenders["fabric.save+fsync"] = fabric_save
    except ImportError:
        pass
    times = _paired(contenders, rounds)
    label = f"{megabytes} MiB state"
    ratio, detail = _ratio(times, "save()", "atomic torch.save (no CRC)+fsync")
    figures = [Figure(f"save() / atomic torch.save without CRC + fsync ({label})", ratio, 1.10, "lower", detail)]
    for peer in ("torch.save+fsync", "fabric.save+fsync"):
        if peer in times:
            ratio, detail = _ratio(times, "save()", peer)
            figures.append(Figure(f"save() / {peer} (reference; {label})", ratio, float("inf"), "lower", detail))
    return figures


def _lock_figure(root: Path) -> Figure:
    from colabkit._checkpoint import folder as ckpt_folder

    directory = root / "lock"
    directory.mkdir()
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        with ckpt_folder.lock(directory):
            pass
        samples.append(time.perf_counter() - start)
    per_save = 2 * statistics.median(samples) * 1e3  # one save takes the lock twice (reserve, publish)
    return Figure("folder lock added to one save() (ms)", per_save, 5.0, "lower",
                  f"2 x median of {len(samples)} lock/unlock pairs {statistics.median(samples) * 1e3:.2f} ms "
                  f"(spread {min(samples) * 1e3:.2f}-{max(samples) * 1e3:.2f} ms)")


def _async_probe(memory: str, megabytes: int, folder: str) -> dict[str, float]:
    """Fresh process: extra anonymous memory during and after async saves (x state), and block time."""
    import gc

    import torch

    import colabkit

    torch.set_num_threads(1)
    model, optimizer = _build(megabytes)
    state = colabkit.training_state(model, optimizer)
    gc.collect()
    manager = colabkit.CheckpointManager(folder, keep_last=2, async_save=True, async_memory=memory)
    blocked = []
    with _PeakAnon() as peak:
        for epoch in range(3):
            start = time.perf_counter()
            manager.save(state, epoch=epoch + 1)
            blocked.append(time.perf_counter() - start)
            manager.wait()
        gc.collect()
        held = _anon_bytes() - peak.start
    return {"peak": peak.peak - peak.start, "held": held, "blocked": statistics.median(blocked[1:])}


def _async_figures(megabytes: int, root: Path) -> list[Figure]:
    results = {}
    for memory in ("reuse", "free"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_checkpoint", "async", memory,
                              str(root / f"async-{memory}"), str(megabytes)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parent.parent)
        results[memory] = json.loads(out.stdout.strip().splitlines()[-1])
    size = megabytes * MiB
    return [Figure(f"async save() extra memory held between saves / state ({memory})",
                   results[memory]["held"] / size, 1.05 if memory == "reuse" else 0.1, "lower",
                   f"peak during a write {results[memory]['peak'] / size:.2f}x, save() blocks "
                   f"{results[memory]['blocked'] * 1e3:.0f} ms ({megabytes} MiB; Lightning's async peaks at 2.0x)")
            for memory in ("reuse", "free")]


def run(quick: bool = False) -> list[Figure]:
    sizes = [10] if quick else [10, 100]
    if os.environ.get("COLABKIT_BENCH_LARGE"):
        sizes.append(1024)
    rounds = 3 if quick else 7
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-", dir=os.environ.get("COLABKIT_BENCH_DIR")) as tmp:
        root = Path(tmp)
        for megabytes in sizes:
            figures += _save_figures(megabytes, rounds, root)
            figures += _resume_figures(megabytes, max(3, rounds // 2), root)
        figures.append(_lock_figure(root))
        figures += _async_figures(sizes[-1] if quick else 100, root)
    return figures


if __name__ == "__main__":  # the fresh-process probes: python -m benchmarks.bench_checkpoint probe|async ...
    if sys.argv[1] == "probe":
        print(json.dumps(_probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif sys.argv[1] == "async":
        print(json.dumps(_async_probe(sys.argv[2], int(sys.argv[4]), sys.argv[3])))
