"""Early stopping as plain state a run carries: patience on a monitored metric."""

from __future__ import annotations

import math
from typing import Any

from .._validate import check_count
from ..errors import ConfigError


class EarlyStopping:
    """Stop when `monitor` has not improved for `patience` epochs.

    Its whole state is plain numbers (`state_dict()`), so a resumed run
    counts on from where it stood. A changed patience on a rerun applies to
    the count so far.

    Args:
        patience: epochs without improvement before stopping; None never stops
            (the best epoch is still tracked).
        mode: "min" (a loss) or "max" (an accuracy).
        min_delta: how much better a value must be to count as an improvement.

    Raises:
        ConfigError: a patience that is not a positive whole number, or another mode.
    """

    def __init__(self, patience: int | None = None, *, mode: str = "min", min_delta: float = 0.0) -> None:
        if patience is not None:
            check_count(patience, "patience", 1, "the number of epochs without improvement before stopping")
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' (e.g. a loss) or 'max' (e.g. an accuracy), got {mode!r}.")
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None  # 1-based: the number of epochs done at the best
        self.bad = 0
        self.stopped = False

    def is_better(self, value: float) -> bool:
        """Whether `value` beats the best so far (by more than min_delta)."""
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: Any, epoch: int) -> bool:
        """Record an epoch's value; returns True when it is a new best.

        Args:
            value: the monitored metric (a number or a one-element tensor); NaN never improves.
            epoch: the number of epochs done (1-based), recorded as best_epoch.

        Returns:
            True when the value improved on the best.
        """
        number = float(value.item() if hasattr(value, "item") else value)
        improved = not math.isnan(number) and self.is_better(number)
        if improved:
            self.best, self.best_epoch, self.bad = number, int(epoch), 0
        else:
            self.bad += 1
        if self.patience is not None and self.bad >= self.patience:
            self.stopped = True
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The state as plain data."""
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`."""
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.bad, self.stopped = int(state.get("bad", 0)), bool(state.get("stopped", False))
