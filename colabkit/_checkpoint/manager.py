"""CheckpointManager: atomic, verified, rotating checkpoints that a rerun resumes from.

A checkpoint is published only complete: it is written to a hidden temp file
in the same folder, fsynced, renamed into place with os.replace, and only then
recorded in `manifest.json` (written the same way) with its size and sha256.
Old checkpoints are deleted last, after the new one and the manifest are
durable. Loading verifies the sha256 and uses `torch.load(weights_only=True)`,
so a truncated, altered or malicious file is skipped (with a warning) in
favour of the previous one, and its pickled code never runs.

Each file is self-describing ({"format", "meta", "state"}): if the manifest is
lost or damaged, the folder is rebuilt from the files themselves.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fsio
from .._version import __version__
from ..errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigError,
    NoUsableCheckpointError,
    UnsafeCheckpointError,
)
from .._state import check_plain, is_training_state, restore_training_state, unwrap_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "colabkit.checkpoints/1"
PAYLOAD_FORMAT = "colabkit.checkpoint/1"
_FILE_RE = re.compile(r"^ckpt-(?P<seq>\d{6,})(?:-epoch(?P<epoch>\d+))?(?:-step(?P<step>\d+))?\.pt$")
_STALE_TEMP_AGE_S = 60.0
_crc_lock = threading.Lock()


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (corrupt, truncated, unsafe) or the manifest was rebuilt."""


@dataclass(frozen=True)
class ResumeInfo:
    """What `CheckpointManager.resume()` restored.

    `epoch` and `step` are the values given to `save()` (by the usual
    convention the number of finished epochs, i.e. the epoch to run next);
    `extra` holds the extras given to `training_state()`; `skipped` lists the
    newer checkpoints that were unusable and passed over.
    """

    path: Path
    epoch: int | None
    step: int | None
    metric: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[Path, ...] = ()


@dataclass
class _Entry:
    """One checkpoint as the manifest records it (sha256 None: not yet verified)."""

    file: str
    seq: int
    epoch: int | None = None
    step: int | None = None
    metric: float | None = None
    size: int | None = None
    sha256: str | None = None
    time: str | None = None
    error: CheckpointError | None = field(default=None, compare=False)  # found unreadable

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "seq": self.seq, "epoch": self.epoch, "step": self.step,
                "metric": self.metric, "size": self.size, "sha256": self.sha256, "time": self.time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Entry:
        if not isinstance(data.get("file"), str) or not _FILE_RE.match(data["file"]):
            raise ValueError(f"bad checkpoint entry {data!r}")
        return cls(file=data["file"], seq=int(data["seq"]), epoch=_opt_int(data.get("epoch")),
                   step=_opt_int(data.get("step")), metric=_opt_float(data.get("metric")),
                   size=_opt_int(data.get("size")), sha256=data.get("sha256"), time=data.get("time"))


def default_directory() -> Path:
    """The active project's checkpoints/ folder, else ./checkpoints (made absolute now)."""
    from .._project import active_project

    project = active_project()
    return project.checkpoints if project is not None else Path("checkpoints").absolute()


class CheckpointManager:
    """Save, rotate, verify and resume training checkpoints in one folder.

    >>> ckpt = CheckpointManager()                         # project's checkpoints/
    >>> start = ckpt.resume(model, optimizer, scheduler)   # None on a fresh start
    >>> for epoch in range(start.epoch if start else 0, n_epochs):
    ...     ckpt.save(training_state(model, optimizer, scheduler, epoch=epoch + 1),
    ...               epoch=epoch + 1, metric=val_loss)

    keep_last newest checkpoints are kept, plus the best by `metric`
    (monitor="min" or "max"; None disables best-keeping). With async_save=True
    `save()` copies the tensors to CPU memory and returns while one background
    thread writes (that copy, one state's worth of RAM, is kept and reused by
    the next save); call `wait()` or `close()` (or use a `with` block) before
    the runtime ends. In a torch.distributed run only rank 0 writes; every rank
    calls `save()` and all of them can load.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        keep_last: int = 3,
        monitor: str | None = "min",
        keep_best: bool = True,
        async_save: bool = False,
        remote: str | None = None,
    ) -> None:
        if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
            raise ConfigError(f"keep_last must be an integer >= 1, got {keep_last!r}.")
        if monitor not in ("min", "max", None):
            raise ConfigError(
                f"monitor must be 'min' (e.g. a loss), 'max' (e.g. an accuracy) or None, got {monitor!r}."
            )
        self.directory = Path(directory).expanduser().absolute() if directory is not None else default_directory()
        self.keep_last = keep_last
        self.monitor = monitor
        self.keep_best = keep_best
        self.async_save = async_save
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._async_message: str | None = None
        self._shares_pending = False
        self._snapshot_pool: dict[tuple, Any] = {}
        self._temps_cleaned = False
        self._probed: dict[tuple[str, int, int], _Entry | None] = {}
        self._lock = threading.RLock()
        self.remote = remote
        self._mirror = _drive_mirror(remote, self.directory) if remote is not None else None
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        remote = f", remote={self.remote!r}" if self.remote is not None else ""
        return (f"CheckpointManager({str(self.directory)!r}, keep_last={self.keep_last}, "
                f"monitor={self.monitor!r}, keep_best={self.keep_best}, async_save={self.async_save}{remote})")

    # ------------------------------------------------------------------ saving

    def save(self, state: Any, *, epoch: int | None = None, step: int | None = None,
             metric: float | None = None) -> Path:
        """Write `state` as the newest checkpoint and return its path.

        The file appears complete or not at all; the manifest then records
        epoch, step, metric, size and sha256; checkpoints beyond keep_last
        (other than the best) are deleted afterwards. Raises
        CheckpointWriteError, naming the cause and the fix, when the folder
        cannot take it; earlier checkpoints are untouched then.
        """
        self._settle()
        check_plain(state)
        epoch, step, metric = _opt_int(epoch, "epoch"), _opt_int(step, "step"), _metric(metric)
        dist = _distributed()
        writer = dist is None or dist.get_rank() == 0
        final = meta = None
        if writer:
            seq = self._next_seq()
            final = self.directory / _file_name(seq, epoch, step)
            meta = {"seq": seq, "epoch": epoch, "step": step, "metric": metric, "time": _now(),
                    "colabkit": __version__}
        if dist is not None:
            box = [str(final) if writer else None]
            dist.broadcast_object_list(box, src=0)
            final = Path(box[0])
            self._shares_pending = self.async_save
        if not writer:  # other ranks: rank 0 writes; learn how it went
            if not self.async_save:
                _receive_outcome(dist)
            return final
        if not self.async_save:
            error: BaseException | None = None
            try:
                self._write(state, meta, final)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the others
                error = exc
            if dist is not None:
                dist.broadcast_object_list([None if error is None else str(error)], src=0)
            if error is not None:
                raise error
            return final
        new_pool: dict[tuple, Any] = {}
        snapshot = _cpu_copy(state, self._snapshot_pool, new_pool)
        self._snapshot_pool = new_pool  # reused by the next save, once this write is done
        self._async_message = None
        self._writer = threading.Thread(target=self._background_write, args=(snapshot, meta, final),
                                        name="colabkit-checkpoint-writer")
        self._writer.start()
        return final

    def wait(self) -> None:
        """Block until a background save has finished; raise its error if it failed.

        In a distributed run every rank calls it (it shares rank 0's outcome).
        With a remote, it also waits for the upload to Drive (a failed upload
        is a warning: the local checkpoint is safe and the next save retries).
        """
        self._settle()
        self._wait_remote()

    def close(self) -> None:
        """Finish pending writes (raising their error). The manager stays usable."""
        self._settle()
        self._wait_remote()

    def _wait_remote(self) -> None:
        if self._mirror is None:
            return
        error = self._mirror.wait()
        if error is not None:
            warnings.warn(
                f"The checkpoints in {self.directory} are saved locally but not yet on Drive "
                f"({self.remote}): {error}. The next save() tries again; keep the runtime alive until "
                "it succeeds.", CheckpointWarning, stacklevel=3,
            )

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _background_write(self, state: Any, meta: dict[str, Any], final: Path) -> None:
        try:
            self._write(state, meta, final)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's next call
            self._writer_error = exc
            self._async_message = str(exc)

    def _join_local(self) -> None:
        """Wait for this process's writer thread; raise what it failed with (once)."""
        writer = self._writer
        if writer is not None:
            writer.join()
            self._writer = None
        error, self._writer_error = self._writer_error, None
        if error is not None:
            raise error

    def _settle(self) -> None:
        """Finish the previous async save; in a distributed run all ranks learn its outcome.

        Collectives happen here, in the caller's thread, never in the writer
        thread (they would interleave with the training loop's own).
        """
        dist = _distributed()
        if dist is not None and self._shares_pending:
            self._shares_pending = False
            if dist.get_rank() == 0:
                if self._writer is not None:
                    self._writer.join()
                    self._writer = None
                dist.broadcast_object_list([self._async_message], src=0)
            else:
                _receive_outcome(dist)
        self._join_local()

    def _write(self, state: Any, meta: dict[str, Any], final: Path) -> None:
        """The durable part: temp file, fsync, replace, manifest, then retire old ones."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fsio.write_error(exc, "the checkpoint folder", self.directory) from exc
        self._clean_stale_temps()
        payload = {"format": PAYLOAD_FORMAT, "meta": meta, "state": state}
        tmp = _fsio.temp_path(final)
        try:
            _fsio._create_exclusive(tmp)
            _torch_save(payload, tmp)
            size, digest = _fsio.fsync_and_hash(tmp)
            os.replace(tmp, final)
        except BaseException as exc:
            _fsio.remove_quietly(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
                raise _fsio.write_error(exc, "checkpoint", final) from exc
            raise
        _fsio.fsync_dir(self.directory)
        entry = _Entry(file=final.name, seq=meta["seq"], epoch=meta["epoch"], step=meta["step"],
                       metric=meta["metric"], size=size, sha256=digest, time=meta["time"])
        with self._lock:
            # unreadable files are neither kept in the manifest nor deleted: left for a human
            entries = [e for e in self._entries(written=entry) if e.error is None]
            keep = self._keep(entries)
            for kept in keep:
                if kept.sha256 is None:  # found without the manifest (rebuilt): hash it now
                    kept.size, kept.sha256 = _fsio.sha256_file(self.directory / kept.file)
            try:
                self._write_manifest(keep)
            except OSError as exc:
                # the checkpoint itself is complete and durable; a manifest rebuild finds it
                raise _fsio.write_error(exc, "the checkpoint manifest", self.directory / MANIFEST_NAME) from exc
            self._on_published(entry)
            self._retire(entries, keep)

    def _on_published(self, entry: _Entry) -> None:
        """Called once a checkpoint and the manifest that lists it are durable.

        The seam for mirroring a checkpoint elsewhere: with remote="drive:…" the
        folder is mirrored to Drive through its API, in the background.
        """
        if self._mirror is not None:
            self._mirror.schedule()

    def _keep(self, entries: list[_Entry]) -> list[_Entry]:
        ordered = sorted(entries, key=lambda e: e.seq)
        keep = ordered[-self.keep_last:]
        best = self._best_entry(ordered) if self.keep_best else None
        if best is not None and best not in keep:
            keep = sorted([*keep, best], key=lambda e: e.seq)
        return keep

    def _by_metric(self, entries: list[_Entry]) -> list[_Entry]:
        """The entries that have a metric, best first (on a tie the older); [] when monitor is None."""
        if self.monitor is None:
            return []
        sign = 1.0 if self.monitor == "min" else -1.0
        scored = [e for e in entries if e.metric is not None and not math.isnan(e.metric)]
        return sorted(scored, key=lambda e: (sign * e.metric, e.seq))

    def _best_entry(self, entries: list[_Entry]) -> _Entry | None:
        ranked = self._by_metric(entries)
        return ranked[0] if ranked else None

    def _retire(self, entries: list[_Entry], keep: list[_Entry]) -> None:
        kept = {e.file for e in keep}
        for entry in entries:
            if entry.file not in kept:
                _fsio.remove_quietly(self.directory / entry.file)

    def _write_manifest(self, entries: list[_Entry]) -> None:
        best = self._best_entry(entries)
        manifest = {
            "format": MANIFEST_FORMAT,
            "monitor": self.monitor,
            "best": best.file if best is not None else None,
            "checkpoints": [e.to_dict() for e in sorted(entries, key=lambda e: e.seq)],
        }
        data = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode()
        _fsio.write_bytes_atomic(self.directory / MANIFEST_NAME, data)

    def _clean_stale_temps(self) -> None:
        """Delete temp files a killed process left behind: its pid is gone, or the file has
        been idle for a minute (a writer on another machine). Our own are never touched."""
        if self._temps_cleaned:
            return
        self._temps_cleaned = True
        now = time.time()
        for path in self._listdir():
            owner = _fsio.temp_owner_pid(path.name) if _fsio.is_temp_name(path.name) else None
            if owner is None or owner == os.getpid():
                continue
            try:
                if not _fsio.process_alive(owner) or now - path.stat().st_mtime >= _STALE_TEMP_AGE_S:
                    path.unlink()
            except OSError:
                pass

    def _next_seq(self) -> int:
        seqs = [e.seq for e in self._manifest_entries() or []]
        seqs += [int(m.group("seq")) for m in map(_FILE_RE.match, (p.name for p in self._listdir())) if m]
        return max(seqs, default=0) + 1

    # ------------------------------------------------------------------ finding

    def _listdir(self) -> list[Path]:
        try:
            return list(self.directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _manifest_entries(self) -> list[_Entry] | None:
        """The manifest's entries; None when it is missing or unreadable."""
        path = self.directory / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            return [_Entry.from_dict(item) for item in data["checkpoints"]]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._warn(f"The checkpoint manifest {path} is damaged ({exc}); rebuilding the list from "
                       "the checkpoint files themselves.")
            return None

    def _warn(self, message: str) -> None:
        """A CheckpointWarning, once per manager and message (one save consults the folder often)."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, CheckpointWarning, stacklevel=4)

    def _entries(self, written: _Entry | None = None) -> list[_Entry]:
        """Every checkpoint in the folder, oldest first: the manifest's, plus complete files it
        does not list (saved just before a crash, or after the manifest was lost).

        Unlisted files are read for their metadata, except `written`: the file save() has
        just published, which it already describes (re-reading it would cost every save a
        load of the whole file).
        """
        listed = self._manifest_entries() or []
        present = {p.name: p for p in self._listdir() if _FILE_RE.match(p.name)}
        entries = [e for e in listed if e.file in present]
        for gone in (e for e in listed if e.file not in present):
            warnings.warn(f"Checkpoint {self.directory / gone.file} is listed in the manifest but "
                          "missing (deleted, or not yet synced by Drive); using the previous one.",
                          CheckpointWarning, stacklevel=3)
        if written is not None:
            entries = [e for e in entries if e.file != written.file] + [written]
        known = {e.file for e in entries}
        for name, path in present.items():
            if name not in known:
                probed = self._probe(path)
                if probed is not None:
                    entries.append(probed)
        return sorted(entries, key=lambda e: e.seq)

    def _probe(self, path: Path) -> _Entry | None:
        """Read an unlisted file's own metadata (memory-mapped: tensors are not read)."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = (path.name, st.st_size, st.st_mtime_ns)
        if key not in self._probed:
            entry = None
            try:
                try:
                    payload = _load_file(path, "cpu", mmap=True)
                except UnsafeCheckpointError:
                    raise
                except Exception:  # noqa: BLE001 - some filesystems (FUSE) refuse mmap: read it all
                    payload = _load_file(path, "cpu")
                meta = (payload.get("meta") if _is_payload(payload) else None) or {}
                seq = int(_FILE_RE.match(path.name).group("seq"))
                entry = _Entry(file=path.name, seq=seq, epoch=_opt_int(meta.get("epoch")),
                               step=_opt_int(meta.get("step")), metric=_opt_float(meta.get("metric")),
                               size=st.st_size, time=meta.get("time"))
            except CheckpointError as exc:
                entry = _unreadable_entry(path, exc)
            except Exception as exc:  # noqa: BLE001 - truncated / damaged files raise many kinds
                entry = _unreadable_entry(path, _unreadable(exc))
            self._probed[key] = entry
        return self._probed[key]

    def _candidates(self) -> list[_Entry]:
        """Where resume looks, newest first (the one place to add other sources).

        With a remote and no checkpoint here (a new runtime), the newest
        verified checkpoint on Drive is downloaded first.
        """
        entries = self._entries()
        if not entries and self._mirror is not None:
            dist = _distributed()
            if dist is None or dist.get_rank() == 0:
                self._mirror.restore()
            if dist is not None:
                dist.barrier()
            entries = self._entries()
        return list(reversed(entries))

    def checkpoints(self) -> list[Path]:
        """Every checkpoint file in the folder, oldest first (not verified)."""
        self._join_local()
        return [self.directory / e.file for e in self._entries()]

    def latest(self) -> Path | None:
        """The newest checkpoint that verifies (sha256 and a safe load), or None."""
        self._join_local()
        found = self._first_usable(self._candidates())
        return found[0] if found else None

    def best(self) -> Path | None:
        """The checkpoint with the best metric that verifies, or None (monitor=None: None)."""
        if self.monitor is None:
            return None
        self._join_local()
        found = self._first_usable(self._by_metric(self._entries()))
        return found[0] if found else None

    def _first_usable(self, entries: list[_Entry], map_location: Any = "cpu",
                      ) -> tuple[Path, Any, _Entry, tuple[Path, ...]] | None:
        """Load candidates in order until one verifies: (path, payload, entry, skipped).

        Callers wait for a write in flight (_join_local) before listing the candidates.
        """
        failures: list[tuple[Path, CheckpointError]] = []
        for entry in entries:
            path = self.directory / entry.file
            try:
                payload = self._read(path, entry, map_location)
            except CheckpointError as exc:
                warnings.warn(f"Skipping checkpoint {path}: {exc}", CheckpointWarning, stacklevel=3)
                failures.append((path, exc))
                continue
            return path, payload, entry, tuple(p for p, _ in failures)
        if failures:
            listing = "\n".join(f"  {p.name}: {e}" for p, e in failures)
            kind = (UnsafeCheckpointError if all(isinstance(e, UnsafeCheckpointError) for _, e in failures)
                    else NoUsableCheckpointError)
            raise kind(
                f"None of the {len(failures)} checkpoint(s) in {self.directory} can be used:\n{listing}\n"
                "Nothing was deleted. Move these files aside (or pass another directory) to start "
                "afresh, or restore a good copy from Drive's version history."
            )
        return None

    def _read(self, path: Path, entry: _Entry | None, map_location: Any) -> dict[str, Any]:
        expected = entry.sha256 if entry is not None else None
        if entry is not None and entry.error is not None:
            raise entry.error
        return _verified_load(path, expected, map_location)

    # ------------------------------------------------------------------ loading

    def load(self, path: str | os.PathLike[str] | None = None, map_location: Any = "cpu") -> Any:
        """The state exactly as it was given to `save()`: from `path`, or the newest usable one.

        Without a path, unusable checkpoints are skipped with a warning;
        NoUsableCheckpointError when none can be loaded (or there are none).
        """
        self._join_local()
        if path is not None:
            target = Path(path)
            if not target.is_absolute() and not target.exists():
                target = self.directory / target
            entry = next((e for e in self._manifest_entries() or [] if e.file == target.name
                          and target.parent.absolute() == self.directory), None)
            try:
                return _unwrap(_verified_load(target, entry.sha256 if entry else None, map_location))
            except UnsafeCheckpointError:
                raise  # names the file and the fix already
            except CheckpointError as exc:
                raise CheckpointError(
                    f"Cannot load checkpoint {target}: {exc} Load another one (checkpoints() lists "
                    "them), or call load() without a path for the newest usable one."
                ) from None
        found = self._first_usable(self._candidates(), map_location)
        if found is None:
            raise NoUsableCheckpointError(
                f"There are no checkpoints in {self.directory} yet. Save one with "
                "CheckpointManager.save(), or use resume(), which returns None on a fresh start."
            )
        return _unwrap(found[1])

    def resume(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None,
               scaler: Any = None, *, generator: torch.Generator | None = None) -> ResumeInfo | None:
        """Restore the newest usable checkpoint into the objects given; None on a fresh start.

        A `training_state()` checkpoint restores model, optimizer, scheduler,
        scaler and every RNG (plus `generator`'s, when given); a bare
        state_dict restores the model only. The optimizer gets the saved
        learning rate (and other param_groups settings) back, so a changed
        lr is silently ignored unless you set it in optimizer.param_groups
        after resume().
        """
        self._join_local()
        found = self._first_usable(self._candidates())
        if found is None:
            return None
        path, payload, entry, skipped = found
        meta = payload.get("meta", {}) if _is_payload(payload) else {}
        state = _unwrap(payload)
        extra: dict[str, Any] = {}
        if is_training_state(state):
            extra = restore_training_state(state, model, optimizer, scheduler, scaler, generator=generator)
        elif isinstance(state, dict):
            unwrap_model(model).load_state_dict(state)
        else:
            raise CheckpointError(
                f"{path} holds a {type(state).__name__}, not a training state or state_dict. Load it "
                "with CheckpointManager.load() and restore it yourself."
            )
        epoch = entry.epoch if entry.epoch is not None else _opt_int(meta.get("epoch", extra.get("epoch")))
        step = entry.step if entry.step is not None else _opt_int(meta.get("step", extra.get("step")))
        return ResumeInfo(path=path, epoch=epoch, step=step, metric=entry.metric, extra=extra, skipped=skipped)


# ---------------------------------------------------------------------- helpers


def _drive_mirror(remote: str, directory: Path) -> Any:
    """A drive_api.CheckpointMirror for remote="drive:<folder>" (needs the drive-api extra)."""
    from .._drive_api.client import CheckpointMirror, parse_remote

    return CheckpointMirror(parse_remote(remote), directory, manifest_name=MANIFEST_NAME,
                            describe=_describe_manifest, is_checkpoint=lambda name: bool(_FILE_RE.match(name)))


def _describe_manifest(data: bytes) -> tuple[list[tuple[str, str | None]], str | None]:
    """(file, sha256 hex) of each checkpoint a manifest lists, oldest first, and its best file."""
    manifest = json.loads(data)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
    entries = sorted((_Entry.from_dict(item) for item in manifest["checkpoints"]), key=lambda e: e.seq)
    hexes = [e.sha256.removeprefix("sha256:") if e.sha256 else None for e in entries]  # drive_api wants hex
    return [(e.file, digest) for e, digest in zip(entries, hexes)], manifest.get("best")


def _file_name(seq: int, epoch: int | None, step: int | None) -> str:
    name = f"ckpt-{seq:06d}"
    if epoch is not None:
        name += f"-epoch{epoch:04d}"
    if step is not None:
        name += f"-step{step:08d}"
    return name + ".pt"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _opt_int(value: Any, name: str = "value") -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number or None, got {value!r}.") from None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _metric(value: Any) -> float | None:
    """A metric as a float (accepts tensors and NumPy scalars); None stays None."""
    if value is None:
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"metric must be a number (e.g. the validation loss), got {value!r}.") from None
    return None if math.isnan(number) or math.isinf(number) else number


def _unreadable_entry(path: Path, error: CheckpointError) -> _Entry:
    seq = int(_FILE_RE.match(path.name).group("seq"))
    return _Entry(file=path.name, seq=seq, error=error)


def _unreadable(exc: BaseException) -> CheckpointError:
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return CheckpointError(f"the file is unreadable or truncated ({type(exc).__name__}: {detail}).")


def _is_payload(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == PAYLOAD_FORMAT and "state" in obj


def _unwrap(payload: Any) -> Any:
    return payload["state"] if _is_payload(payload) else payload


def _receive_outcome(dist: Any) -> None:
    """Ranks other than 0: raise if rank 0 reports that its write failed."""
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CheckpointWriteError(f"Rank 0 could not write the checkpoint: {box[0]}")


def _distributed() -> Any:
    """torch.distributed when a process group is running (more than one rank), else None."""
    import sys

    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _cpu_copy(obj: Any, pool: dict[tuple, Any], new_pool: dict[tuple, Any],
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
                _copy_into(buffer, source)
            new_pool[key] = buffer
            memo[id(obj)] = buffer
        return memo[id(obj)]
    if isinstance(obj, dict):
        return type(obj)((k, _cpu_copy(v, pool, new_pool, memo, (*key, k))) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v, pool, new_pool, memo, (*key, i)) for i, v in enumerate(obj))
    if isinstance(obj, set):
        return {_cpu_copy(v, {}, {}, memo) for v in obj}
    return obj


def _copy_into(buffer: Any, source: Any) -> None:
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


def _torch_save(payload: Any, tmp: Path) -> None:
    """torch.save to `tmp`, skipping torch's per-record CRC32 (the sha256 covers the file).

    The path-based writer is the fast one but reports write failures without
    their errno; on failure the write is repeated through a Python file object
    so that the real OSError (disk full, quota, file too large) surfaces.
    """
    import torch

    get_crc = getattr(torch.serialization, "get_crc32_options", None)
    set_crc = getattr(torch.serialization, "set_crc32_options", None)
    try:
        with _crc_lock:
            previous = get_crc() if get_crc else None
            if set_crc:
                set_crc(False)
            try:
                torch.save(payload, str(tmp))
            finally:
                if set_crc and previous is not None:
                    set_crc(previous)
    except RuntimeError as first:
        recorder = _ErrnoRecorder(tmp)
        try:
            torch.save(payload, recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from first
            raise
        finally:
            recorder.close()


class _ErrnoRecorder:
    """A file object for torch.save that keeps the OSError a write raised."""

    def __init__(self, path: Path) -> None:
        self.error: OSError | None = None
        self._handle = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._handle.close()


def _load_file(path: Path, map_location: Any, mmap: bool = False) -> Any:
    """torch.load(weights_only=True), with a refused pickle turned into UnsafeCheckpointError."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path} contains pickled Python objects that could run code when loaded, so it was "
            f"refused and nothing in it was executed ({str(exc).splitlines()[0]}). Load only "
            "checkpoints you trust; colabkit itself saves plain tensors and data."
        ) from None


def _verified_load(path: Path, expected_sha256: str | None, map_location: Any) -> Any:
    """Load `path`, checking its sha256 (in a parallel thread) when one is expected."""
    if not path.is_file():
        raise CheckpointError("the file does not exist.")  # callers name the path
    hashed: list[Any] = []
    hasher = None
    if expected_sha256 is not None:
        def digest() -> None:
            try:
                hashed.append(_fsio.sha256_file(path)[1])
            except OSError as exc:
                hashed.append(exc)

        hasher = threading.Thread(target=digest, name="colabkit-verify")
        hasher.start()
    load_error: BaseException | None = None
    result: Any = None
    try:
        result = _load_file(path, map_location)
    except UnsafeCheckpointError as exc:
        load_error = exc
    except Exception as exc:  # noqa: BLE001 - truncated / damaged files raise many kinds
        load_error = _unreadable(exc)
    if hasher is not None:
        hasher.join()
        actual = hashed[0]
        if isinstance(actual, OSError):
            raise CheckpointError(f"reading it failed ({actual}).")
        if actual != expected_sha256:
            raise CheckpointError(
                f"its sha256 does not match the manifest (the file is damaged or was only partly "
                f"synced): expected {expected_sha256}, found {actual}."
            )
    if load_error is not None:
        raise load_error
    return result
