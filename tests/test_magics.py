"""The magics in a real IPython InteractiveShell."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def first_import(monkeypatch):
    """Make `import colabkit` inside the shell run the package's import code again,
    as it does in a fresh notebook (submodules stay cached, so classes keep their identity)."""
    monkeypatch.delitem(sys.modules, "colabkit")


def magic_names(shell) -> set[str]:
    return set(shell.magics_manager.magics["line"])


def test_import_registers_magics_once(ipython_shell):
    assert "colab_setup" not in magic_names(ipython_shell)
    ipython_shell.run_cell("import colabkit", store_history=False)
    assert {"colab_setup", "colab_status"} <= magic_names(ipython_shell)
    owner = ipython_shell.magics_manager.magics["line"]["colab_setup"].__self__
    ipython_shell.run_cell("import importlib, colabkit; importlib.reload(colabkit)", store_history=False)
    ipython_shell.run_cell("%load_ext colabkit")
    # registering again would have replaced the bound methods with a new instance's
    assert ipython_shell.magics_manager.magics["line"]["colab_setup"].__self__ is owner


def test_load_ext(ipython_shell):
    result = ipython_shell.run_cell("%load_ext colabkit")
    assert result.success
    assert "colab_setup" in magic_names(ipython_shell)


def test_colab_setup_locally(ipython_shell, isolated_env, capsys):
    ipython_shell.run_cell("%load_ext colabkit")
    result = ipython_shell.run_cell("%colab_setup ML2022")
    assert result.success, result.error_in_exec
    root = isolated_env / "drive" / "ML2022"
    assert all((root / sub).is_dir() for sub in ("data", "checkpoints", "outputs", "logs"))
    assert Path.cwd() == root
    out = capsys.readouterr().out
    assert "Project 'ML2022' ready" in out and "torch" in out and "%colab_status" in out


def test_colab_setup_options(ipython_shell, isolated_env):
    ipython_shell.run_cell("%load_ext colabkit")
    result = ipython_shell.run_cell("%colab_setup HW1 --no-chdir")
    assert result.success
    assert (isolated_env / "drive" / "HW1" / "data").is_dir()
    assert Path.cwd() == isolated_env / "work"


def test_colab_setup_in_fake_colab(ipython_shell, fake_colab):
    ipython_shell.run_cell("import colabkit")
    assert ipython_shell.run_cell("%colab_setup ML2022").success
    assert (fake_colab.mydrive / "ML2022" / "checkpoints").is_dir()
    assert len(fake_colab.calls("mount")) == 1
    assert Path(os.getcwd()) == fake_colab.mydrive / "ML2022"
    assert ipython_shell.run_cell("%colab_setup ML2022").success
    assert len(fake_colab.calls("mount")) == 1  # idempotent: no second mount


def test_no_mount_without_existing_mount_is_a_usage_error(ipython_shell, fake_colab, capsys):
    ipython_shell.run_cell("import colabkit")
    result = ipython_shell.run_cell("%colab_setup ML2022 --no-mount")
    out, err = capsys.readouterr()
    assert "UsageError" in out + err and "not mounted" in out + err
    assert "Traceback" not in out + err
    assert not result.success


def test_bad_arguments_are_usage_errors(ipython_shell, capsys):
    ipython_shell.run_cell("import colabkit")
    result = ipython_shell.run_cell("%colab_setup ML2022 --frobnicate")
    out, err = capsys.readouterr()
    assert not result.success
    assert "UsageError" in out + err and "Traceback" not in out + err
    result = ipython_shell.run_cell("%colab_setup ../escape")
    out, err = capsys.readouterr()
    assert "UsageError" in out + err and "Use a name like" in out + err


def test_help_shows_usage(ipython_shell):
    ipython_shell.run_cell("import colabkit")
    doc = ipython_shell.find_line_magic("colab_setup").__doc__
    assert "--no-mount" in doc and "--no-chdir" in doc and "PROJECT" in doc.upper()


def test_colab_status_json(ipython_shell, fake_nvidia_smi, capsys):
    fake_nvidia_smi("0, Tesla T4, 10, 15360, 0, 40, 535.104.05\n")
    ipython_shell.run_cell("import colabkit")
    assert ipython_shell.run_cell("%colab_status --json").success
    assert '"name": "Tesla T4"' in capsys.readouterr().out


def run_magics_script(python, isolated_env) -> dict:
    import json
    import subprocess

    from tests.conftest import REPO_ROOT

    script = REPO_ROOT / "tests" / "_magics_shell_script.py"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([str(python), str(script)], capture_output=True, text=True, env=env,
                          cwd=isolated_env / "work", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def check_magics(results: dict, isolated_env) -> None:
    assert {"colab_setup", "colab_status"} <= set(results["magics"])
    assert results["setup"]["ok"] and "Project 'ML2022' ready" in results["setup"]["out"]
    assert results["cwd"] == str(isolated_env / "drive" / "ML2022")
    assert not results["bad argument"]["ok"]
    assert "UsageError" in results["bad argument"]["out"] and "Traceback" not in results["bad argument"]["out"]
    assert results["status"]["ok"] and '"in_colab": false' in results["status"]["out"]
    assert "--no-mount" in results["doc"]
    assert results["help"]["ok"] and "--no-chdir" in results["help"]["out"] and "UsageError" not in results["help"]["out"]
    assert results["fetch help"]["ok"] and "--retries" in results["fetch help"]["out"]


def test_magics_in_a_fresh_current_ipython(isolated_env):
    import IPython

    results = run_magics_script(sys.executable, isolated_env)
    assert results["version"] == IPython.__version__
    check_magics(results, isolated_env)


def test_magics_on_colabs_ipython_7_34(colab_ipython_python, isolated_env):
    from tests.conftest import COLAB_IPYTHON

    results = run_magics_script(colab_ipython_python, isolated_env)
    assert results["version"] == COLAB_IPYTHON
    check_magics(results, isolated_env)


def test_each_cli_flag_has_its_magic_twin(ipython_shell):
    """One table feeds both front-ends: every option of `colabkit CMD` exists on its magic, alike."""
    from colabkit import _commands, cli

    ipython_shell.run_cell("import colabkit")
    subparsers = next(a for a in cli.build_parser()._actions if a.choices and "fetch" in a.choices)
    assert set(subparsers.choices) == {c.name for c in _commands.COMMANDS}
    for command in _commands.COMMANDS:
        cli_actions = {a.dest: a for a in subparsers.choices[command.name]._actions if a.dest != "help"}
        magic = ipython_shell.find_line_magic(command.magic)
        assert magic is not None, command.magic
        magic_actions = {a.dest: a for a in magic.parser._actions}
        assert set(cli_actions) <= set(magic_actions), (command.name, set(cli_actions) - set(magic_actions))
        for dest, action in cli_actions.items():
            twin = magic_actions[dest]
            assert (twin.option_strings, twin.default, twin.type, twin.nargs, twin.help) == (
                action.option_strings, action.default, action.type, action.nargs, action.help), dest
        # what only the notebook has is declared as such in the table
        extra = set(magic_actions) - set(cli_actions) - {"help"}
        assert extra == {o.dest for o in command.magic_only}


def test_fetch_magic_has_retries_and_timeout_and_passes_them_on(ipython_shell, capsys):
    """%fetch lacked --retries and --timeout; now they reach fetch(): a refused port fails at once."""
    import socket
    import time

    ipython_shell.run_cell("import colabkit")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = ipython_shell.run_cell(f"%fetch http://127.0.0.1:{port}/train.csv --retries 0 --timeout 2 -q")
    out, err = capsys.readouterr()
    assert not result.success and "UsageError" in out + err and "Traceback" not in out + err
    assert time.monotonic() - started < 20  # --retries 0: no back-off rounds
    doc = ipython_shell.find_line_magic("fetch").__doc__
    assert "--retries" in doc and "--timeout" in doc


@pytest.mark.parametrize("magic", ["colab_setup", "colab_status", "colab_template", "fetch", "stage", "colab_hints"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_magics_accept_help(ipython_shell, capsys, magic, flag, isolated_env):
    ipython_shell.run_cell("import colabkit")
    result = ipython_shell.run_cell(f"%{magic} {flag}")
    out, err = capsys.readouterr()
    assert result.success, out + err
    assert f"%{magic}" in out and "UsageError" not in out + err and "%%" not in out
    assert not (isolated_env / "drive").exists()  # help only: nothing was set up


def test_setup_shows_the_status_once(ipython_shell, capsys, fake_nvidia_smi):
    fake_nvidia_smi("0, Tesla T4, 10, 15360, 0, 40, 535.104.05\n")
    ipython_shell.run_cell("import colabkit")
    assert ipython_shell.run_cell("%colab_setup ML2022").success
    out = capsys.readouterr().out
    assert out.count("Tesla T4") == 1 and "Local disk" not in out  # one summary line, not the table
    assert out.count("CPU-only build") == 1  # the problem is shown, once
    assert ipython_shell.run_cell("%colab_status").success
    assert capsys.readouterr().out.count("Local disk") == 1


def test_status_check_fails_the_cell_on_a_problem(ipython_shell, capsys, fake_nvidia_smi):
    fake_nvidia_smi(None)  # no nvidia-smi on a local machine: nothing wrong
    ipython_shell.run_cell("import colabkit")
    assert ipython_shell.run_cell("%colab_status --check").success
    capsys.readouterr()
    fake_nvidia_smi("0, Tesla T4, 10, 15360, 0, 40, 535.104.05\n")  # a GPU the CPU torch cannot use
    result = ipython_shell.run_cell("%colab_status --check")
    out, err = capsys.readouterr()
    assert not result.success and "1 problem(s)" in out + err and "Traceback" not in out + err


def test_template_magic_tells_the_cell_command(ipython_shell, capsys, tmp_path):
    ipython_shell.run_cell("import colabkit")
    assert ipython_shell.run_cell(f"%colab_template {tmp_path / 'mine'}").success
    out = capsys.readouterr().out
    assert f"!python {tmp_path / 'mine' / 'train.py'}" in out
    assert (tmp_path / "mine" / "train.py").is_file()


@pytest.mark.parametrize("where", ["/proc/colabkit-nope", "FILE/sub"])
def test_os_errors_in_magics_are_one_usage_error(ipython_shell, capsys, tmp_path, where):
    (tmp_path / "FILE").write_text("mine")
    target = where.replace("FILE", str(tmp_path / "FILE"))
    ipython_shell.run_cell("import colabkit")
    result = ipython_shell.run_cell(f"%colab_template {target}")
    out, err = capsys.readouterr()
    assert not result.success and "Traceback" not in out + err
    assert f"UsageError: Could not copy the template into {target}" in out + err and "To fix:" in out + err
    assert (tmp_path / "FILE").read_text() == "mine"


def test_stage_magic(ipython_shell, isolated_env):
    source = isolated_env / "drive" / "ML2022" / "data" / "food-11"
    source.mkdir(parents=True)
    (source / "a.jpg").write_bytes(b"jpg")
    ipython_shell.run_cell("import colabkit")
    result = ipython_shell.run_cell(f"%stage {source} -q")
    assert result.success, result.error_in_exec
    assert Path(result.result) == isolated_env / "cache" / "staged" / "food-11"
    assert (Path(result.result) / "a.jpg").read_bytes() == b"jpg"
