"""Run a template as `python <template> ARGS`, printing `step N` after every optimizer step.

The crash tests read these lines and SIGKILL this process from outside at a
chosen step. The template's code is unchanged: only torch.optim.Optimizer's
step is wrapped, to announce each step once it is done.

    python tests/_template_runner.py templates/train.py --epochs 3 ...
"""

from __future__ import annotations

import functools
import os
import runpy
import sys

import torch


def _announce_steps() -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone speaks (no interleaved lines)
        return
    done = {"steps": 0}

    def wrap(step):
        @functools.wraps(step)
        def announced(self, *args, **kwargs):
            result = step(self, *args, **kwargs)
            done["steps"] += 1
            print(f"step {done['steps']}", flush=True)
            return result

        return announced

    for optimizer in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
        optimizer.step = wrap(optimizer.step)


if __name__ == "__main__":
    script, *args = sys.argv[1:]
    _announce_steps()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
