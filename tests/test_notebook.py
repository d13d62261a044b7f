"""A real Jupyter kernel (nbclient) runs the quickstart cells against the fake Colab."""

from __future__ import annotations

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
