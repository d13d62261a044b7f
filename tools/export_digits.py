#!/usr/bin/env python
"""Export scikit-learn's 8x8 digits (BSD-3) once as PNG files in one zip: templates/data/digits.zip.

    python tools/export_digits.py            # writes templates/data/digits.zip
    python tools/export_digits.py --check    # rebuilds in memory, compares with the shipped zip

The layout copies the course's food-11 (ML2022 HW3): one top-level folder
holding train/, valid/ and test/; a training or validation image is named
`<class>_<n>.png` (the class is the file name's prefix, as in food-11's
`3_12.jpg`), a test image `<n>.png` (no label, as on Kaggle). The zip is
deterministic: fixed split (RandomState(0)), sorted members, fixed timestamps.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "templates" / "data" / "digits.zip"
SPLIT = {"train": 1200, "valid": 300}  # the remaining 297 images are the test set
STAMP = (2026, 1, 1, 0, 0, 0)


def build() -> bytes:
    """The zip's bytes: every digit as an 8-bit grayscale PNG (0..16 scaled to 0..255)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.images))
    members = []
    start = 0
    for split, count in [*SPLIT.items(), ("test", len(order) - sum(SPLIT.values()))]:
        for n, index in enumerate(order[start:start + count]):
            pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
            png = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(png, format="PNG", optimize=True)
            name = f"{n:04d}.png" if split == "test" else f"{digits.target[index]}_{n}.png"
            members.append((f"digits/{split}/{name}", png.getvalue()))
        start += count
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for folder in ["digits/", *(f"digits/{s}/" for s in (*SPLIT, "test"))]:
            archive.writestr(zipfile.ZipInfo(folder, STAMP), b"")
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, STAMP)
            info.compress_type = zipfile.ZIP_STORED  # PNG is compressed already
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped zip, write nothing")
    args = parser.parse_args(argv)
    data = build()
    if args.check:
        same = SHIPPED.is_file() and SHIPPED.read_bytes() == data
        print(f"{SHIPPED}: {'identical' if same else 'DIFFERS'} ({len(data):,} bytes rebuilt)")
        return 0 if same else 1
    SHIPPED.write_bytes(data)
    print(f"wrote {SHIPPED} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
