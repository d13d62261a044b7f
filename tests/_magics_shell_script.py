"""The magics in a real InteractiveShell, in a fresh process, under whichever
IPython this interpreter has (Colab's 7.34 or current). Prints one JSON object."""

import contextlib
import io
import json
import os
import sys

import IPython
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
results = {"version": IPython.__version__}


def cell(label, code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        outcome = shell.run_cell(code)
    results[label] = {"ok": outcome.success, "out": out.getvalue()}


cell("import", "import colabkit")
results["magics"] = sorted(m for m in shell.magics_manager.magics["line"] if m.startswith("colab"))
cell("setup", "%colab_setup ML2022")
results["cwd"] = os.getcwd()
cell("bad argument", "%colab_setup ML2022 --frobnicate")
cell("status", "%colab_status --json")
cell("help", "%colab_setup -h")
cell("fetch help", "%fetch --help")
results["doc"] = shell.find_line_magic("colab_setup").__doc__
json.dump(results, sys.__stdout__)
