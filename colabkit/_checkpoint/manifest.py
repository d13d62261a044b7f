"""The manifest: which checkpoints a folder holds, validated on read, written atomically.

`manifest.json` lists every checkpoint with its sequence number, epoch, step,
metric, size and content hash. It is outside input (a damaged sync, a hand
edit, a stranger's folder): every value is checked on read, and a manifest
that fails is ignored so that the folder is rebuilt from the self-describing
checkpoint files instead. Checkpoint names must match `FILE_RE` and be one
safe path component, so a manifest can never make colabkit read, retire or
write a file outside its folder.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _fsio
from ..errors import CheckpointError, ConfigError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "colabkit.checkpoints/1"
FILE_RE = re.compile(r"^ckpt-(?P<seq>\d{6,})(?:-epoch(?P<epoch>\d+))?(?:-step(?P<step>\d+))?\.pt$")
_DIGEST_RE = re.compile(r"^(?:xxh3_128:[0-9a-f]{32}|sha256:[0-9a-f]{64})$")


class ManifestError(ValueError):
    """A manifest value that is not what colabkit writes (the manifest is then rebuilt)."""


@dataclass
class Entry:
    """One checkpoint as the manifest records it.

    `digest` is "xxh3_128:<hex>" (written since 0.x) or "sha256:<hex>" (earlier
    manifests); None when not known yet (found without a manifest).
    """

    file: str
    seq: int
    epoch: int | None = None
    step: int | None = None
    metric: float | None = None
    size: int | None = None
    digest: str | None = None
    time: str | None = None
    error: CheckpointError | None = field(default=None, compare=False)  # found unreadable

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "seq": self.seq, "epoch": self.epoch, "step": self.step,
                "metric": self.metric, "size": self.size, "hash": self.digest, "time": self.time}

    @classmethod
    def from_dict(cls, data: Any) -> Entry:
        """Validate one manifest entry; ManifestError for anything colabkit would not write."""
        if not isinstance(data, dict):
            raise ManifestError(f"an entry is a {type(data).__name__}, not an object")
        name = data.get("file")
        if _fsio.unsafe_name_reason(name) or not FILE_RE.match(name):
            raise ManifestError(f"the entry names {name!r}, which is not a checkpoint file in this folder")
        seq = _count(data.get("seq"), "seq")
        if seq is None or seq != seq_of(name):
            raise ManifestError(f"the entry for {name} has seq {data.get('seq')!r}")
        digest = data.get("hash", data.get("sha256"))  # "sha256": manifests of earlier versions
        if digest is not None and not (isinstance(digest, str) and _DIGEST_RE.match(digest)):
            raise ManifestError(f"the entry for {name} has hash {digest!r}")
        moment = data.get("time")
        if moment is not None and not isinstance(moment, str):
            raise ManifestError(f"the entry for {name} has time {moment!r}")
        return cls(file=name, seq=seq, epoch=_count(data.get("epoch"), "epoch"),
                   step=_count(data.get("step"), "step"), metric=_finite(data.get("metric")),
                   size=_count(data.get("size"), "size"), digest=digest, time=moment)


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ManifestError(f"{name} is {value!r}, not a whole number >= 0")
    return value


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ManifestError(f"metric is {value!r}, not a finite number")
    return float(value)


def seq_of(name: str) -> int:
    """The sequence number in a checkpoint file name (FILE_RE must match)."""
    return int(FILE_RE.match(name).group("seq"))


def file_name(seq: int, epoch: int | None, step: int | None) -> str:
    """`ckpt-000012-epoch0003-step00000120.pt`: sortable, and readable in a file browser."""
    name = f"ckpt-{seq:06d}"
    if epoch is not None:
        name += f"-epoch{epoch:04d}"
    if step is not None:
        name += f"-step{step:08d}"
    return name + ".pt"


def parse(data: bytes | str) -> tuple[list[Entry], str | None]:
    """The validated entries of a manifest, oldest first, and its best file; ManifestError if bad."""
    try:
        manifest = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"it is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"unknown format {found!r}")
    items = manifest.get("checkpoints")
    if not isinstance(items, list):
        raise ManifestError("it has no list of checkpoints")
    entries = sorted((Entry.from_dict(item) for item in items), key=lambda e: e.seq)
    if len({e.file for e in entries}) != len(entries):
        raise ManifestError("it lists a checkpoint twice")
    best = manifest.get("best")
    if best is not None and best not in {e.file for e in entries}:
        raise ManifestError(f"its best file {best!r} is not one of its checkpoints")
    return entries, best


def _refuse_constant(name: str) -> Any:
    raise ManifestError(f"it holds {name}, which colabkit never writes")


def read(directory: Path) -> tuple[list[Entry] | None, str | None]:
    """(entries, None); (None, None) when there is no manifest; (None, why) when it is damaged."""
    path = directory / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, f"it cannot be read ({exc})"
    try:
        return parse(data)[0], None
    except ManifestError as exc:
        return None, str(exc)


def render(entries: list[Entry], monitor: str | None, best: Entry | None) -> bytes:
    """The manifest's bytes (values were validated, so strict JSON always works)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "monitor": monitor,
        "best": best.file if best is not None else None,
        "checkpoints": [e.to_dict() for e in sorted(entries, key=lambda e: e.seq)],
    }
    return (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode()


def describe(data: bytes) -> tuple[list[tuple[str, str | None]], str | None]:
    """For the Drive mirror: (file, "algorithm:hex" or None) of each checkpoint, oldest first, and the best file."""
    entries, best = parse(data)
    return [(e.file, e.digest) for e in entries], best


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def opt_int(value: Any, name: str = "value") -> int | None:
    """A whole number >= 0 given by the caller (epoch, step), or None; ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"{name} must be a whole number or None, got {value!r}.")
        value = int(value)
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 or None, got {value!r}.")
    return value


def as_metric(value: Any) -> float | None:
    """A metric as a float (accepts tensors and NumPy scalars); NaN and infinities become None."""
    if value is None:
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"metric must be a number (e.g. the validation loss), got {value!r}.") from None
    return None if math.isnan(number) or math.isinf(number) else number


def from_meta(name: str, meta: Any, size: int | None) -> Entry:
    """An entry rebuilt from a checkpoint file's own "meta" (outside input too: checked)."""
    meta = meta if isinstance(meta, dict) else {}

    def safe(get: Any) -> Any:
        try:
            return get()
        except (ManifestError, ConfigError, OverflowError, TypeError, ValueError):
            return None

    return Entry(file=name, seq=seq_of(name), epoch=safe(lambda: _count(meta.get("epoch"), "epoch")),
                 step=safe(lambda: _count(meta.get("step"), "step")),
                 metric=safe(lambda: _finite(meta.get("metric"))), size=size,
                 time=meta.get("time") if isinstance(meta.get("time"), str) else None)
