"""What a run reports, where a user can look at it: metrics.csv, TensorBoard, a loss curve.

`logs/<run>/metrics.csv` holds one row per logged step and one per epoch
(columns epoch, step, kind, train_loss, valid_loss, the loop's other metrics,
lr, seconds, peak_gpu_mb). Its first write (in each session) and any write that
brings a new column rewrite it whole (temp file, then rename); later writes
append only the new rows (one write, then fsync), so an epoch's write costs its
own rows, not the whole run's. A kill during an append can leave half a row at
the end: `read_rows` leaves an unfinished last line out, and the resumed run's
first write rewrites the file whole. A resumed run keeps exactly the rows its
checkpoint had seen and appends after them, so no step appears twice.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import _fsio
from ..errors import ConfigError, MissingDependencyError

FIRST = ("epoch", "step", "kind", "train_loss", "valid_loss")
LAST = ("lr", "seconds", "peak_gpu_mb")
CSV_NAME = "metrics.csv"
RUN_INFO_NAME = "run.json"


def _plain_number(value: Any) -> Any:
    if hasattr(value, "item"):  # tensors and NumPy scalars (converted here, not at every step)
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return value
    raise ConfigError(f"run.log() takes numbers (or one-element tensors), got {type(value).__name__} {value!r}.")


class MetricsLog:
    """metrics.csv (and TensorBoard events) of one run; only rank 0 writes.

    Args:
        folder: the run's logs folder.
        write: False on ranks other than 0 (they keep rows in memory only).
        tensorboard: also write TensorBoard event files when the package is installed.
    """

    def __init__(self, folder: Path, *, write: bool = True, tensorboard: bool = True) -> None:
        self.folder, self.write, self.tensorboard = Path(folder), write, tensorboard
        self.path = self.folder / CSV_NAME
        self.rows: list[dict[str, Any]] = []
        self._flushed = 0  # rows already sent to TensorBoard
        self.written = 0  # rows the file holds (as this process last wrote it)
        self.last_write = 0.0  # time.monotonic() of that write
        self._writer: Any = None
        self._purge_step: int | None = None
        self._keys: dict[str, None] = {}  # every key of self.rows, in order of appearance (the header's source)
        self._header: list[str] | None = None  # the header of the file as this process wrote it (None: rewrite)

    def __len__(self) -> int:
        return len(self.rows)

    def restore(self, keep: int, step: int, tail_start: int | None = None, tail: list | None = None) -> None:
        """Continue with the rows a checkpoint had seen: the file's first rows, then the checkpoint's tail.

        Args:
            keep: rows recorded when the checkpoint being resumed was saved.
            step: the global step of that checkpoint (TensorBoard drops its events after it).
            tail_start: how many of those rows the file held when the checkpoint was saved.
            tail: the rows after those (carried in the checkpoint, since the file is
                rewritten less often than checkpoints are saved).
        """
        rows = read_rows(self.path) if self.path.is_file() else []
        if tail_start is not None:
            rows = rows[:tail_start] + [dict(row) for row in (tail or [])]
        self.rows = rows[:keep]
        self.written = self._flushed = len(self.rows)
        self._purge_step = step + 1
        self._keys = {key: None for row in self.rows for key in row}
        self._header = None  # the file may hold rows after the checkpoint's: the next write rewrites it

    def tail(self) -> tuple[int, list[dict[str, Any]]]:
        """(rows the file holds, the rows after them as plain data): what a checkpoint carries."""
        if not self.write:  # ranks other than 0: rank 0's checkpoint is the one written
            self.written = len(self.rows)
            return self.written, []
        for row in self.rows[self.written:]:
            for key, value in row.items():
                row[key] = _plain_number(value)
        return self.written, [dict(row) for row in self.rows[self.written:]]

    def add(self, row: dict[str, Any]) -> None:
        """Append a row (values may be tensors; they are converted when written)."""
        self.rows.append(row)
        if not self._keys.keys() >= row.keys():
            self._keys.update(dict.fromkeys(row))

    def flush(self) -> None:
        """Write metrics.csv whole (atomically) and the new rows to TensorBoard."""
        if not self.write:
            self.written = len(self.rows)
            return
        for row in self.rows[self._flushed:]:
            for key, value in row.items():
                row[key] = _plain_number(value)
        fields = columns([self._keys])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
        if fields == self._header and self.path.is_file():  # the same columns: append the new rows only
            for row in self.rows[self.written:]:
                writer.writerow({k: _format(v) for k, v in row.items()})
            if buffer.tell():
                with open(self.path, "ab") as handle:
                    handle.write(buffer.getvalue().encode("utf-8"))
                    handle.flush()
                    _fsio.fsync_fd(handle.fileno())
        else:  # the first write of this session, or a new column: the whole file, atomically
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _format(v) for k, v in row.items()})
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsio.write_bytes_atomic(self.path, buffer.getvalue().encode("utf-8"))
            self._header = fields
        self.written, self.last_write = len(self.rows), time.monotonic()
        self._to_tensorboard()

    def _to_tensorboard(self) -> None:
        new = self.rows[self._flushed:]
        self._flushed = len(self.rows)
        if not self.tensorboard or not new:
            return
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (Colab has it)
                self.tensorboard = False
                return
            self._writer = SummaryWriter(log_dir=str(self.folder / "tensorboard"), purge_step=self._purge_step)
        for row in new:
            step = int(row.get("step") or 0)
            prefix = "epoch" if row.get("kind") == "epoch" else "step"
            for key, value in row.items():
                if key in ("epoch", "step", "kind") or not isinstance(value, (int, float)):
                    continue
                self._writer.add_scalar(f"{prefix}/{key}", value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (metrics.csv is complete after every flush)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


plain_number = _plain_number  # the package's name for it (run.py converts step values with it)


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return format(value, ".9g") if math.isfinite(value) else str(value)
    return value


def columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The CSV header: epoch, step, kind, losses, other metrics in order of appearance, lr, seconds, peak GPU."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    middle = [k for k in seen if k not in FIRST and k not in LAST]
    return [k for k in FIRST if k in seen or k in ("epoch", "step", "kind")] + middle + [k for k in LAST if k in seen]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv, numbers as numbers (empty cells left out).

    An unfinished last line (a kill during an append) is left out.
    """
    text = path.read_bytes().decode("utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    with io.StringIO(text, newline="") as handle:
        rows = []
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key is None or text in ("", None):
                    continue
                row[key] = _parse(text) if key != "kind" else text
            rows.append(row)
    return rows


def _parse(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def write_run_info(folder: Path, info: dict[str, Any]) -> None:
    """logs/<run>/run.json: monitor, mode, best and stop epochs (what the plot marks)."""
    folder.mkdir(parents=True, exist_ok=True)
    _fsio.write_json_atomic(folder / RUN_INFO_NAME, info)


def _source(item: Any) -> tuple[str, Path]:
    """(label, metrics.csv path) of a Run, a logs folder or a metrics.csv file."""
    log_dir = getattr(item, "log_dir", None)
    if log_dir is not None:
        return getattr(item, "name", Path(log_dir).name), Path(log_dir) / CSV_NAME
    path = Path(item)
    if path.is_dir():
        return path.name, path / CSV_NAME
    return path.parent.name, path


def plot_metrics(*runs: Any, path: str | Path, metric: str | None = None, title: str | None = None) -> Path:
    """Draw the epoch curves of one or more runs from their metrics.csv into a PNG.

    Each run's train_loss and valid_loss (or `metric`) per epoch are drawn;
    the best epoch is marked with a dot and an early stop with a dashed line
    (read from the run's run.json). Several runs overlay on one chart, so
    two configurations can be compared.

    Args:
        *runs: Run objects, logs/<run> folders or metrics.csv paths.
        path: the PNG to write (written whole, then renamed into place).
        metric: one column to draw instead of the two losses (e.g. "valid_accuracy").
        title: the chart's title.

    Returns:
        The PNG's path.

    Raises:
        MissingDependencyError: matplotlib is not installed (`pip install colabkit-ml[plot]`).
        ConfigError: no runs given, or a run has no metrics.csv yet.
    """
    if not runs:
        raise ConfigError("plot_metrics() needs at least one run (a Run, a logs folder or a metrics.csv).")
    try:
        import matplotlib

        matplotlib.use("Agg")  # draw to a file; no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            "Drawing the loss curve needs matplotlib; install it with pip install matplotlib "
            "(or colabkit-ml[plot]). metrics.csv holds the numbers meanwhile."
        ) from exc
    final = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    all_positive = True
    for item in runs:
        label, csv_path = _source(item)
        if not csv_path.is_file():
            raise ConfigError(f"{csv_path} does not exist yet; train the run first (it is written at each checkpoint).")
        rows = [r for r in read_rows(csv_path) if r.get("kind") == "epoch"]
        info = _fsio.read_json(csv_path.parent / RUN_INFO_NAME) or {}
        keys = [metric] if metric else [k for k in ("train_loss", "valid_loss") if any(k in r for r in rows)]
        monitor = info.get("monitor")
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            xs, ys = zip(*points)
            all_positive = all_positive and all(y > 0 for y in ys)
            name = key if len(runs) == 1 else f"{label}: {key}"
            line, = ax.plot(xs, ys, label=name)
            drawn += 1
            best = info.get("best_epoch")
            if key == monitor and best in xs:
                ax.plot([best], [ys[xs.index(best)]], "o", color=line.get_color())
                ax.annotate(f"best (epoch {best})", (best, ys[xs.index(best)]),
                            textcoords="offset points", xytext=(4, 6), fontsize=8)
        stop = info.get("stopped_epoch")
        if stop:
            ax.axvline(stop, linestyle="--", color="gray", linewidth=1)
            ax.annotate(f"early stop{'' if len(runs) == 1 else f' ({label})'}", (stop, ax.get_ylim()[1]),
                        textcoords="offset points", xytext=(-4, -12), ha="right", fontsize=8)
    ax.set(xlabel="epoch", ylabel=metric or "loss", title=title or "Learning curve")
    if drawn and all_positive and metric is None:
        ax.set_yscale("log")
    if drawn:
        ax.legend()
    fig.tight_layout()
    final.parent.mkdir(parents=True, exist_ok=True)
    with _fsio.atomic_destination(final) as temp:
        fig.savefig(temp, dpi=100, format="png")
    plt.close(fig)
    return final


def read_config(folder: Path) -> dict[str, Any] | None:
    """logs/<run>/config.json, or None."""
    data = _fsio.read_json(folder / "config.json")
    return data if isinstance(data, dict) else None


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """logs/<run>/config.json, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    _fsio.write_json_atomic(folder / "config.json", json.loads(json.dumps(config)))
