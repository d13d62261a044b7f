"""A real Jupyter kernel (nbclient) runs the quickstart cells against the fake Colab."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient


def run_notebook(cells: list[str], cwd) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs_text(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
            parts.append(output.data.get("text/html", ""))
    return "".join(parts)


@pytest.mark.timeout(180)
def test_quickstart_cells_in_a_real_kernel(fake_colab, isolated_env):
    notebook = run_notebook([
        "import colabkit",
        "%colab_setup ML2022",
        "%colab_status",
        "import os; print(os.getcwd())",
    ], cwd=isolated_env / "work")
    project = fake_colab.mydrive / "ML2022"
    assert all((project / sub).is_dir() for sub in ("data", "checkpoints", "outputs", "logs"))
    assert len(fake_colab.calls("mount")) == 1
    setup_out = outputs_text(notebook.cells[1])
    # issue 12: the status shows once: a summary line after setup, the table from %colab_status
    assert "Project 'ML2022' ready" in setup_out and "%colab_status for the full report" in setup_out
    assert "<table" not in setup_out and outputs_text(notebook.cells[2]).count("<table") == 1
    assert "Change runtime type" in outputs_text(notebook.cells[2])  # no GPU in the fake VM
    assert outputs_text(notebook.cells[3]).strip() == str(project)


# --- the quickstart notebook itself ----------------------------------------------------------

QUICKSTART = Path(__file__).resolve().parent.parent / "templates" / "colab_quickstart.ipynb"
COMMANDS = ("python ", "pip ", "torchrun ", "tensorboard ", "load_ext ", "colab_setup", "fetch ", "nvidia-smi")


def test_every_command_the_notebook_tells_the_user_to_run_carries_its_prefix():
    notebook = nbformat.read(QUICKSTART, as_version=4)
    told = [code for cell in notebook.cells if cell.cell_type == "markdown"
            for code in re.findall(r"`([^`]+)`", cell.source)]
    commands = [c for c in told if c.lstrip("!%").startswith(COMMANDS)]
    assert len(commands) >= 4, told
    assert all(c.startswith(("!", "%")) for c in commands), [c for c in commands if c[0] not in "!%"]
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert "!python train.py" in code and "!python train_images.py" in code
    loop = next(source for source in code if "run.batches(" in source)
    for step in ("model.train()", "optimizer.zero_grad()", "loss.backward()", "optimizer.step()",
                 "model.eval()", "torch.no_grad()", "run.log("):
        assert step in loop, step  # the loop stays in the student's cell, in the course's order


def _quickstart(epochs: int, script_args: dict) -> nbformat.NotebookNode:
    """The notebook as a student would run it, with the epochs of its CONFIG cell and script cells set."""
    notebook = nbformat.read(QUICKSTART, as_version=4)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            assert '"epochs": 30,' in cell.source
            cell.source = cell.source.replace('"epochs": 30,', f'"epochs": {epochs},')
        if cell.cell_type == "code" and cell.source in script_args:
            cell.source += " " + script_args[cell.source]
    return notebook


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quickstart_notebook_trains_in_cells_and_resumes_in_a_new_session(fake_colab, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # `!python`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    scripts = {"!python train.py": "--epochs 100 --early-stop 101",
               "!python train_images.py": "--epochs 1 --width 8"}

    def execute(epochs: int, images_epochs: int) -> dict:
        notebook = _quickstart(epochs, dict(scripts, **{
            "!python train_images.py": f"--epochs {images_epochs} --width 8"}))
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(fake_colab.content)}}).execute()
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        return {cell.source.split("\n")[0]: outputs_text(cell) for cell in code}

    first = execute(epochs=3, images_epochs=1)
    loop = next(text for source, text in first.items() if source.startswith("for epoch in run.epochs()"))
    assert [line.split(":")[0] for line in loop.splitlines() if line.startswith("epoch ")] == \
        ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    script = first["!python train.py --epochs 100 --early-stop 101"]
    assert "epoch  100/100" in script and "best validation loss" in script
    assert len(script.encode()) < 4_000, len(script.encode())  # one bar for the run, not one per epoch
    assert ".tmp" not in script and "Traceback" not in script
    assert "best validation accuracy" in first["!python train_images.py --epochs 1 --width 8"]

    # a new session (a fresh kernel, Drive mounted again): the same cells continue the runs
    second = execute(epochs=5, images_epochs=2)
    loop = next(text for source, text in second.items() if source.startswith("for epoch in run.epochs()"))
    assert [line.split(":")[0] for line in loop.splitlines() if line.startswith("epoch ")] == \
        ["epoch 4/5", "epoch 5/5"]
    setup_cell = next(text for source, text in second.items() if source.startswith("device ="))
    assert "Run 'notebook' resumes after epoch 3" in setup_cell
    assert "is complete" in second["!python train.py --epochs 100 --early-stop 101"]
    images = second["!python train_images.py --epochs 2 --width 8"]
    assert "resumes after epoch 1" in images and "epoch   2/2" in images and "epoch   1/2" not in images

    backing = fake_colab.content / ".fake-drive-backing" / "ML2022"  # on "Drive" after flush_drive()
    metrics = (backing / "logs" / "notebook" / "metrics.csv").read_text().splitlines()
    epochs = [line.split(",")[0] for line in metrics[1:] if line.split(",")[2] == "epoch"]
    assert epochs == ["1", "2", "3", "4", "5"]  # appended on resume, no duplicates
    assert (backing / "outputs" / "notebook" / "model.safetensors").is_file()
    assert (backing / "train_images.py").is_file() and (backing / "data" / "digits.zip").is_file()
