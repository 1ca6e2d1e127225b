"""The HTML reports render offline, checked as a user sees them: in headless Chromium (Debian's
``chromium`` package, which ``.ci/run`` installs), with no network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from benchmarks.grid.report import plot_curves, runs_of
from tuning import run_study
from tuning.report import PLOTS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
ROOT = Path(__file__).resolve().parents[1]


def rendered(page: Path) -> str:
    """The page's DOM after its scripts ran (file:// only: nothing can be fetched from a CDN)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"]
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


def test_the_grid_report_pages_render_offline(tmp_path):
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{ROOT / 'benchmarks/results/next-wave/grid.db'}")
    runs = runs_of(study)
    envs, variants = sorted({r.cell.env for r in runs})[:1], sorted({r.cell.variant for r in runs})
    pages = [path for path in plot_curves(runs, envs, variants, tmp_path) if path.suffix == ".html"]
    assert pages and all(plotted(rendered(page)) for page in pages)


def test_a_page_without_its_script_renders_no_plot(tmp_path):
    """The check above can fail: without plotly.js beside it (as with a CDN offline), nothing is drawn."""
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{ROOT / 'benchmarks/results/next-wave/grid.db'}")
    runs = runs_of(study)
    (page,) = [
        p for p in plot_curves(runs, [runs[0].cell.env], [runs[0].cell.variant], tmp_path) if p.suffix == ".html"
    ]
    (tmp_path / "plotly.min.js").unlink()
    assert not plotted(rendered(page))
