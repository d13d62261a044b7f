"""What a person sees while fetch runs: colabkit's own bar, no temp paths, one short line per retry,
nothing at all with quiet=True, and no tqdm warning in a real kernel without ipywidgets."""

from __future__ import annotations

import os
import re

import pytest

import colabkit
from colabkit import errors

from tests._data_helpers import LocalServer

PAYLOAD = os.urandom(3 * 2**20)
TEMP_MARKS = (".tmp", ".part", ".colabkit-", "To:", "From:", "Resume:")


@pytest.fixture
def server():
    srv = LocalServer()
    srv.state.files["/data/train.csv"] = PAYLOAD
    yield srv
    srv.close()


def test_a_download_shows_no_temp_path_and_little_text(server, capfd):
    path = colabkit.fetch(server.url("/data/train.csv"))
    assert path.read_bytes() == PAYLOAD
    out, err = capfd.readouterr()
    text = out + err
    assert "Saved" in out and str(path) in out
    for mark in TEMP_MARKS:
        assert mark not in text, (mark, text)
    assert len(text) < 3000


def test_each_retry_is_one_short_line(server, capfd):
    server.state.drops["/data/train.csv"] = 1
    path = colabkit.fetch(server.url("/data/train.csv"), retries=3)
    assert path.read_bytes() == PAYLOAD
    out, err = capfd.readouterr()
    retry_lines = [line for line in (out + err).splitlines() if re.search(r"retry \d/3", line)]
    assert len(retry_lines) == 1, out + err
    assert re.fullmatch(r"train\.csv: [a-z ]+; retry 1/3 in \d+ s", retry_lines[0].strip()), retry_lines
    assert all(len(line.strip("\r")) < 100 for line in retry_lines)
    for mark in TEMP_MARKS:
        assert mark not in out + err


def test_quiet_prints_nothing_not_even_retries(server, capfd):
    server.state.drops["/data/train.csv"] = 1
    colabkit.fetch(server.url("/data/train.csv"), retries=2, quiet=True)
    colabkit.fetch(server.url("/data/train.csv"), quiet=True)  # and the cache hit
    assert capfd.readouterr() == ("", "")


def test_quiet_still_raises_errors(server, capfd):
    server.state.statuses["/data/gone.csv"] = 404
    with pytest.raises(errors.HTTPStatusError):
        colabkit.fetch(server.url("/data/gone.csv"), quiet=True)
    assert capfd.readouterr() == ("", "")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fetch_in_a_real_kernel_shows_no_warning_and_no_temp_path(server, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    url = server.url("/data/train.csv")
    server.state.drops["/data/train.csv"] = 1
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in [
        "import colabkit",
        f"path = colabkit.fetch({url!r}, retries=2)",
        f"path = colabkit.fetch({url!r})",
    ]]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in notebook.cells[1:]:
        for output in cell.outputs:
            texts.append(output.get("text", "") + str(output.get("data", "")))
    text = "".join(texts)
    assert "Saved" in text and "Using" in text and "retry 1/2" in text
    assert "IProgress" not in text and "Warning" not in text
    for mark in TEMP_MARKS:
        assert mark not in text, (mark, text)
    assert len(text) < 4000, len(text)
    assert (tmp_path / "train.csv").read_bytes() == PAYLOAD


def test_help_lists_every_parameter_of_fetch():
    import inspect

    doc = inspect.getdoc(colabkit.fetch)
    args = doc.split("Args:", 1)[1].split("Returns:", 1)[0]
    for name in inspect.signature(colabkit.fetch).parameters:
        assert re.search(rf"^    {name}: ", args, re.MULTILINE), name
    assert "Raises:" in doc and "UnsafeNameError" in doc and "DownloadTooLargeError" in doc
