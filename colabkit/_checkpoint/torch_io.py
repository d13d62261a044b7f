"""Checkpoint files and torch serialization: write while hashing, load while verifying.

- `write_torch` runs torch.save into a file object of ours, so every byte
  is hashed (xxh3-128) as it is written (no read-back) and a failed write keeps
  its real OSError (disk full, quota, file too large). The descriptor is ours
  and closed before the error leaves, so a failed save's temp file is freed
  at once (torch's path writer kept it open inside the exception).
- `verified_load` hashes the file in a second thread while torch.load maps it
  (mmap=True: tensors are not copied), and hands the state out only after the
  digest matched. sha256 digests of earlier manifests are checked as before.
- torch's per-record CRC32 is switched off while saving: the file hash covers
  every byte already.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import threading
from pathlib import Path
from typing import Any

from .. import _fsio
from ..errors import CheckpointError, UnsafeCheckpointError

PAYLOAD_FORMAT = "colabkit.checkpoint/1"
HASH_ALGORITHM = "xxh3_128"
_CHUNK = 64 << 20  # bytes per hash update: large (xxhash releases the GIL), bounded mapped window
_crc_lock = threading.Lock()


def make_payload(meta: dict[str, Any], state: Any) -> dict[str, Any]:
    """The self-describing file content: {"format", "meta", "state"}."""
    return {"format": PAYLOAD_FORMAT, "meta": meta, "state": state}


def is_payload(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == PAYLOAD_FORMAT and "state" in obj


def unwrap_payload(payload: Any) -> Any:
    """The state inside a checkpoint file's payload (a foreign file: the object itself)."""
    return payload["state"] if is_payload(payload) else payload


def new_hasher(algorithm: str = HASH_ALGORITHM) -> Any:
    return _fsio.new_hash(algorithm)


class _HashingFile:
    """The file object torch.save writes to: hashes each block, keeps the OSError of a failed write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hasher = new_hasher()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.error = exc
            raise
        self.hasher.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass


def write_torch(payload: Any, tmp: Path) -> tuple[int, str]:
    """torch.save `payload` into the (already created) file `tmp`, fsync it; (size, "xxh3_128:<hex>").

    Raises the OSError of the failing write (not torch's RuntimeError).
    """
    import torch

    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0))
    try:
        sink = _HashingFile(fd)
        try:
            with _crc_lock, _crc_disabled(torch):
                torch.save(payload, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None  # no reference to torch's writer survives
            raise
        _fsio.fsync_fd(fd)
    finally:
        os.close(fd)
    return sink.size, f"{HASH_ALGORITHM}:{sink.hasher.hexdigest()}"


@contextlib.contextmanager
def _crc_disabled(torch: Any) -> Any:
    get_crc = getattr(torch.serialization, "get_crc32_options", None)
    set_crc = getattr(torch.serialization, "set_crc32_options", None)
    previous = get_crc() if get_crc else None
    if set_crc:
        set_crc(False)
    try:
        yield
    finally:
        if set_crc and previous is not None:
            set_crc(previous)


def digest_file(path: Path, algorithm: str) -> str:
    """"algorithm:<hex>" of a file, read through a memory map (no copy into Python buffers)."""
    hasher = new_hasher(algorithm)
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError):  # a filesystem without mmap: plain reads
            mapped = None
            for block in iter(lambda: handle.read(_CHUNK), b""):
                hasher.update(block)
        if mapped is not None:
            with mapped:
                with contextlib.suppress(AttributeError, OSError):
                    mapped.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(mapped)
                try:
                    for start in range(0, size, _CHUNK):
                        hasher.update(view[start:start + _CHUNK])
                finally:
                    view.release()
    return f"{algorithm}:{hasher.hexdigest()}"


def load_file(path: Path, map_location: Any, mmap: bool = False) -> Any:
    """torch.load(weights_only=True), with a refused pickle turned into UnsafeCheckpointError."""
    import torch

    try:
        extra = {"mmap": True} if mmap else {}  # torch >= 2.1
        return torch.load(path, map_location=map_location, weights_only=True, **extra)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path} contains pickled Python objects that could run code when loaded, so it was "
            f"refused and nothing in it was executed ({str(exc).splitlines()[0]}). Load only "
            "checkpoints you trust; colabkit itself saves plain tensors and data."
        ) from None


def unreadable(exc: BaseException) -> CheckpointError:
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return CheckpointError(f"the file is unreadable or truncated ({type(exc).__name__}: {detail}).")


def can_map(path: Path) -> bool:
    """Whether tensors may stay memory-mapped from `path` after loading.

    Not on the Drive mount: colabkit truncates what it retires there (Drive's
    trash), and a truncated mapping would crash the process on access.
    """
    return not _fsio.on_drive_mount(path)


def verified_load(path: Path, expected: str | None, map_location: Any, *, mmap: bool = False) -> Any:
    """Load `path` (weights only), checking its digest, computed in parallel, when one is expected."""
    if not path.is_file():
        raise CheckpointError("the file does not exist.")  # callers name the path
    hashed: list[Any] = []
    hasher = None
    if expected is not None:
        algorithm = expected.partition(":")[0]

        def digest() -> None:
            try:
                hashed.append(digest_file(path, algorithm))
            except OSError as exc:
                hashed.append(exc)

        hasher = threading.Thread(target=digest, name="colabkit-verify")
        hasher.start()
    load_error: BaseException | None = None
    result: Any = None
    try:
        result = _load(path, map_location, mmap and can_map(path))
    except UnsafeCheckpointError as exc:
        load_error = exc
    except Exception as exc:  # noqa: BLE001 - truncated / damaged files raise many kinds
        load_error = unreadable(exc)
    if hasher is not None:
        hasher.join()
        actual = hashed[0]
        if isinstance(actual, OSError):
            raise CheckpointError(f"reading it failed ({actual}).")
        if actual != expected:
            raise CheckpointError(
                f"its hash does not match the manifest (the file is damaged or was only partly "
                f"synced): expected {expected}, found {actual}."
            )
    if load_error is not None:
        raise load_error
    return result


def _load(path: Path, map_location: Any, mmap: bool) -> Any:
    if not mmap:
        return load_file(path, map_location)
    try:
        return load_file(path, map_location, mmap=True)
    except UnsafeCheckpointError:
        raise
    except (OSError, RuntimeError, ValueError):  # a filesystem that refuses mmap (some FUSE): read it
        return load_file(path, map_location)
