"""Data builders for the template tests: files with the course's exact shapes, synthetic values.

The ML2022 HW1 (COVID-19) files: `covid.train.csv` has 118 columns, `id`, 37
states one-hot, then the same 16 names for each of 5 days (so `cli` ...
`tested_positive` appear five times each, and the state "ID" (Idaho) next to
the row id "id"); 2,699 rows. `covid.test.csv` has the first 117 (no last
`tested_positive`), 1,078 rows.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

STATES = ("AL AK AZ AR CA CO CT FL GA ID IL IN IA KS KY LA MD MA MI MN MS MO NE NV NJ NM NY NC "
          "OH OK OR RI SC TX UT VA WA").split()
DAY = ["cli", "ili", "hh_cmnty_cli", "nohh_cmnty_cli", "wearing_mask", "travel_outside_state",
       "work_outside_home", "shop", "restaurant", "spent_time", "large_event", "public_transit",
       "anxious", "depressed", "worried_finances", "tested_positive"]
TRAIN_ROWS, TEST_ROWS = 2699, 1078


def covid_header(test: bool = False) -> list[str]:
    """The course's header: 118 names for the training file, 117 for the test file."""
    header = ["id", *STATES, *DAY * 5]
    return header[:-1] if test else header


def write_covid(folder: Path, train_rows: int = TRAIN_ROWS, test_rows: int = TEST_ROWS,
                seed: int = 0) -> tuple[Path, Path]:
    """covid.train.csv and covid.test.csv with the course's header and synthetic values.

    Every day's tested_positive follows the previous day's (as in the real data,
    where the earlier days are the best predictors), so a model that sees the
    four earlier tested_positive columns learns far more than one that does not.
    """
    rng = random.Random(seed)
    paths = []
    for name, rows, test in (("covid.train.csv", train_rows, False), ("covid.test.csv", test_rows, True)):
        path = folder / name
        first_id = 0 if not test else train_rows
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(covid_header(test))
            for n in range(rows):
                state = [0] * len(STATES)
                state[rng.randrange(len(STATES))] = 1
                positive, days = rng.uniform(2, 30), []
                for _ in range(5):
                    positive = max(0.0, positive + rng.gauss(0, 1))
                    days += [round(rng.uniform(0, 5), 6) for _ in DAY[:-1]] + [round(positive, 6)]
                values = [first_id + n, *state, *days]
                writer.writerow(values[:-1] if test else values)
        paths.append(path)
    return paths[0], paths[1]


def write_image_archive(path: Path, *, train: int, valid: int, test: int, layout: str = "prefix",
                        top: str | None = "images", splits=("train", "valid", "test"), seed: int = 0) -> Path:
    """A zip of real images taken from the bundled digits, in one of the course's two layouts.

    layout "prefix": train/<class>_<n>.png (food-11, ML2023 HW3); "folders":
    train/<class>/<n>.png (ML2022 HW3's food-11, class folders "00".."10"-style
    names here "d0".."d9"). `top` wraps everything in one top-level folder (None: none).
    """
    import zipfile

    bundled = Path(__file__).resolve().parent.parent / "templates" / "data" / "digits.zip"
    with zipfile.ZipFile(bundled) as source:
        members = {name: source.read(name) for name in source.namelist() if name.endswith(".png")}
    rng = random.Random(seed)
    labelled = sorted(n for n in members if "/test/" not in n)
    rng.shuffle(labelled)
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(path, "w") as archive:
        start = 0
        for split, count in zip(splits, (train, valid, test)):
            for n, name in enumerate(labelled[start:start + count]):
                label = Path(name).name.split("_")[0]
                if split == splits[2]:
                    inner = f"{n:04d}.png"
                elif layout == "prefix":
                    inner = f"{label}_{n}.png"
                else:
                    inner = f"d{label}/{n}.png"
                archive.writestr(f"{prefix}{split}/{inner}", members[name])
            start += count
    return path
