"""Error hints in a real IPython InteractiveShell: in this process (current
IPython) and, in fresh processes, under current IPython and IPython 7.34 (what
Colab pins), the latter in a virtualenv this suite builds itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import colabkit
from colabkit._hints import rules as error_hints
from colabkit._hints import shell as _hints_ipython
from colabkit._hints import state as hints_state
from colabkit._hints import switch as hints_switch
from tests.conftest import COLAB_IPYTHON, REPO_ROOT

SHELL_SCRIPT = Path(__file__).resolve().parent / "_hints_shell_script.py"
HINT = "colabkit hint:"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def hints_on(monkeypatch):
    """Every test starts with hints on, and leaves the switch as it found it."""
    monkeypatch.setattr(hints_state, "_enabled", True)


@pytest.fixture
def shell(ipython_shell):
    """A real shell with colabkit loaded the way a user does it."""
    ipython_shell.run_cell("%load_ext colabkit")
    return ipython_shell


def in_order(text: str, *parts: str) -> bool:
    """Each part occurs in `text`, each after the one before."""
    position = 0
    for part in parts:
        found = text.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


# ------------------------------------------------------------------ in this process

def test_hint_follows_the_traceback_once(shell, capsys):
    shell.run_cell("import torch")
    result = shell.run_cell("torch.nn.Linear(512, 10)(torch.randn(4, 784))")
    out = ANSI.sub("", capsys.readouterr().out)
    assert not result.success and type(result.error_in_exec).__name__ == "RuntimeError"
    assert in_order(out, "Traceback", "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)",
                    f"{HINT} shape mismatch: a layer expects 512 input features but got 784", "nn.Linear(784, 10)")
    assert out.count(HINT) == 1


def test_a_cell_that_works_gets_nothing(shell, capsys):
    shell.run_cell("x = 1 + 1")
    assert capsys.readouterr().out == ""


def test_unknown_error_keeps_its_traceback_and_gets_no_hint(shell, capsys):
    shell.run_cell("{}['missing']")
    out = ANSI.sub("", capsys.readouterr().out)
    assert "KeyError: 'missing'" in out
    assert HINT not in out


def test_warning_hint_once_per_cell_and_showwarning_restored(shell, capsys):
    before = warnings.showwarning
    shell.run_cell(
        "import torch, warnings\n"
        "warnings.simplefilter('always')\n"
        "for _ in range(3):\n"
        "    loss = torch.nn.MSELoss()(torch.randn(7, 1), torch.randn(7))\n"
        "print('CELL FINISHED')"
    )
    out = capsys.readouterr().out
    assert in_order(out, "CELL FINISHED", f"{HINT} the loss compares tensors of different shapes",
                    "outputs.squeeze(1), targets")
    assert out.count(HINT) == 1
    assert warnings.showwarning is before


def test_off_switch_from_python_and_from_the_magic(shell, capsys):
    shell.run_cell("import torch, colabkit")
    bad = "torch.nn.Linear(512, 10)(torch.randn(4, 784))"
    shell.run_cell("colabkit.hints(False)")
    shell.run_cell(bad)
    assert HINT not in capsys.readouterr().out

    shell.run_cell("%colab_hints on")
    shell.run_cell(bad)
    out = capsys.readouterr().out
    assert "colabkit error hints are on" in out and out.count(HINT) == 1

    shell.run_cell("%colab_hints off")
    shell.run_cell("%colab_hints")
    shell.run_cell(bad)
    out = capsys.readouterr().out
    assert out.count("colabkit error hints are off") == 2
    assert HINT not in out


def test_magic_rejects_a_bad_argument(shell, capsys):
    shell.run_cell("%colab_hints maybe")
    captured = capsys.readouterr()
    assert "UsageError" in captured.out + captured.err
    assert hints_switch.hints_enabled() is True


def test_existing_custom_exception_handler_still_runs(ipython_shell, capsys):
    seen = []

    def handler(self, etype, value, tb, tb_offset=None):
        seen.append(value)
        print("CUSTOM HANDLER RAN")
        self.showtraceback((etype, value, tb), tb_offset=tb_offset)

    ipython_shell.set_custom_exc((RuntimeError,), handler)
    custom_tb = ipython_shell.CustomTB
    ipython_shell.run_cell("%load_ext colabkit")
    assert ipython_shell.CustomTB is custom_tb and ipython_shell.custom_exceptions == (RuntimeError,)

    ipython_shell.run_cell("import torch; torch.nn.Linear(3, 1)(torch.randn(2, 3).double())")
    out = ANSI.sub("", capsys.readouterr().out)
    assert len(seen) == 1 and "same dtype" in str(seen[0])
    assert in_order(out, "CUSTOM HANDLER RAN", "RuntimeError: mat1 and mat2 must have the same dtype",
                    f"{HINT} dtype mismatch (Double and Float)")
    assert out.count(HINT) == 1


def test_registering_again_does_not_repeat_the_hint(shell, capsys):
    shell.run_cell("%load_ext colabkit")
    _hints_ipython.register(shell)
    colabkit.hints(True)  # registers with the running shell: already done
    shell.run_cell("import torch; torch.nn.Linear(512, 10)(torch.randn(4, 784))")
    assert capsys.readouterr().out.count(HINT) == 1


def test_hints_true_hooks_a_shell_that_started_after_import(ipython_shell, capsys):
    colabkit.hints(True)
    ipython_shell.run_cell("import torch; torch.nn.Linear(512, 10)(torch.randn(4, 784))")
    assert capsys.readouterr().out.count(HINT) == 1


def test_a_failing_hint_never_breaks_the_cell(shell, capsys, monkeypatch):
    def broken(exc):
        raise RuntimeError("bug in colabkit")

    monkeypatch.setattr(_hints_ipython, "explain", broken)
    shell.run_cell("import torch; torch.nn.Linear(512, 10)(torch.randn(4, 784))")
    captured = capsys.readouterr()
    text = ANSI.sub("", captured.out + captured.err)
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in text
    assert "bug in colabkit" not in text
    assert shell.run_cell("y = 2").success


def test_notebooks_get_the_html_box(shell):
    hint = error_hints.explain(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)"))
    data, _ = shell.display_formatter.format(hint)
    assert data["text/plain"] == str(hint)
    assert "colabkit hint: shape mismatch" in data["text/html"]


# ------------------------------------------------------------------ fresh processes, both IPython versions

def run_shell_script(python: Path | str) -> dict[str, str]:
    """Run the scenario script under `python`; its output split by `=== <label>`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.run([str(python), str(SHELL_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, timeout=180)
    out = ANSI.sub("", proc.stdout)
    assert proc.returncode == 0, out[-4000:]
    sections = dict(re.findall(r"^=== (.+?)\n(.*?)(?=^=== |\Z)", out, flags=re.S | re.M))
    assert "end" in sections, out[-4000:]
    return sections


def check_shell_behaviour(s: dict[str, str], version: str) -> None:
    assert s["version"].strip() == version
    assert s["handler kept"].strip() == "True True"  # colabkit left the custom handler alone

    assert in_order(s["shape"], "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x784 and 512x10)",
                    f"{HINT} shape mismatch: a layer expects 512 input features but got 784")
    assert s["shape"].count(HINT) == 1

    assert in_order(s["warning"], "UserWarning: Using a target size (torch.Size([8]))", "CELL FINISHED",
                    f"{HINT} the loss compares tensors of different shapes")
    assert s["warning"].count(HINT) == 1

    assert in_order(s["custom handler, no hint"], "CUSTOM HANDLER RAN", "No module named", "NOTE FROM THE CUSTOM HANDLER")
    assert HINT not in s["custom handler, no hint"]

    assert in_order(s["custom handler, hint"], "CUSTOM HANDLER RAN",
                    "RuntimeError: mat1 and mat2 must have the same dtype, but got Double and Float",
                    "NOTE FROM THE CUSTOM HANDLER", f"{HINT} dtype mismatch (Double and Float)")
    assert s["custom handler, hint"].count(HINT) == 1

    assert "KeyError: 'no such column'" in s["unknown"] and HINT not in s["unknown"]

    assert "colabkit error hints are off" in s["magic off"]
    assert "mat1 and mat2 shapes cannot be multiplied" in s["shape while off"] and HINT not in s["shape while off"]
    assert "colabkit error hints are on" in s["magic on"]
    assert s["shape again"].count(HINT) == 1

    assert "UserWarning: Using a target size" in s["warning while off"] and HINT not in s["warning while off"]
    assert "Error" not in s["load_ext again"]
    assert s["shape after load_ext"].count(HINT) == 1


def test_shell_behaviour_current_ipython():
    import IPython

    check_shell_behaviour(run_shell_script(sys.executable), IPython.__version__)


def test_shell_behaviour_ipython_7_34(colab_ipython_python):
    check_shell_behaviour(run_shell_script(colab_ipython_python), COLAB_IPYTHON)


# ------------------------------------------------------------------ a real Jupyter kernel (ipykernel)

def test_notebook_cell_outputs_error_then_html_hint(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import colabkit, torch"),
        nbformat.v4.new_code_cell("torch.nn.Linear(512, 10)(torch.randn(4, 784))"),
        nbformat.v4.new_code_cell("loss = torch.nn.MSELoss()(torch.randn(6, 1), torch.randn(6))"),
        nbformat.v4.new_code_cell("%colab_hints off\ntorch.nn.Linear(512, 10)(torch.randn(4, 784))"),
    ]
    NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    error_cell = notebook.cells[1].outputs
    assert [o["output_type"] for o in error_cell] == ["error", "display_data"]
    assert error_cell[0]["ename"] == "RuntimeError"
    assert "colabkit hint: shape mismatch" in error_cell[1]["data"]["text/html"]
    assert "nn.Linear(784, 10)" in error_cell[1]["data"]["text/plain"]

    warning_cell = notebook.cells[2].outputs
    assert warning_cell[0]["output_type"] == "stream" and "UserWarning" in warning_cell[0]["text"]
    hints = [o for o in warning_cell if o["output_type"] == "display_data"]
    assert len(hints) == 1 and "silently wrong" in hints[0]["data"]["text/plain"]

    off_cell = notebook.cells[3].outputs
    assert [o["output_type"] for o in off_cell] == ["stream", "error"]
