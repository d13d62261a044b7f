"""CheckpointManager: atomic, verified, rotating checkpoints that a rerun resumes from.

A checkpoint is published only complete: it is written to a hidden temp file
in the same folder (hashed with xxh3-128 as the bytes are written), fsynced,
renamed into place, and only then recorded in `manifest.json` with its size
and hash. Old checkpoints are retired last. Loading verifies the hash and uses
`torch.load(weights_only=True)`, so a truncated, altered or malicious file is
skipped (with a warning) in favour of the previous one, and its pickled code
never runs. Each file is self-describing ({"format", "meta", "state"}): if the
manifest is lost or damaged, the folder is rebuilt from the files themselves.

The parts live beside this module: `manifest` (schema, validation),
`folder` (several writers on one folder), `torch_io` (serialization,
verified loading), `writer` (async snapshot and thread), `ranks`
(torch.distributed), `mirror` (Drive API copy).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fsio
from .._validate import check_count
from .._state import (
    check_plain,
    is_training_state,
    restore_training_state,
    unwrap_model,
)
from .._version import __version__
from ..errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigError,
    NoUsableCheckpointError,
    UnsafeCheckpointError,
)
from . import folder, manifest, ranks, torch_io
from .manifest import MANIFEST_NAME, Entry
from .writer import ASYNC_MEMORY, BackgroundWriter, Snapshots, release_memory

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["MANIFEST_NAME", "CheckpointManager", "CheckpointWarning", "ResumeInfo", "default_directory"]


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (corrupt, truncated, unsafe), or the manifest was rebuilt.

    Filter it like any warning, e.g.
    `warnings.simplefilter("error", colabkit.CheckpointWarning)` to stop instead.
    """


@dataclass(frozen=True)
class ResumeInfo:
    """What `CheckpointManager.resume()` restored.

    Attributes:
        path: The checkpoint file that was loaded.
        epoch: The epoch given to `save()` (by the usual convention the number
            of finished epochs, i.e. the epoch to run next), or None.
        step: The step given to `save()`, or None.
        metric: The metric given to `save()`, or None.
        extra: The extras given to `training_state()` (e.g. config, counters).
        skipped: Newer checkpoints that were unusable and passed over.
    """

    path: Path
    epoch: int | None
    step: int | None
    metric: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[Path, ...] = ()


@dataclass
class _Job:
    """One reserved checkpoint: its final name, its temp file and its metadata."""

    final: Path
    tmp: Path
    meta: dict[str, Any]


def default_directory() -> Path:
    """The active project's checkpoints/ folder, else ./checkpoints (made absolute now)."""
    from .._project import active_project

    project = active_project()
    return project.checkpoints if project is not None else Path("checkpoints").absolute()


class CheckpointManager:
    """Save, rotate, verify and resume training checkpoints in one folder.

    Typical use (`model`, `optimizer`, ... are yours)::

        ckpt = CheckpointManager()                         # the project's checkpoints/
        start = ckpt.resume(model, optimizer, scheduler)   # None on a fresh start
        for epoch in range(start.epoch if start else 0, n_epochs):
            ...
            ckpt.save(training_state(model, optimizer, scheduler, epoch=epoch + 1),
                      epoch=epoch + 1, metric=val_loss)

    Several processes may save into one folder at once (two notebooks, a
    notebook and a `!python`): each save reserves its file name exclusively
    and merges its entry into the manifest under an inter-process lock, so
    every path `save()` returns holds exactly what that save wrote (unless
    retention later retired it: keep_last counts the folder's checkpoints, of
    all writers). In a torch.distributed run only rank 0 writes; every rank
    calls `save()` and all of them can load.

    Args:
        directory: The folder for the checkpoints (created when needed).
            Default: the active project's `checkpoints/`, else `./checkpoints`.
        keep_last: How many of the newest checkpoints to keep (>= 1).
        monitor: "min" (e.g. a loss) or "max" (e.g. an accuracy): which
            `metric` is best; None disables best-keeping.
        keep_best: Keep the best checkpoint besides the keep_last newest.
        async_save: `save()` copies the tensors to CPU memory and returns
            while one background thread writes; call `wait()` or `close()`
            (or use a `with` block) before the runtime ends.
        remote: "drive:<folder in My Drive>" mirrors the folder to Google
            Drive through its API (needs the drive-api extra).
        async_memory: With async_save, "reuse" keeps the CPU copy (one
            state's worth of RAM) for the next save, so saving costs only a
            memcpy; "free" drops it once each write is done (less RAM held
            between saves, an allocation per save).

    Raises:
        ConfigError: A setting is out of range.
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
        async_memory: str = "reuse",
    ) -> None:
        check_count(keep_last, "keep_last", minimum=1, hint="how many recent checkpoints stay on disk")
        if monitor not in ("min", "max", None):
            raise ConfigError(
                f"monitor must be 'min' (e.g. a loss), 'max' (e.g. an accuracy) or None, got {monitor!r}."
            )
        if async_memory not in ASYNC_MEMORY:
            raise ConfigError(f"async_memory must be 'reuse' or 'free', got {async_memory!r}.")
        self.directory = Path(directory).expanduser().absolute() if directory is not None else default_directory()
        self.keep_last = keep_last
        self.monitor = monitor
        self.keep_best = keep_best
        self.async_save = async_save
        self.async_memory = async_memory
        self._writer = BackgroundWriter()
        self._snapshots = Snapshots(async_memory)
        self._shares_pending = False
        self._temps_cleaned = False
        self._probed: dict[tuple[str, int, int], Entry | None] = {}
        self._lock = threading.RLock()
        self._last_seq = 0
        self.remote = remote
        self._mirror = None
        if remote is not None:
            from .mirror import drive_mirror

            self._mirror = drive_mirror(remote, self.directory)
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
        epoch, step, metric, size and hash; checkpoints beyond keep_last
        (other than the best) are retired afterwards. With async_save the
        write happens in the background and its error surfaces on the next
        call (save, wait, close, load, resume, ...).

        Args:
            state: Plain data with tensors, e.g. `training_state(...)` or a
                `state_dict()`; checked before writing so that a safe
                (weights_only) load can read it back.
            epoch: The epoch number to record (e.g. epochs finished), or None.
            step: The step number to record, or None.
            metric: The value `monitor` ranks (a float, tensor or NumPy
                scalar); NaN and infinities count as no metric.

        Returns:
            The checkpoint's path (in the folder; unique to this save, even
            with other processes saving into the same folder).

        Raises:
            CheckpointWriteError: The folder cannot take it (disk full, quota,
                permission, file size); names the cause and the fix. Earlier
                checkpoints are untouched and no partial file is left.
            BusyError: Another process held the folder's lock for minutes.
            ConfigError: `state`, `epoch`, `step` or `metric` is not plain data.
        """
        self._settle()
        check_plain(state)
        epoch, step = manifest.opt_int(epoch, "epoch"), manifest.opt_int(step, "step")
        metric = manifest.as_metric(metric)
        dist = ranks.current()
        if not ranks.is_writer(dist):  # other ranks: rank 0 writes; learn where and how it went
            final = Path(ranks.share(dist, None))
            self._shares_pending = self.async_save
            if not self.async_save:
                ranks.receive_outcome(dist)
            return final
        job: _Job | None = None
        error: BaseException | None = None
        try:
            job = self._reserve(epoch, step, metric)
        except CheckpointWriteError as exc:
            error = exc
        final = job.final if job is not None else self.directory / manifest.file_name(self._last_seq + 1, epoch, step)
        if dist is not None:
            ranks.share(dist, str(final))
            self._shares_pending = self.async_save
        if not self.async_save:
            if job is not None:
                try:
                    self._write(state, job)
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the others
                    error = exc
            if dist is not None:
                ranks.send_outcome(dist, None if error is None else str(error))
            if error is not None:
                raise error
            return final
        if job is None:
            self._writer.fail(error)  # like a failed background write: raised by the next call
            return final
        try:
            snapshot = self._snapshots.copy(state)
        except BaseException:
            _fsio.retire(job.tmp)
            raise
        self._writer.start(lambda box=[snapshot]: self._write_snapshot(box, job))
        del snapshot
        return final

    def _write_snapshot(self, box: list[Any], job: _Job) -> None:
        """The writer thread's work; with async_memory="free" the snapshot is gone when it returns."""
        try:
            self._write(box.pop(), job)
        finally:
            if self.async_memory == "free":
                release_memory()

    def wait(self) -> None:
        """Block until a background save has finished; raise its error if it failed.

        In a distributed run every rank calls it (it shares rank 0's outcome).
        With a remote, it also waits for the upload to Drive (a failed upload
        is a warning: the local checkpoint is safe and the next save retries).

        Raises:
            CheckpointWriteError: The background write failed (reported once).
        """
        self._settle()
        self._wait_remote()

    def close(self) -> None:
        """Finish pending writes (raising their error) and give back the async snapshot's memory.

        The manager stays usable: a later save() allocates its snapshot again.

        Raises:
            CheckpointWriteError: The background write failed (reported once).
        """
        try:
            self.wait()
        finally:
            self._snapshots.clear()

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

    def _settle(self) -> None:
        """Finish the previous async save; in a distributed run all ranks learn its outcome."""
        dist = ranks.current()
        if dist is not None and self._shares_pending:
            self._shares_pending = False
            if dist.get_rank() == 0:
                self._writer.join()
                ranks.send_outcome(dist, self._writer.message)
            else:
                ranks.receive_outcome(dist)
        self._writer.finish()

    def _reserve(self, epoch: int | None, step: int | None, metric: float | None) -> _Job:
        seq, final, tmp = folder.reserve(self.directory, epoch, step, clean=not self._temps_cleaned)
        self._temps_cleaned = True
        self._last_seq = seq
        meta = {"seq": seq, "epoch": epoch, "step": step, "metric": metric, "time": manifest.now(),
                "colabkit": __version__}
        return _Job(final=final, tmp=tmp, meta=meta)

    def _write(self, state: Any, job: _Job) -> None:
        """The durable part: fill the reserved temp, publish it, merge the manifest, retire old ones."""
        try:
            size, digest = torch_io.write_torch(torch_io.make_payload(job.meta, state), job.tmp)
        except BaseException as exc:
            _fsio.retire(job.tmp)
            if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
                raise _fsio.write_error(exc, "checkpoint", job.final) from None
            raise
        meta = job.meta
        entry = Entry(file=job.final.name, seq=meta["seq"], epoch=meta["epoch"], step=meta["step"],
                      metric=meta["metric"], size=size, digest=digest, time=meta["time"])
        with self._lock, folder.lock(self.directory):
            try:
                folder.publish(job.tmp, job.final)
            except OSError as exc:
                _fsio.retire(job.tmp)
                if isinstance(exc, CheckpointWriteError):
                    raise
                raise _fsio.write_error(exc, "checkpoint", job.final) from None
            # the manifest is re-read here, under the lock: other writers' entries are merged.
            # Unreadable files are neither kept in the manifest nor deleted: left for a human.
            entries = [e for e in self._entries(written=entry) if e.error is None]
            keep = self._keep(entries)
            for kept in keep:
                if kept.digest is None:  # found without the manifest (rebuilt): hash it now
                    path = self.directory / kept.file
                    kept.size, kept.digest = path.stat().st_size, torch_io.digest_file(path, torch_io.HASH_ALGORITHM)
            try:
                _fsio.write_bytes_atomic(self.directory / MANIFEST_NAME,
                                         manifest.render(keep, self.monitor, self._best_entry(keep)))
            except OSError as exc:
                # the checkpoint itself is complete and durable; a manifest rebuild finds it
                raise _fsio.write_error(exc, "the checkpoint manifest", self.directory / MANIFEST_NAME) from exc
            self._on_published(entry)
            self._retire(entries, keep)

    def _on_published(self, entry: Entry) -> None:
        """Called once a checkpoint and the manifest that lists it are durable (the mirror's seam)."""
        if self._mirror is not None:
            self._mirror.schedule()

    def _keep(self, entries: list[Entry]) -> list[Entry]:
        ordered = sorted(entries, key=lambda e: e.seq)
        keep = ordered[-self.keep_last:]
        best = self._best_entry(ordered) if self.keep_best else None
        if best is not None and best not in keep:
            keep = sorted([*keep, best], key=lambda e: e.seq)
        return keep

    def _by_metric(self, entries: list[Entry]) -> list[Entry]:
        """The entries that have a metric, best first (on a tie the older); [] when monitor is None."""
        if self.monitor is None:
            return []
        sign = 1.0 if self.monitor == "min" else -1.0
        scored = [e for e in entries if e.metric is not None and not math.isnan(e.metric)]
        return sorted(scored, key=lambda e: (sign * e.metric, e.seq))

    def _best_entry(self, entries: list[Entry]) -> Entry | None:
        ranked = self._by_metric(entries)
        return ranked[0] if ranked else None

    def _retire(self, entries: list[Entry], keep: list[Entry]) -> None:
        kept = {e.file for e in keep}
        for entry in entries:
            if entry.file not in kept:  # names validated by manifest.Entry: always inside the folder
                _fsio.retire(self.directory / entry.file)

    # ------------------------------------------------------------------ finding

    def _listdir(self) -> list[Path]:
        try:
            return list(self.directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _manifest_entries(self) -> list[Entry] | None:
        """The manifest's entries; None when it is missing or damaged (then rebuilt from the files)."""
        entries, problem = manifest.read(self.directory)
        if problem is not None:
            self._warn(f"The checkpoint manifest {self.directory / MANIFEST_NAME} is damaged ({problem}); "
                       "rebuilding the list from the checkpoint files themselves.")
        return entries

    def _warn(self, message: str) -> None:
        """A CheckpointWarning, once per manager and message (one save consults the folder often)."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, CheckpointWarning, stacklevel=4)

    def _entries(self, written: Entry | None = None) -> list[Entry]:
        """Every checkpoint in the folder, oldest first: the manifest's, plus complete files it
        does not list (saved just before a crash, or after the manifest was lost).

        Unlisted files are read for their metadata, except `written`: the file save() has
        just published, which it already describes.
        """
        listed = self._manifest_entries() or []
        present = {p.name: p for p in self._listdir() if manifest.FILE_RE.match(p.name)}
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

    def _probe(self, path: Path) -> Entry | None:
        """Read an unlisted file's own metadata (memory-mapped: tensors are not read)."""
        try:
            st = path.lstat()
        except OSError:
            return None
        key = (path.name, st.st_size, st.st_mtime_ns)
        if key not in self._probed:
            try:
                try:
                    payload = torch_io.load_file(path, "cpu", mmap=True)
                except UnsafeCheckpointError:
                    raise
                except Exception:  # noqa: BLE001 - some filesystems (FUSE) refuse mmap: read it all
                    payload = torch_io.load_file(path, "cpu")
                meta = payload.get("meta") if torch_io.is_payload(payload) else None
                entry = manifest.from_meta(path.name, meta, st.st_size)
            except CheckpointError as exc:
                entry = Entry(file=path.name, seq=manifest.seq_of(path.name), error=exc)
            except Exception as exc:  # noqa: BLE001 - truncated / damaged files raise many kinds
                entry = Entry(file=path.name, seq=manifest.seq_of(path.name), error=torch_io.unreadable(exc))
            self._probed[key] = entry
        return self._probed[key]

    def _candidates(self) -> list[Entry]:
        """Where resume looks, newest first (the one place to add other sources).

        With a remote and no checkpoint here (a new runtime), the newest
        verified checkpoint on Drive is downloaded first.
        """
        entries = self._entries()
        if not entries and self._mirror is not None:
            dist = ranks.current()
            if ranks.is_writer(dist):
                self._mirror.restore()
            ranks.barrier(dist)
            entries = self._entries()
        return list(reversed(entries))

    def checkpoints(self) -> list[Path]:
        """Every checkpoint file in the folder, oldest first (not verified).

        Returns:
            The paths, oldest first; [] for an empty or missing folder.
        """
        self._writer.finish()
        return [self.directory / e.file for e in self._entries()]

    def latest(self) -> Path | None:
        """The newest checkpoint that verifies (hash and a safe load), or None.

        Returns:
            Its path, or None when the folder holds no usable checkpoint.
        """
        self._writer.finish()
        found = self._first_usable(self._candidates())
        return found[0] if found else None

    def best(self) -> Path | None:
        """The checkpoint with the best metric that verifies.

        Returns:
            Its path; None when none has a metric, or monitor is None.
        """
        if self.monitor is None:
            return None
        self._writer.finish()
        found = self._first_usable(self._by_metric(self._entries()))
        return found[0] if found else None

    def _first_usable(self, entries: list[Entry], map_location: Any = "cpu", *, mmap: bool = False,
                      ) -> tuple[Path, Any, Entry, tuple[Path, ...]] | None:
        """Load candidates in order until one verifies: (path, payload, entry, skipped)."""
        failures: list[tuple[Path, CheckpointError]] = []
        for entry in entries:
            path = self.directory / entry.file
            try:
                if entry.error is not None:
                    raise entry.error
                payload = torch_io.verified_load(path, entry.digest, map_location, mmap=mmap)
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

    # ------------------------------------------------------------------ loading

    def load(self, path: str | os.PathLike[str] | None = None, map_location: Any = "cpu") -> Any:
        """The state exactly as it was given to `save()`: from `path`, or the newest usable one.

        Args:
            path: A checkpoint file (absolute, or a name in the folder); None
                for the newest usable one (unusable ones are skipped with a
                CheckpointWarning).
            map_location: Where tensors go, as for `torch.load` ("cpu" by default).

        Returns:
            The state given to `save()`.

        Raises:
            NoUsableCheckpointError: There is no checkpoint, or none can be loaded.
            UnsafeCheckpointError: The file holds pickled code (never executed).
            CheckpointError: `path` is damaged, truncated or does not match
                its hash in the manifest.
        """
        self._writer.finish()
        if path is not None:
            target = Path(path)
            if not target.is_absolute() and not target.exists():
                target = self.directory / target
            entry = next((e for e in self._manifest_entries() or [] if e.file == target.name
                          and target.parent.absolute() == self.directory), None)
            try:
                return torch_io.unwrap_payload(
                    torch_io.verified_load(target, entry.digest if entry else None, map_location))
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
        return torch_io.unwrap_payload(found[1])

    def resume(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None,
               scaler: Any = None, *, generator: torch.Generator | None = None) -> ResumeInfo | None:
        """Restore the newest usable checkpoint into the objects given.

        A `training_state()` checkpoint restores model, optimizer, scheduler,
        scaler and every RNG (plus `generator`'s, when given); a bare
        state_dict restores the model only. The optimizer gets the saved
        learning rate (and other param_groups settings) back, so a changed
        lr is ignored unless you set it in optimizer.param_groups after
        resume(). The file is memory-mapped (off the Drive mount) and its hash
        checked before anything is restored, so a damaged file changes nothing.

        Args:
            model: The model, built as in the run that saved (on its device).
            optimizer: Its optimizer, or None.
            scheduler: Its learning-rate scheduler, or None.
            scaler: Its AMP GradScaler, or None.
            generator: A DataLoader's torch.Generator to restore, or None.

        Returns:
            A ResumeInfo (path, epoch, step, metric, extras, skipped files);
            None on a fresh start (no checkpoint yet).

        Raises:
            NoUsableCheckpointError: There are checkpoints but none can be loaded.
            CheckpointError: The newest usable file holds something else than
                a training state or state_dict.
        """
        self._writer.finish()
        found = self._first_usable(self._candidates(), mmap=True)
        if found is None:
            return None
        path, payload, entry, skipped = found
        meta = payload.get("meta", {}) if torch_io.is_payload(payload) else {}
        state = torch_io.unwrap_payload(payload)
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
        epoch = entry.epoch if entry.epoch is not None else _meta_count(meta, extra, "epoch")
        step = entry.step if entry.step is not None else _meta_count(meta, extra, "step")
        return ResumeInfo(path=path, epoch=epoch, step=step, metric=entry.metric, extra=extra, skipped=skipped)


def _meta_count(meta: Any, extra: dict[str, Any], name: str) -> int | None:
    """epoch/step from the file's meta or the training state's extras (outside input: checked)."""
    value = meta.get(name, extra.get(name)) if isinstance(meta, dict) else extra.get(name)
    try:
        return manifest.opt_int(value, name)
    except ConfigError:
        return None
