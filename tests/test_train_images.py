"""templates/train_images.py: the HW3-style image template end to end on the bundled digits,
both of the course's image layouts, exact mid-epoch resume after SIGKILL with 2 workers, and
bad configurations stopped with one line."""

from __future__ import annotations

import importlib.util
import random
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import colabkit
from colabkit.errors import ConfigError
from tests._template_data import write_image_archive
from tests._template_procs import REPO, kill_and_rerun, outputs_of, read_csv, run_script

SCRIPT = REPO / "templates" / "train_images.py"
BUNDLED = REPO / "templates" / "data" / "digits.zip"


def load_template():
    module = sys.modules.get("colabkit_template_train_images")
    if module is None:
        spec = importlib.util.spec_from_file_location("colabkit_template_train_images", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def check_predictions(summary: dict, config_args: list[str]) -> list[list[str]]:
    """Id,Category per test image in file order; the exported model reproduces every label."""
    images = load_template()
    config = images.parse_args(config_args)
    root = Path(colabkit.stage(images.Path(config["archive"]) if Path(config["archive"]).is_absolute()
                               else REPO / "templates" / config["archive"], extract=True, quiet=True))
    root = next(r for r in [root, *root.iterdir()] if (r / config["splits"].split(",")[0]).is_dir())
    train_dir, _, test_dir = config["splits"].split(",")
    classes = images.ImageFolder(root / train_dir, config).classes
    test_set = images.ImageFolder(root / test_dir, config, classes=classes)
    model = images.small_cnn(1 if config["mode"] == "L" else 3, len(classes), config["width"])
    colabkit.load_model(model, summary["model"])
    model.eval()
    with torch.no_grad():
        labels = model(torch.stack([test_set[i][0] for i in range(len(test_set))])).argmax(1).tolist()
    rows = read_csv(summary["predictions"])
    assert rows[0] == ["Id", "Category"]
    assert rows[1:] == [[p.stem, classes[k]] for p, k in zip(test_set.files, labels)]
    return rows


def test_the_bundled_digits_zip_is_small_and_shaped_like_food11():
    assert BUNDLED.stat().st_size < 1_000_000
    names = zipfile.ZipFile(BUNDLED).namelist()
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 1797 and all(n.startswith("digits/") for n in names)
    count = {split: sum(f"/{split}/" in n for n in pngs) for split in ("train", "valid", "test")}
    assert count == {"train": 1200, "valid": 300, "test": 297}
    assert all(Path(n).stem.split("_")[0] in "0123456789" for n in pngs if "/test/" not in n)
    assert (REPO / "templates" / "data" / "digits.LICENSE").read_text().startswith("BSD 3-Clause License")
    readme = (REPO / "templates" / "data" / "digits.README.md").read_text()
    assert "tools/export_digits.py" in readme and "scikit-learn" in readme


def test_the_export_script_rebuilds_the_shipped_zip_byte_for_byte(tmp_path):
    done = run_script(REPO / "tools" / "export_digits.py", tmp_path, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout


@pytest.mark.slow
def test_end_to_end_on_the_bundled_digits(capsys):
    summary = load_template().main(["--epochs", "4"])
    out = capsys.readouterr().out
    assert "data: 1200 training, 300 validation, 297 test images, 10 classes" in out
    accuracy = float(out.split("best validation accuracy ")[1].split()[0])
    assert accuracy > 0.85, out  # a trained CNN, not chance (0.1)
    rows = check_predictions(summary, [])
    assert len(rows) == 298 and rows[1][0] == "0000"
    assert {p.name for p in Path(summary["model"]).parent.iterdir()} == {
        "model.safetensors", "predictions.csv", "loss_curve.png"}
    metrics = read_csv(summary["run"].log_dir / "metrics.csv")
    assert "valid_acc" in metrics[0] and sum(row[2] == "epoch" for row in metrics[1:]) == 4
    # best by MAXIMUM accuracy: the exported weights are those of the best epoch
    assert summary["run"].best == accuracy


@pytest.mark.parametrize("layout, top", [("folders", None), ("prefix", "food11")])
def test_class_from_folder_or_file_name_with_or_without_a_top_folder(tmp_path, layout, top, capsys):
    archive = write_image_archive(tmp_path / "food11.zip", train=120, valid=40, test=10, layout=layout,
                                  top=top, splits=("training", "validation", "testing"))
    args = ["--archive", str(archive), "--splits", "training,validation,testing", "--epochs", "1",
            "--run", f"{layout}-{top}"]
    summary = load_template().main(args)
    out = capsys.readouterr().out
    classes = [f"d{k}" for k in range(10)] if layout == "folders" else [str(k) for k in range(10)]
    assert "120 training, 40 validation, 10 test images, 10 classes" in out
    rows = check_predictions(summary, args)
    assert {category for _, category in rows[1:]} <= set(classes)


def test_numeric_classes_sort_as_numbers(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    with zipfile.ZipFile(BUNDLED) as source:
        png = source.read(next(n for n in source.namelist() if n.endswith(".png")))
    for label in (10, 2, 0):
        (folder / f"{label}_0.png").write_bytes(png)
    dataset = load_template().ImageFolder(folder, load_template().parse_args([]))
    assert dataset.classes == ["0", "2", "10"] and sorted(dataset.labels) == [0, 1, 2]


def test_augmentation_depends_only_on_the_sample_generator():
    images = load_template()
    x = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    same = [images.augment(x, torch.Generator().manual_seed(7), 1) for _ in range(2)]
    assert torch.equal(same[0], same[1]) and same[0].shape == x.shape
    outcomes = {tuple(images.augment(x, torch.Generator().manual_seed(s), 1).flatten().tolist())
                for s in range(40)}
    assert len(outcomes) > 5  # really random across seeds (flips and shifts)


@pytest.mark.slow
def test_sigkill_at_five_steps_with_two_workers_then_rerun_is_bit_identical(tmp_path):
    archive = write_image_archive(tmp_path / "small.zip", train=200, valid=40, test=20)
    args = ["--archive", str(archive), "--epochs", "2", "--every", "0.0001", "--width", "8",
            "--batch-size", "32"]  # 7 steps an epoch
    reference = tmp_path / "reference"
    done = run_script(SCRIPT, reference, *args, "--num-workers", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    killed = tmp_path / "killed"
    kill_points = sorted(random.Random(3).sample(range(1, 5), 4)) + [2]
    steps = kill_and_rerun(SCRIPT, killed, [*args, "--num-workers", "2"], kill_points)
    assert steps[-1] < 14  # the last launch continued, it did not start over
    for name in ("model.safetensors", "predictions.csv"):
        assert (outputs_of(killed, "images") / name).read_bytes() == \
            (outputs_of(reference, "images") / name).read_bytes(), name


@pytest.mark.parametrize("args, match", [
    (["--archive", "data/food11.zip"], "data/food11.zip was not found"),
    (["--mode", "CMYK"], "mode = 'CMYK': use L"),
    (["--splits", "train,valid"], "give three folder names"),
    (["--image-size", "0"], "image_size = 0"),
    (["--splits", "training,validation,testing"], "has no training/ folder"),
    (["--epochs", "0"], "epochs=0"),
])
def test_bad_configuration_is_stopped_before_training(args, match, capsys):
    with pytest.raises(ConfigError, match=match) as info:
        load_template().main(args)
    assert "\n" not in str(info.value) and "epoch " not in capsys.readouterr().out


def test_bad_configuration_from_the_command_line_is_one_line(tmp_path):
    done = run_script(SCRIPT, tmp_path, "--mode", "CMYK")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "train_images.py: error: mode = 'CMYK': use L (grayscale) or RGB (color).\n"
