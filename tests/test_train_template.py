"""templates/train.py: the main job, the course's HW1 files, exact mid-epoch resume after SIGKILL,
OOM back-off, torchrun, config changes and every bad configuration.

The script runs for real: as a subprocess (`python templates/train.py`), under a
pseudo-terminal as Colab's `!` runs it, under torchrun with two gloo processes,
and in-process through its `main(argv)` where a test needs to reach inside.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest
import torch

import colabkit
from colabkit.errors import ConfigError
from tests._template_data import DAY, STATES, covid_header, write_covid
from tests._template_procs import (REPO, kill_and_rerun, outputs_of, read_csv, run_in_pty, run_script,
                                   script_env)

TEMPLATES = REPO / "templates"
SCRIPT = TEMPLATES / "train.py"
TRAIN_CSV = TEMPLATES / "data" / "diabetes.train.csv"
TEST_CSV = TEMPLATES / "data" / "diabetes.test.csv"
OUTPUT_FILES = {"model.safetensors", "predictions.csv", "loss_curve.png"}


def load_template():
    """templates/train.py imported as a module (its main() is what `python train.py` runs)."""
    module = sys.modules.get("colabkit_template_train")
    if module is None:
        spec = importlib.util.spec_from_file_location("colabkit_template_train", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def check_predictions(outputs: Path, test_csv: Path = TEST_CSV, target: str = "target",
                      hidden=(64, 32), columns=None) -> list[list[str]]:
    """One row per test id, in order, headed id,<target>; the exported model reproduces every value."""
    train = load_template()
    rows = read_csv(outputs / "predictions.csv")
    assert rows[0] == ["id", target]
    header, *test_rows = read_csv(test_csv)
    assert [row[0] for row in rows[1:]] == [row[0] for row in test_rows]
    columns = columns if columns is not None else list(range(1, len(header)))
    model = train.Regressor(len(columns), list(hidden))
    colabkit.load_model(model, outputs / "model.safetensors")
    model.eval()
    with torch.no_grad():
        again = model(train.numbers(test_csv, header, test_rows, columns))
    saved = torch.tensor([float(row[1]) for row in rows[1:]], dtype=torch.float32)
    assert torch.equal(again, saved)
    assert saved.std() > 0  # a trained model, not a constant
    return rows


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """The README's main job, `python templates/train.py`, run once to the end."""
    root = tmp_path_factory.mktemp("main-job")
    done = run_script(SCRIPT, root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root, done


# --- the main job ------------------------------------------------------------------------------


def test_main_job_trains_on_the_bundled_data_and_writes_every_output(main_job):
    root, done = main_job
    outputs = outputs_of(root, "train")
    assert {p.name for p in outputs.iterdir()} == OUTPUT_FILES
    assert "device: cpu" in done.stdout
    assert "data: 283 training, 71 validation, 88 test rows, 10 features (diabetes.train.csv)" in done.stdout
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs[0].startswith("epoch    1/200  ") and "valid loss" in epochs[0]
    assert (outputs / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(check_predictions(outputs)) == 89
    # it learned: the best validation MSE is far below the variance of the target
    targets = torch.tensor([float(row[-1]) for row in read_csv(TRAIN_CSV)[1:]])
    best = float(done.stdout.split("best validation loss ")[1].split()[0])
    assert best < 0.7 * targets.var().item()
    logs = root / "drive" / "ML2022" / "logs" / "train"
    assert (logs / "metrics.csv").is_file() and (logs / "config.json").is_file()


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as info:
        load_template().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for flag, default in [("--epochs", "200"), ("--batch-size", "32"), ("--lr", "0.0003"),
                          ("--target", "target"), ("--features", "None"), ("--every", "10.0"),
                          ("--train-csv", "data/diabetes.train.csv")]:
        assert f"{flag} {flag[2:].upper().replace('-', '_')} see CONFIG (default: {default})" in text, flag


@pytest.mark.slow
def test_progress_output_of_100_epochs_stays_small(tmp_path):
    """Under a pseudo-terminal (what Colab's `!` gives a script) the bar is one for the run."""
    done = run_in_pty([sys.executable, str(SCRIPT), "--epochs", "100", "--early-stop", "101"],
                      cwd=tmp_path, env=script_env(tmp_path))
    assert done.returncode == 0, done.output[-3000:]
    text = done.output.decode()
    assert "900/900" in text and "epoch  100/100  valid loss" in text and "best validation loss" in text
    # the old template drew a new bar per epoch: 26,985 bytes and 409 carriage returns here
    assert len(done.output) < 4_000, len(done.output)
    assert text.count("\r") - text.count("\r\n") < 40


# --- the course's HW1 files (exact header, synthetic values) ------------------------------------


@pytest.fixture
def covid(tmp_path):
    return write_covid(tmp_path)


def test_hw1_header_columns_kept_by_position_and_kaggle_header(covid, capsys):
    train_csv, test_csv = covid
    header, *rows = read_csv(train_csv)
    assert header == covid_header() and covid_header(test=True) == read_csv(test_csv)[0]
    assert len(header) == 118 and len(rows) == 2699 and header.count("tested_positive") == 5
    assert len(read_csv(test_csv)[0]) == 117 and len(read_csv(test_csv)) == 1079

    summary = load_template().main(["--train-csv", str(train_csv), "--test-csv", str(test_csv),
                                    "--target", "tested_positive", "--epochs", "2", "--run", "hw1"])
    out = capsys.readouterr().out
    assert "2159 training, 540 validation, 1078 test rows, 116 features (covid.train.csv)" in out
    rows = check_predictions(Path(summary["predictions"]).parent, test_csv, "tested_positive",
                             columns=list(range(1, 117)))
    assert rows[0] == ["id", "tested_positive"] and len(rows) == 1079  # Kaggle's header, not .4
    assert rows[1][0] == "2699"


def test_hw1_feature_selection_by_name_selects_every_day_and_by_index_one():
    train = load_template()
    header = covid_header()
    target, all_features = train.select_columns(header, "tested_positive", None)
    assert target == 117 and all_features == list(range(1, 117))  # not id, not the target
    _, positives = train.select_columns(header, "tested_positive", "tested_positive")
    assert positives == [53, 69, 85, 101]  # the 4 earlier days: the best predictors, never merged
    _, cli = train.select_columns(header, "tested_positive", "cli,ID")
    assert cli == [38, 54, 70, 86, 102, STATES.index("ID") + 1]  # "ID" is Idaho, not the row id
    _, by_index = train.select_columns(header, "tested_positive", "38, 39")
    assert by_index == [38, 39] and header[38] == "cli" and header[39] == "ili"
    assert [header[i] for i in positives] == ["tested_positive"] * 4 and DAY[-1] == "tested_positive"
    with pytest.raises(ConfigError, match="'fever' is no feature column of the training file"):
        train.select_columns(header, "tested_positive", "cli,fever")
    with pytest.raises(ConfigError, match=r"indices 0..117 \(not the target's 117\)"):
        train.select_columns(header, "tested_positive", "118")
    with pytest.raises(ConfigError, match="'117' is no feature column"):
        train.select_columns(header, "tested_positive", "117")  # the target itself


def test_hw1_selected_features_train_end_to_end(covid, capsys):
    train_csv, test_csv = covid
    summary = load_template().main(["--train-csv", str(train_csv), "--test-csv", str(test_csv),
                                    "--target", "tested_positive", "--features", "tested_positive,cli",
                                    "--epochs", "2", "--run", "selected", "--hidden", "8"])
    assert "9 features" in capsys.readouterr().out
    train = load_template()
    _, columns = train.select_columns(covid_header(), "tested_positive", "tested_positive,cli")
    check_predictions(Path(summary["predictions"]).parent, test_csv, "tested_positive", hidden=[8],
                      columns=columns)


def test_a_test_file_with_other_columns_reports_the_first_differences(covid, tmp_path, capsys):
    train_csv, test_csv = covid
    rows = read_csv(test_csv)
    rows[0][40], rows[0][41] = "ILI", "hh_cli"
    bad = tmp_path / "bad.test.csv"
    with open(bad, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    message = _fails_before_training(["--train-csv", str(train_csv), "--test-csv", str(bad),
                                      "--target", "tested_positive"], "needs the training file's columns but the target", capsys)
    assert covid_header()[40:42] == ["hh_cmnty_cli", "nohh_cmnty_cli"]
    assert "column 40: 'hh_cmnty_cli' in training, 'ILI' in test" in message
    assert "column 41: 'nohh_cmnty_cli' in training, 'hh_cli' in test" in message
    assert len(message) < 400  # the first differences, not two lists of 117 names


# --- exact resume after SIGKILL mid-epoch -----------------------------------------------------


TINY = ["--epochs", "4", "--early-stop", "50", "--every", "0.0001", "--hidden", "8"]


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """An uninterrupted run (workers 0) that the killed runs must match bit for bit."""
    root = tmp_path_factory.mktemp("tiny-reference")
    done = run_script(SCRIPT, root, *TINY, "--num-workers", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    return outputs_of(root, "train")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_at_five_steps_mid_epoch_then_rerun_is_bit_identical(tiny_reference, tmp_path, workers):
    killed = tmp_path / "killed"
    kill_points = sorted(random.Random(workers).sample(range(2, 8), 5))  # 9 steps an epoch, 36 in all
    steps = kill_and_rerun(SCRIPT, killed, [*TINY, "--num-workers", str(workers)], kill_points)
    assert sum(steps[:-1]) >= sum(kill_points) and steps[-1] < 36  # each launch went on, none replayed
    for name in ("model.safetensors", "predictions.csv"):
        assert (outputs_of(killed, "train") / name).read_bytes() == (tiny_reference / name).read_bytes(), name


# --- reruns, config changes -------------------------------------------------------------------


def test_rerun_says_complete_more_epochs_continue_and_fresh_starts_over(capsys):
    train = load_template()
    first = train.main(["--epochs", "3", "--early-stop", "50"])
    model_bytes = Path(first["model"]).read_bytes()
    capsys.readouterr()
    train.main(["--epochs", "3", "--early-stop", "50"])
    out = capsys.readouterr().out
    assert "epoch    " not in out and "--fresh" in out
    assert Path(first["model"]).read_bytes() == model_bytes
    train.main(["--epochs", "5", "--early-stop", "50"])
    out = capsys.readouterr().out
    assert [line[:13] for line in out.splitlines() if line.startswith("epoch ")] == \
        ["epoch    4/5 ", "epoch    5/5 "]
    fresh = train.main(["--epochs", "2", "--early-stop", "50", "--fresh"])
    out = capsys.readouterr().out
    assert [line[:13] for line in out.splitlines() if line.startswith("epoch ")] == \
        ["epoch    1/2 ", "epoch    2/2 "]
    aside = [p for p in Path(fresh["model"]).parent.parent.iterdir() if p.name.startswith("train.old-")]
    assert len(aside) == 1  # the earlier run is kept, not deleted


def test_a_changed_model_shape_is_refused_with_one_message_and_lr_is_applied(capsys):
    train = load_template()
    train.main(["--epochs", "1", "--hidden", "8"])
    capsys.readouterr()
    with pytest.raises(ConfigError) as info:
        train.main(["--epochs", "1", "--hidden", "16"])
    message = str(info.value)
    assert "hidden [8] -> [16]" in message and "--fresh" in message and "--run NAME" in message
    assert "size mismatch" not in message and "\n" not in message
    assert "epoch " not in capsys.readouterr().out  # stopped before training
    more = train.main(["--epochs", "2", "--hidden", "8", "--lr", "0.01"])
    out = capsys.readouterr().out
    assert "applied: epochs 1 -> 2, lr 0.0003 -> 0.01" in out and "epoch    2/2" in out
    assert more["run"].config["lr"] == 0.01


# --- out of memory -----------------------------------------------------------------------------


@pytest.fixture
def oom_above(monkeypatch):
    """Make the model's forward pass raise CUDA's OOM error above `limit` rows (training only)."""
    train = load_template()
    original = train.Regressor.forward
    calls = {"oom": 0, "limit": None}

    def forward(self, x):
        if self.training and calls["limit"] is not None and x.shape[0] > calls["limit"]:
            calls["oom"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, x)

    monkeypatch.setattr(train.Regressor, "forward", forward)

    def arm(limit):
        calls["limit"], calls["oom"] = limit, 0
        return calls

    return arm


def test_oom_halves_the_micro_batch_keeps_the_batch_and_survives_a_resume(oom_above, capsys):
    train = load_template()
    calls = oom_above(8)
    hit = train.main(["--epochs", "2", "--early-stop", "50", "--run", "oom"])
    assert calls["oom"] == 2  # 32 -> 16 -> 8
    oom_above(None)
    by_hand = train.main(["--epochs", "2", "--early-stop", "50", "--run", "micro8", "--micro-batch-size", "8"])
    assert Path(hit["model"]).read_bytes() == Path(by_hand["model"]).read_bytes()
    calls = oom_above(8)
    train.main(["--epochs", "3", "--early-stop", "50", "--run", "oom"])  # the size is remembered
    assert calls["oom"] == 0
    capsys.readouterr()


# --- torchrun ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_gloo_processes_killed_mid_epoch_resume_bit_identical(tmp_path):
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]
    args = ["--epochs", "2", "--early-stop", "50", "--every", "0.0001", "--hidden", "8"]
    reference = tmp_path / "reference"
    done = run_script(SCRIPT, reference, *args, launcher=torchrun, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("device: cpu, 2 process(es)") == 1  # rank 0 alone prints
    assert {p.name for p in outputs_of(reference, "train").iterdir()} == OUTPUT_FILES  # one set
    killed = tmp_path / "killed"
    kill_and_rerun(SCRIPT, killed, args, [3], launcher=torchrun)  # 9 rows of 16 per process: 9 steps
    for name in ("model.safetensors", "predictions.csv"):
        assert (outputs_of(killed, "train") / name).read_bytes() == \
            (outputs_of(reference, "train") / name).read_bytes(), name


# --- bad configuration -------------------------------------------------------------------------


def _fails_before_training(args: list[str], match: str, capsys) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        load_template().main(args)
    assert "epoch " not in capsys.readouterr().out
    return str(info.value)


@pytest.mark.parametrize("args, match", [
    (["--train-csv", "covid.train.csv"], "covid.train.csv was not found"),
    (["--target", "tested_positive"], "no target column 'tested_positive'; the columns are id, age"),
    (["--batch-size", "0"], "batch_size=0: give a whole number >= 1"),
    (["--epochs", "-1"], "epochs=-1: give a whole number >= 1"),
    (["--early-stop", "0"], "patience"),
    (["--every", "0"], "every=0.0: give a number of minutes > 0"),
    (["--num-workers", "-1"], "num_workers=-1"),
    (["--valid-ratio", "1.5"], "valid_ratio = 1.5 of 354 rows leaves no training or validation rows"),
    (["--valid-ratio", "0.001"], "valid_ratio = 0.001 of 354 rows leaves no training or validation rows"),
    (["--valid-ratio", "-0.2"], "strictly between 0 and 1"),
    (["--hidden", "64,x"], "hidden = '64,x': give positive sizes"),
    (["--features", "bmi,weight"], "'weight' is no feature column"),
    (["--micro-batch-size", "many"], "micro-batch size 'many': give a number of rows"),
    (["--micro-batch-size", "0"], "micro_batch_size=0"),
])
def test_bad_configuration_is_stopped_before_training(args, match, capsys):
    message = _fails_before_training(args, match, capsys)
    assert "\n" not in message


def test_non_numeric_value_names_line_and_column(tmp_path, capsys):
    rows = read_csv(TRAIN_CSV)
    rows[7][rows[0].index("bmi")] = "n/a"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    message = _fails_before_training(["--train-csv", str(bad)], "not a finite number", capsys)
    assert "line 8, column 3 ('bmi'): 'n/a'" in message


def test_bad_configuration_from_the_command_line_is_one_line(tmp_path):
    done = run_script(SCRIPT, tmp_path, "--valid-ratio", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("train.py: error: valid_ratio = 2.0 of 354 rows leaves no training")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
