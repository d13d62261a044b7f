"""How the status report looks: alignment and contrast computed from the colors it
uses, and, with headless Chromium, measured on the rendered notebook output under
Colab's light and dark themes and Jupyter's CSS (tools/render_status.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from colabkit._status import GPUInfo, Status

REPO = Path(__file__).resolve().parent.parent
COLAB_DARK = [0x38, 0x38, 0x38]
WHITE = [255, 255, 255]


def _tool():
    spec = importlib.util.spec_from_file_location("render_status", REPO / "tools" / "render_status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _tool()


def hex_rgb(value: str) -> list[int]:
    value = value.lstrip("#")
    return [int(value[i:i + 2], 16) for i in (0, 2, 4)] + [1]


def sample() -> Status:
    return Status(
        in_colab=True, colab_release="r1", python="3.11.7", torch="2.13.0+cpu",
        gpus=[GPUInfo(0, "Tesla T4", 1, 15360, 0, 40, "535")], drive_path="/content/drive/MyDrive",
        problems=["No GPU <script>alert(1)</script>. Fix: run `%colab_setup ML2022`.", "second problem"],
        runtime="colab",
    )


def test_contrast_formula_matches_wcag():
    assert render.contrast([0, 0, 0], WHITE) == pytest.approx(21)
    assert render.contrast([0x77, 0x77, 0x77], WHITE) == pytest.approx(4.48, abs=0.01)
    # the old problem color: 2.3:1 on Colab's dark output background, as the issue measured
    assert render.contrast(hex_rgb("#b45309"), COLAB_DARK) == pytest.approx(2.3, abs=0.1)


def test_problem_text_has_contrast_on_white_and_on_colab_dark():
    html = sample()._repr_html_()
    styles = re.findall(r"<div style='([^']*)'>⚠", html)
    assert len(styles) == 2
    for style in styles:
        color = hex_rgb(re.search(r"(?:^|;)color:(#[0-9a-f]{6})", style).group(1))
        background = re.search(r"background:(#[0-9a-f]{6})", style)
        assert background, "the problem text must carry its own opaque background"
        for page in (WHITE, COLAB_DARK):
            # an opaque background hides the page: the text sits on it whatever the theme
            behind = hex_rgb(background.group(1))
            assert render.contrast(color, behind) >= 4.5, (style, page)
        border = re.search(r"border-left:4px solid (#[0-9a-f]{6})", style).group(1)
        for page in (WHITE, COLAB_DARK):  # the marker stays visible on both pages (non-text: 3:1 would do)
            assert render.contrast(hex_rgb(border), page + [1]) >= 2.3


def test_cells_are_left_aligned_and_keep_the_theme_color():
    html = sample()._repr_html_()
    cells = re.findall(r"<t[hd] style='([^']*)'>", html)
    assert len(cells) == 2 * len(sample()._rows())
    assert all("text-align:left" in style and "color" not in style for style in cells)
    assert "margin:0" in re.search(r"<table style='([^']*)'", html).group(1)  # not centered by Jupyter's CSS


def test_problem_html_is_escaped_and_commands_are_code():
    html = sample()._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert re.search(r"<code[^>]*>%colab_setup ML2022</code>", html)


@pytest.mark.slow
@pytest.mark.skipif(render.chromium() is None,
                    reason="headless Chromium is not installed (apt-get install -y chromium); "
                           "the rendering is then checked only from the HTML above")
def test_rendered_in_colab_light_dark_and_jupyter(tmp_path):
    pytest.importorskip("nbclient", reason="the rendering check runs the notebook with nbclient")
    results = render.render(tmp_path)
    assert results.pop("tables_after_setup") == 1  # %colab_setup + %colab_status: one table
    assert "%colab_status for the full report" in results.pop("setup_text")
    assert set(results) == {"colab-light", "colab-dark", "jupyter", "jupyter-dark"}
    for theme, measured in results.items():
        assert measured["table_left"] <= 17, theme  # at the cell's left edge, not centered
        assert len(measured["rows"]) >= 6
        for row in measured["rows"]:
            assert row["align"] == "left", (theme, row)
            assert row["gap"] < 80, (theme, row)  # the value sits next to its label
            assert row["contrast"] >= 4.5, (theme, row)
        assert len(measured["problems"]) == 2
        for problem in measured["problems"]:
            assert problem["contrast"] >= 4.5, (theme, problem)
        png = tmp_path / f"status-{theme}.png"
        assert png.stat().st_size > 5000
        from PIL import Image

        with Image.open(png) as image:  # the page was painted in the theme's background
            corner = image.convert("RGB").getpixel((image.width - 2, image.height - 2))
        assert list(corner) == hex_rgb(render.THEMES[theme][0])[:3], theme
