"""What this runtime has: host, GPU, torch, Drive, disk and memory, with fixes.

`status()` never raises: a missing, hanging or garbled `nvidia-smi` is reported
as a finding, not an exception. The HTML form is styled inline so that it reads
the same under Colab's light and dark themes and Jupyter's CSS: labels and
values left-aligned side by side, text in the theme's own color, and problems
on their own opaque background (PROBLEM_TEXT on PROBLEM_BACKGROUND, a contrast
of more than 4.5:1 whatever the page behind it).
"""

from __future__ import annotations

import dataclasses
import html
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _runtime
from .errors import ConfigError, DeviceError

GPU_QUERY = (
    "index,name,memory.used,memory.total,utilization.gpu,temperature.gpu,driver_version"
)
ENABLE_GPU_FIX = "Runtime → Change runtime type → Hardware accelerator: GPU, then rerun the notebook"
KAGGLE_GPU_FIX = (
    "in the notebook editor, Settings → Accelerator → a GPU (needs a phone-verified Kaggle "
    "account), then rerun the notebook"
)
# The colors of the HTML report (tests compute their contrast).
PROBLEM_TEXT = "#5c2400"
PROBLEM_BACKGROUND = "#fff1d6"
PROBLEM_BORDER = "#b45309"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/"


@dataclass
class GPUInfo:
    """One GPU as nvidia-smi reports it; a field is None where it printed [N/A].

    Attributes:
        index: the GPU's index (as in CUDA_VISIBLE_DEVICES).
        name: e.g. "Tesla T4".
        memory_used_mib: memory in use, MiB.
        memory_total_mib: memory on the card, MiB.
        utilization_pct: how busy it is, percent.
        temperature_c: degrees Celsius.
        driver: the NVIDIA driver version.
    """

    index: int
    name: str
    memory_used_mib: int | None
    memory_total_mib: int | None
    utilization_pct: int | None
    temperature_c: int | None
    driver: str | None

    def __str__(self) -> str:
        def num(value: int | None, unit: str) -> str:
            return "n/a" if value is None else f"{value}{unit}"

        return (
            f"GPU {self.index}: {self.name}, {num(self.memory_used_mib, '')}/"
            f"{num(self.memory_total_mib, ' MiB')} used, {num(self.utilization_pct, '%')} busy, "
            f"{num(self.temperature_c, '°C')}, driver {self.driver or 'n/a'}"
        )


@dataclass
class Status:
    """A snapshot of the runtime, as `status()` found it, with the fix for each problem.

    Print it (text), display it in a notebook (an HTML table), or call
    `to_dict()` for the machine-readable form (`colabkit status --json`).

    Attributes:
        in_colab: running in Google Colab.
        runtime: "colab", "kaggle" or "local".
        gpus: the GPUs nvidia-smi lists.
        drive_mounted: the folder projects live in exists (the Drive mount in
            Colab, /kaggle/working on Kaggle, the local stand-in elsewhere).
        drive_path: that folder.
        data_inputs: on Kaggle, the read-only datasets under /kaggle/input.
        problems: one sentence per problem found, each ending with its fix.
    """

    in_colab: bool
    colab_release: str | None
    python: str
    torch: str | None = None
    torch_cuda: str | None = None
    cudnn: int | None = None
    cuda_available: bool = False
    cuda_device_count: int = 0
    gpus: list[GPUInfo] = field(default_factory=list)
    nvidia_smi: str = "not run"
    drive_mounted: bool = False
    drive_path: str | None = None
    drive_free_gb: float | None = None
    local_path: str | None = None
    local_free_gb: float | None = None
    ram_total_gb: float | None = None
    ram_available_gb: float | None = None
    problems: list[str] = field(default_factory=list)
    runtime: str = "local"
    data_input_path: str | None = None
    data_inputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (what `colabkit status --json` prints)."""
        return dataclasses.asdict(self)

    def _runtime_text(self) -> str:
        if self.in_colab:
            return "Colab" + (f" ({self.colab_release})" if self.colab_release else "")
        return "Kaggle kernel" if self.runtime == "kaggle" else "local (not Colab)"

    def _drive_text(self) -> str:
        if self.runtime == "kaggle":
            text = (f"none on Kaggle; {self.drive_path} is the persistent folder "
                    "(kept when the notebook is saved)")
        elif not self.drive_mounted:
            text = ("not mounted" if self.in_colab else
                    f"local folder standing in for Drive: {self.drive_path} (setup() creates it)")
        elif self.in_colab:
            text = f"mounted at {self.drive_path}"
        else:
            text = f"local folder standing in for Drive: {self.drive_path}"
        if self.drive_free_gb is not None:
            text += f", {self.drive_free_gb:.1f} GB free"
        return text

    def summary(self) -> str:
        """One line: host, GPU, torch and Drive, e.g. for after `%colab_setup`."""
        gpu = self.gpus[0].name + (f" (+{len(self.gpus) - 1})" if len(self.gpus) > 1 else "") \
            if self.gpus else "no GPU"
        torch_text = f"torch {self.torch}" if self.torch else "no torch"
        if self.torch and not self.cuda_available:
            torch_text += " (CPU only)"
        drive = {"colab": "Drive mounted" if self.drive_mounted else "Drive NOT mounted",
                 "kaggle": "persistent folder /kaggle/working"}.get(self.runtime, "local Drive stand-in")
        return " · ".join([self._runtime_text(), gpu, torch_text, drive])

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("Runtime", self._runtime_text()),
            ("Python", self.python),
            ("torch", _torch_text(self)),
        ]
        if self.gpus:
            rows += [("GPU", str(gpu)) for gpu in self.gpus]
        else:
            rows.append(("GPU", f"none ({self.nvidia_smi})"))
        rows.append(("Drive", self._drive_text()))
        if self.runtime == "kaggle":
            names = ", ".join(self.data_inputs) if self.data_inputs else "none attached"
            rows.append(("Data", f"{self.data_input_path} (read-only): {names}"))
        if self.local_free_gb is not None:
            rows.append(("Local disk", f"{self.local_free_gb:.1f} GB free at {self.local_path}"))
        if self.ram_total_gb is not None:
            rows.append(
                ("RAM", f"{self.ram_available_gb:.1f} of {self.ram_total_gb:.1f} GB available")
            )
        return rows

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(key) for key, _ in rows)
        lines = [f"{key:<{width}}  {value}" for key, value in rows]
        lines += [f"Problem: {problem}" for problem in self.problems]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's text display
        printer.text(str(self))

    def _repr_html_(self) -> str:
        # Inline styles win over Jupyter's `.jp-RenderedHTMLCommon td {text-align: right}`;
        # label and value text inherit the theme's color, problems carry their own background.
        cell = "text-align:left;vertical-align:top;padding:1px 0.9em 1px 0;border:none"
        body = "".join(
            f"<tr><th style='{cell};font-weight:600;white-space:nowrap'>{html.escape(k)}</th>"
            f"<td style='{cell}'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        problems = "".join(
            f"<div style='color:{PROBLEM_TEXT};background:{PROBLEM_BACKGROUND};"
            f"border-left:4px solid {PROBLEM_BORDER};padding:3px 8px;margin:3px 0;"
            f"text-align:left'>⚠ {_code_spans(p)}</div>"
            for p in self.problems
        )
        return (
            "<div class='colabkit-status' style='text-align:left'>"
            f"<table style='border-collapse:collapse;margin:0;width:auto'>{body}</table>"
            f"{problems}</div>"
        )


def _code_spans(text: str) -> str:
    """HTML for a sentence whose `backticked` parts are commands: escaped, commands in monospace."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return html.escape(text)
    code = ("<code style='font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;"
            "font-size:0.95em;background:none;color:inherit;padding:0'>")
    return "".join(f"{code}{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def _torch_text(report: Status) -> str:
    if report.torch is None:
        return "not installed"
    text = report.torch
    if report.torch_cuda:
        text += f", CUDA {report.torch_cuda}"
    if report.cudnn:
        text += f", cuDNN {report.cudnn}"
    if report.cuda_available:
        text += f", sees {report.cuda_device_count} CUDA device(s)"
    else:
        text += ", no CUDA device visible"
    return text


def query_gpus(timeout: float = 10.0) -> tuple[list[GPUInfo], str]:
    """Run nvidia-smi; return the GPUs it lists and a one-line outcome. Never raises.

    Args:
        timeout: seconds before a hanging nvidia-smi is given up on.

    Returns:
        (gpus, outcome), e.g. ([GPUInfo(...)], "1 GPU(s)") or ([], "nvidia-smi not found").
    """
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return [], "nvidia-smi not found"
    try:
        done = subprocess.run(
            [executable, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return [], f"nvidia-smi did not answer within {timeout:g} s"
    except OSError as exc:
        return [], f"nvidia-smi could not run: {exc}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        reason = detail[0] if detail else "no output"
        return [], f"nvidia-smi failed (exit {done.returncode}): {reason}"
    gpus, skipped = [], 0
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        gpu = _parse_gpu_line(line)
        if gpu is None:
            skipped += 1
        else:
            gpus.append(gpu)
    if not gpus:
        return [], "nvidia-smi printed no GPU line it could read"
    outcome = f"{len(gpus)} GPU(s)"
    if skipped:
        outcome += f"; {skipped} unreadable line(s) ignored"
    return gpus, outcome


def _parse_gpu_line(line: str) -> GPUInfo | None:
    fields = [part.strip() for part in line.split(",")]
    if len(fields) != 7:
        return None
    index = _int_or_none(fields[0])
    if index is None or not fields[1]:
        return None
    return GPUInfo(
        index=index,
        name=fields[1],
        memory_used_mib=_int_or_none(fields[2]),
        memory_total_mib=_int_or_none(fields[3]),
        utilization_pct=_int_or_none(fields[4]),
        temperature_c=_int_or_none(fields[5]),
        driver=None if _is_na(fields[6]) else fields[6],
    )


def _is_na(value: str) -> bool:
    return value.strip().strip("[]").upper() in ("N/A", "NOT SUPPORTED", "UNKNOWN ERROR", "")


def _int_or_none(value: str) -> int | None:
    if _is_na(value):
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _free_gb(path: Path) -> float | None:
    try:
        return shutil.disk_usage(path).free / 1e9
    except OSError:
        return None


def _memory_gb() -> tuple[float | None, float | None]:
    try:
        values = {}
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
        return values["MemTotal"] / 1e9, values.get("MemAvailable", 0) / 1e9
    except (OSError, KeyError, ValueError, IndexError):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return total / 1e9, None
        except (ValueError, OSError, AttributeError):
            return None, None


def _torch_facts(report: Status) -> None:
    try:
        import torch
    except ImportError:
        bang = "!" if report.runtime in ("colab", "kaggle") else ""
        report.problems.append(f"torch is not installed. Fix: `{bang}pip install torch` (elsewhere than "
                               "Colab or Kaggle, the build for your machine from pytorch.org).")
        return
    except Exception as exc:  # a broken install must not break the report
        report.problems.append(f"torch failed to import: {exc}")
        return
    report.torch = torch.__version__
    report.torch_cuda = torch.version.cuda
    try:
        report.cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        report.cuda_available = torch.cuda.is_available()
        report.cuda_device_count = torch.cuda.device_count() if report.cuda_available else 0
    except Exception as exc:
        report.problems.append(f"torch could not query CUDA: {exc}")


def status(nvidia_smi_timeout: float = 10.0) -> Status:
    """Report what this runtime has: host, GPU, torch, Drive, disk and RAM, with fixes.

    The check a course notebook does with `!nvidia-smi`, plus what usually goes
    wrong next (no GPU enabled, a CPU-only torch, Drive not mounted), each
    problem with the fix. It never raises: a missing or hanging nvidia-smi is a
    finding in the report.

    Args:
        nvidia_smi_timeout: seconds to wait for nvidia-smi.

    Returns:
        The Status; in a notebook it displays as a table.
    """
    try:
        host = _runtime.runtime()
    except ConfigError as exc:
        host = "local"
        problems = [str(exc)]
    else:
        problems = []
    colab = host == "colab"
    report = Status(
        in_colab=colab,
        colab_release=_runtime.colab_release(),
        python=platform.python_version(),
        problems=problems,
        runtime=host,
    )
    _torch_facts(report)
    report.gpus, report.nvidia_smi = query_gpus(nvidia_smi_timeout)

    drive_path = {"colab": _runtime.colab_drive_dir, "kaggle": _runtime.kaggle_working_dir}.get(
        host, _runtime.local_drive_dir)()
    if host == "kaggle":
        inputs = _runtime.kaggle_input_dir()
        report.data_input_path = str(inputs)
        report.data_inputs = _listing(inputs)
    report.drive_mounted = drive_path.is_dir()
    report.drive_path = str(drive_path)
    if report.drive_mounted:
        report.drive_free_gb = _free_gb(drive_path)
    local = _runtime.content_dir() if colab and _runtime.content_dir().is_dir() else Path.cwd()
    report.local_path = str(local)
    report.local_free_gb = _free_gb(local)
    report.ram_total_gb, report.ram_available_gb = _memory_gb()
    _diagnose(report)
    return report


def _listing(folder: Path, limit: int = 8) -> list[str]:
    """The first `limit` entries of `folder` (sorted), '…' when there are more; [] when unreadable."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError:
        return []
    return names[:limit] + (["…"] if len(names) > limit else [])


def cpu_torch_fix(torch_version: str | None, host: str = "colab") -> str:
    """What to run when a GPU is there but the installed torch is a CPU-only build.

    `pip install torch` does nothing then (pip sees torch as installed): the
    CUDA build comes from PyTorch's own index, or, in Colab and Kaggle, back
    from a restart when a cell of this session installed the CPU build.
    """
    version = (torch_version or "").split("+")[0]
    pin = f"torch=={version}" if version else "torch"
    bang, smi = ("!", "`!nvidia-smi`") if host in ("colab", "kaggle") else ("", "`nvidia-smi`")
    reinstall = (f"`{bang}pip install --force-reinstall {pin} --index-url {TORCH_INDEX_URL}cu126` "
                 f"(the cu12x matching the CUDA Version {smi} shows, e.g. cu121 for 12.1)")
    if host in ("colab", "kaggle"):
        return (f"if a cell installed another torch, restart (Runtime → Restart session) to get the "
                f"preinstalled CUDA build back; otherwise run {reinstall} and restart the session")
    return f"install the CUDA build: {reinstall}"


def _diagnose(report: Status) -> None:
    smi_trouble = not report.gpus and report.nvidia_smi != "nvidia-smi not found"
    hosted = report.runtime in ("colab", "kaggle")
    if hosted and not report.gpus and not report.cuda_available:
        fix = KAGGLE_GPU_FIX if report.runtime == "kaggle" else ENABLE_GPU_FIX
        report.problems.append(f"No GPU in this runtime. Fix: {fix}.")
    elif smi_trouble:
        report.problems.append(f"GPU check: {report.nvidia_smi}.")
    if report.gpus and report.torch and not report.cuda_available:
        if report.torch_cuda is None:
            report.problems.append(
                f"nvidia-smi sees a GPU but this torch ({report.torch}) is a CPU-only build, so "
                f"training would run on the CPU. Fix: {cpu_torch_fix(report.torch, report.runtime)}."
            )
        else:
            report.problems.append(
                "nvidia-smi sees a GPU but torch cannot use it; restart the runtime "
                "(Runtime → Restart session) and check CUDA_VISIBLE_DEVICES."
            )
    if report.in_colab and not report.drive_mounted:
        report.problems.append(
            "Drive is not mounted: run `%colab_setup PROJECT` or colabkit.mount_drive() "
            "so checkpoints survive a disconnect."
        )


def device(prefer: str | None = None):
    """The torch.device to train on: cuda, else mps, else cpu.

    Args:
        prefer: a device to insist on ("cuda", "cuda:1", "mps", "cpu"); None
            picks the best one available.

    Returns:
        A torch.device.

    Raises:
        DeviceError: the preferred device is not there (the message says how to
            enable a GPU in Colab or Kaggle).
        ConfigError: `prefer` is not a device name torch knows.
    """
    import torch

    if prefer is not None:
        wanted = str(prefer).strip().lower()
        kind = wanted.split(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            host = _runtime.runtime()
            fix = {"colab": ENABLE_GPU_FIX, "kaggle": KAGGLE_GPU_FIX}.get(host) or (
                "install a CUDA build of torch on a machine with an NVIDIA GPU, or use device('cpu')"
            )
            raise DeviceError(f"CUDA was asked for but torch sees no GPU. Fix: {fix}.")
        if kind == "mps" and not (
            getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        ):
            raise DeviceError("MPS (Apple GPU) was asked for but is not available; use device('cpu').")
        try:
            chosen = torch.device(wanted)
        except RuntimeError as exc:
            raise ConfigError(
                f"{prefer!r} is not a device torch knows; use 'cuda', 'cuda:0', 'mps' or 'cpu'."
            ) from exc
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise DeviceError(
                f"{prefer!r} asked for, but only {count} CUDA device(s) exist. Use "
                f"device('cuda') for the first one, or an index from 0 to {count - 1}."
            )
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
