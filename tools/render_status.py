"""Render colabkit's status report as a notebook user sees it, and measure it.

The report is produced by a real Jupyter kernel (nbclient executes the
quickstart's cells: `import colabkit`, `colabkit.status()`, `%colab_setup
ML2022`, `%colab_status`) with a canned nvidia-smi on PATH and Colab through
the tests' stand-in for google.colab; before the setup Drive is not mounted, so
the report shows a GPU row and two problems. Its text/html output is placed in pages styled like Colab's light
theme, Colab's dark theme (#383838 output background) and plain Jupyter
(JupyterLab's and the classic notebook's table CSS, which right-aligns cells and
centers tables), in its light and dark theme, each rendered by headless Chromium:

- a screenshot per theme (PNG, to look at);
- measurements taken by the browser itself (--dump-dom after a script ran):
  the gap between each label and its value, the table's left offset, the
  computed alignment, and the computed colors of the problem text and of what
  is behind it, so the contrast is computed from what was rendered.

    python tools/render_status.py [OUT_DIR]      # prints the measurements as JSON

Needs chromium (apt-get install chromium) and nbclient + ipykernel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Enough of each front-end's CSS to reproduce how it treats an output table.
JUPYTER_TABLE_CSS = """
.jp-RenderedHTMLCommon table, .rendered_html table { border-collapse: collapse; border-spacing: 0;
  border: none; font-size: 12px; table-layout: fixed; margin-left: auto; margin-right: auto; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon tr,
.rendered_html td, .rendered_html th, .rendered_html tr { text-align: right; vertical-align: middle;
  padding: 0.5em 0.5em; line-height: normal; white-space: normal; max-width: none; border: none; }
.jp-RenderedHTMLCommon th, .rendered_html th { font-weight: bold; }
.jp-RenderedHTMLCommon tbody tr:nth-child(odd), .rendered_html tbody tr:nth-child(odd) { background: var(--stripe); }
.jp-RenderedHTMLCommon ul, .rendered_html ul { margin: 1em 2em; }
"""
THEMES = {
    # name: (page background, text color, extra CSS, wrapper classes)
    "colab-light": ("#ffffff", "#212121", "", "output_subarea output_html"),
    "colab-dark": ("#383838", "#d5d5d5", "", "output_subarea output_html"),
    "jupyter": ("#ffffff", "rgba(0,0,0,0.87)", ":root { --stripe: #f5f5f5; }" + JUPYTER_TABLE_CSS,
                "jp-RenderedHTMLCommon rendered_html"),
    # JupyterLab's dark theme: --jp-layout-color0 #111111, --jp-ui-font-color1 rgba(255,255,255,0.87)
    "jupyter-dark": ("#111111", "rgba(255,255,255,0.87)", ":root { --stripe: #212121; }" + JUPYTER_TABLE_CSS,
                     "jp-RenderedHTMLCommon rendered_html"),
}
MEASURE_JS = """
<script>
function rgb(s) { const m = s.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : m.concat([1]); }
function bg(el) {  // the first opaque background at or behind el
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor); if (c[3] > 0) return c;
  }
  return [255, 255, 255, 1];
}
window.addEventListener('load', () => {
  const out = {rows: [], problems: []};
  const table = document.querySelector('.colabkit-status table');
  const box = document.querySelector('.cell').getBoundingClientRect();
  out.table_left = table.getBoundingClientRect().left - box.left;
  for (const tr of table.querySelectorAll('tr')) {
    const th = tr.querySelector('th'), td = tr.querySelector('td');
    const value = document.createRange(); value.selectNodeContents(td);
    const label = document.createRange(); label.selectNodeContents(th);
    out.rows.push({label: th.textContent, gap: value.getBoundingClientRect().left - label.getBoundingClientRect().right,
                   align: getComputedStyle(td).textAlign, color: rgb(getComputedStyle(td).color),
                   background: bg(td)});
  }
  for (const p of document.querySelectorAll('.colabkit-status > div')) {
    out.problems.push({text: p.textContent.slice(0, 40), color: rgb(getComputedStyle(p).color), background: bg(p),
                       page: rgb(getComputedStyle(document.body).backgroundColor)});
  }
  const pre = document.createElement('pre'); pre.id = 'measurements'; pre.style.display = 'none'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str | None:
    """The headless browser's executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _fake_gpu_bin(folder: Path) -> Path:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}\nprint('0, Tesla T4, 1234, 15360, 37, 52, 535.104.05')\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return folder


def executed_notebook(work: Path) -> dict:
    """Run the quickstart's cells in a real Jupyter kernel (Colab through the test stand-in, a T4).

    Cells: set-up; `colabkit.status()` before any mount (two problems);
    `%colab_setup ML2022`; `%colab_status`. Returns the first status's
    text/html, and how many status tables the last two cells displayed.
    """
    import nbformat
    from nbclient import NotebookClient

    bindir = _fake_gpu_bin(Path(tempfile.mkdtemp(dir=work)))
    env_setup = textwrap.dedent(f"""\
        import os, sys
        sys.path.insert(0, {str(REPO / 'tests' / 'fake_colab')!r})  # google.colab's test stand-in
        os.environ.update(COLABKIT_RUNTIME="colab", COLABKIT_CONTENT_DIR={str(work / 'content')!r},
                          COLAB_RELEASE_TAG="release-colab_20261101-060000_RC00",
                          PATH={str(bindir)!r} + os.pathsep + os.environ["PATH"])
        os.makedirs(os.environ["COLABKIT_CONTENT_DIR"], exist_ok=True)
        import colabkit""")
    cells = [env_setup, "colabkit.status()", "%colab_setup ML2022", "%colab_status"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in cells])
    old = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    try:
        NotebookClient(notebook, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(work)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)

    def html_outputs(cell) -> list[str]:
        return [o["data"]["text/html"] for o in cell.outputs
                if o.get("output_type") in ("execute_result", "display_data") and "text/html" in o.get("data", {})]

    [before] = html_outputs(notebook.cells[1])
    after = html_outputs(notebook.cells[2]) + html_outputs(notebook.cells[3])
    setup_text = "".join(o.get("text", "") for o in notebook.cells[2].outputs if o.get("output_type") == "stream")
    return {"status_html": before, "tables_after_setup": sum("colabkit-status" in h for h in after),
            "setup_text": setup_text}


def page(fragment: str, theme: str) -> str:
    background, color, css, classes = THEMES[theme]
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>body {{ background: {background}; "
            f"color: {color}; font-family: Roboto, 'Noto Sans', Arial, sans-serif; font-size: 14px; margin: 0; }}"
            f" .cell {{ padding: 12px 16px; width: 860px; }} {css}</style>{MEASURE_JS}</head>"
            f"<body><div class='cell {classes}'>{fragment}</div></body></html>")


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-dev-shm-usage", *args],
                          capture_output=True, text=True, timeout=120)


def measure(html_file: Path) -> dict:
    done = _browser("--virtual-time-budget=3000", "--dump-dom", html_file.as_uri())
    found = re.search(r"<pre id=\"measurements\"[^>]*>(.*?)</pre>", done.stdout, re.S)
    if not found:
        raise RuntimeError(f"chromium gave no measurements (exit {done.returncode}): {done.stderr[-2000:]}")
    import html as html_module

    return json.loads(html_module.unescape(found.group(1)))


def screenshot(html_file: Path, png: Path) -> None:
    _browser("--window-size=900,330", f"--screenshot={png}", html_file.as_uri())
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot {png}")


def luminance(rgb: list[float]) -> float:
    """WCAG 2 relative luminance of an sRGB color (0..255 channels)."""
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: list[float], background: list[float]) -> float:
    """WCAG 2 contrast ratio (1..21); a translucent foreground is composited over the background first."""
    alpha = foreground[3] if len(foreground) > 3 else 1.0
    fg = [alpha * f + (1 - alpha) * b for f, b in zip(foreground[:3], background[:3])]
    high, low = sorted((luminance(fg), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def render(out_dir: Path) -> dict:
    """Execute, render each theme, screenshot and measure; returns {theme: measurements, ...}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        executed = executed_notebook(Path(work))
    fragment = executed["status_html"]
    (out_dir / "status.html.fragment").write_text(fragment, encoding="utf-8")
    results: dict = {"tables_after_setup": executed["tables_after_setup"], "setup_text": executed["setup_text"]}
    for theme in THEMES:
        html_file = out_dir / f"status-{theme}.html"
        html_file.write_text(page(fragment, theme), encoding="utf-8")
        screenshot(html_file, out_dir / f"status-{theme}.png")
        results[theme] = measure(html_file)
        for problem in results[theme]["problems"]:
            problem["contrast"] = round(contrast(problem["color"], problem["background"]), 2)
        for row in results[theme]["rows"]:
            row["contrast"] = round(contrast(row["color"], row["background"]), 2)
    return results


if __name__ == "__main__":
    if chromium() is None:
        sys.exit("render_status: no chromium on PATH; install it (apt-get install -y chromium)")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="colabkit-render-"))
    print(json.dumps(render(target), indent=1))
    print(f"screenshots in {target}", file=sys.stderr)
