"""The HTML reports render offline, checked as a user sees them: in headless Chromium (Debian's
``chromium`` package, which ``.ci/run`` installs), with no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from benchmarks.grid.migrate import adopt_legacy_cells
from benchmarks.grid.report import plot_curves, runs_of
from sb3_ppo_variants.tuning import run_study
from sb3_ppo_variants.tuning.report import PLOTS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
ROOT = Path(__file__).resolve().parents[2]


def rendered(page: Path, window: str = "800,600") -> str:
    """The page's DOM after its scripts ran (file:// only: nothing can be fetched from a CDN)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"]
    command.append(f"--window-size={window}")
    return subprocess.run([*command, page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout


def plotted(dom: str) -> bool:
    """plotly drew its SVG and at least one trace in it."""
    return 'class="main-svg"' in dom and 'class="trace' in dom


def test_the_tuning_report_pages_render_offline(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {"n_evaluations": 2, "n_eval_episodes": 2, "n_eval_envs": 2, "n_last_evaluations": 1}
    study = run_study("CartPole-v1", 3, storage=f"sqlite:///{tmp_path / 's.db'}", n_timesteps=600, progress=False,
                      pruner="none", **settings)  # fmt: skip
    files = write_report(study, tmp_path / "report")
    for name in PLOTS:
        assert plotted(rendered(files[f"{name}.html"])), name


def earlier_grid(tmp_path: Path) -> optuna.Study:
    """A copy of an earlier grid's study, its cells adopted as a report adopts them (the copy is written)."""
    copy = tmp_path / "grid.db"
    shutil.copyfile(ROOT / "benchmarks/results/next-wave/grid.db", copy)
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{copy}")
    adopt_legacy_cells(study)
    return study


def test_the_grid_report_pages_render_offline(tmp_path):
    runs = runs_of(earlier_grid(tmp_path))
    envs, variants = sorted({r.cell.env for r in runs})[:1], sorted({r.cell.variant for r in runs})
    pages = [path for path in plot_curves(runs, envs, variants, tmp_path) if path.suffix == ".html"]
    assert pages and all(plotted(rendered(page)) for page in pages)


def test_a_page_without_its_script_renders_no_plot(tmp_path):
    """The check above can fail: without plotly.js beside it (as with a CDN offline), nothing is drawn."""
    runs = runs_of(earlier_grid(tmp_path))
    (page,) = [
        p for p in plot_curves(runs, [runs[0].cell.env], [runs[0].cell.variant], tmp_path) if p.suffix == ".html"
    ]
    (tmp_path / "plotly.min.js").unlink()
    assert not plotted(rendered(page))


def test_the_components_page_shows_its_whole_table(tmp_path):
    """SB3's theme keeps table cells on one line, which cut the formulas at the content width: the
    page's own CSS lets them wrap, so no table is wider than its column."""
    html = tmp_path / "html"
    subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), str(html)], check=True)
    page = html / "components.html"
    page.write_text(page.read_text().replace("</body>", WIDTHS + "</body>"))
    dom = rendered(page, window="1400,1000")  # a laptop's browser window
    assert 'id="widths"' in dom and "overflowing=0" in dom and "tables=" in dom and "tables=0" not in dom


WIDTHS = """<script>
window.addEventListener("load", () => {
  const column = document.querySelector(".rst-content").getBoundingClientRect().width;
  const tables = [...document.querySelectorAll("table.docutils")];
  const overflowing = tables.filter((t) => t.getBoundingClientRect().width > column + 1).length;
  const text = `tables=${tables.length} overflowing=${overflowing}`;
  document.body.insertAdjacentHTML("beforeend", `<p id="widths">${text}</p>`);
});
</script>"""
