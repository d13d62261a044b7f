"""Running the templates for real: subprocesses, a pseudo-terminal, SIGKILL from outside, torchrun."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_template_runner.py"


def script_env(root: Path) -> dict:
    """An environment whose Drive stand-in, VM root and cache live under `root`."""
    env = dict(os.environ)
    for name in ("COLABKIT_RUNTIME", "COLAB_RELEASE_TAG", "COLABKIT_PROJECT_DIR"):
        env.pop(name, None)
    env.update(COLABKIT_DRIVE_DIR=str(root / "drive"), COLABKIT_CONTENT_DIR=str(root / "content"),
               COLABKIT_CACHE_DIR=str(root / "cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def run_script(script: Path, root: Path, *args: str, launcher: list[str] | None = None,
               timeout: float = 180) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` (or `LAUNCHER SCRIPT ARGS`, e.g. torchrun) in `root`, to the end."""
    root.mkdir(parents=True, exist_ok=True)
    command = [*(launcher or [sys.executable]), str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=script_env(root), cwd=root,
                          timeout=timeout)


def outputs_of(root: Path, run: str) -> Path:
    return root / "drive" / "ML2022" / "outputs" / run


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def kill_and_rerun(script: Path, root: Path, args: list[str], kill_points: list[int],
                   launcher: list[str] | None = None, timeout: float = 180) -> list[int]:
    """Run; SIGKILL the whole process group once `step K` is printed; rerun; for each K; then finish.

    The steps are announced by tests/_template_runner.py after each optimizer
    step. Returns the number of steps each launch made (the last one ran to the
    end); asserts that every killed launch was really killed, the last one not.
    """
    root.mkdir(parents=True, exist_ok=True)
    command = [*(launcher or [sys.executable]), str(RUNNER), str(script), *args]
    steps, log = [], []
    for kill_at in [*kill_points, None]:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=script_env(root), cwd=root, start_new_session=True)
        done = 0
        try:
            for line in proc.stdout:
                log.append(line)
                announced = re.match(r"step (\d+)$", line.strip())
                if announced:
                    done = max(done, int(announced.group(1)))
                    if kill_at is not None and done >= kill_at:
                        os.killpg(proc.pid, signal.SIGKILL)  # from outside, mid-epoch
                        break
            proc.stdout.read()
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        expected = -signal.SIGKILL if kill_at is not None else 0
        assert proc.returncode == expected, "".join(log[-60:])
        steps.append(done)
    return steps


@dataclass
class PtyResult:
    returncode: int
    output: bytes


def run_in_pty(command: list[str], *, cwd: Path, env: dict, columns: int = 100,
               timeout: float = 300) -> PtyResult:
    """Run `command` on a pseudo-terminal, as Colab's `!` and IPython's `system` do; return its output."""
    cwd.mkdir(parents=True, exist_ok=True)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return PtyResult(proc.returncode, b"".join(chunks))
