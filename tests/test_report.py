"""`snakemake --report results/report.html` after the tiny run, opened in a real headless
Chromium: the page that JavaScript renders, not the file's bundled text."""
import base64
import json
import re
import shutil
from pathlib import Path

import pytest

import chromium
from conftest import snakemake, tiny_config

pytestmark = pytest.mark.slow

CATEGORIES = {"Summary": {"summary.png"},
              "Figures": {"fid_vs_w.png", "fid_vs_budget.png", "fid_w_gamma.png", "samples.png"},
              "Tables": {"sweep.csv", "table_a1.csv"}}


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    """A copy of the tiny run with its report built the way README says; (workdir, snakemake's log)."""
    workdir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    proc = snakemake(workdir, "--report", "results/report.html")
    return workdir, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def browser():
    if chromium.executable() is None:
        pytest.skip("needs Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    with chromium.Chromium() as browser:
        yield browser


@pytest.fixture
def page(built, browser):
    """The report opened afresh, once React has drawn its menu into #app."""
    browser.open((built[0] / "results/report.html").as_uri())
    browser.wait_for("document.querySelector('#app nav') !== null")
    return browser


def app_text(page) -> str:
    return page.evaluate("document.querySelector('#app').innerText")


def listed(page) -> list[str]:
    """The first column of the results list the menu shows now: a figure's or table's name."""
    return page.evaluate("[...document.querySelectorAll('#app nav table tbody tr')]"
                         ".map(row => row.querySelector('td').innerText.trim())")


def open_category(page, name: str) -> None:
    """Click a category in the menu and wait for its results list."""
    page.click(name)
    page.wait_for("document.querySelector('#app nav table tbody tr') !== null")


def press_in_row(page, name: str, button: int) -> None:
    """Press a result's button in the list: 0 views it, 1 shows its information and caption."""
    found = page.evaluate(
        f"(() => {{ const row = [...document.querySelectorAll('#app nav table tbody tr')]"
        f".find(row => row.querySelector('td').innerText.trim() === {json.dumps(name)});"
        f" if (row) row.querySelectorAll('a')[{button}].click(); return Boolean(row); }})()")
    assert found, f"{name} is not in the list: {listed(page)}"


def test_the_report_is_one_self_contained_file_without_caption_errors(built):
    workdir, log = built
    assert "Report created." in log
    assert not re.search(r"\((ERROR|SEVERE|WARNING)/\d\)", log), log  # docutils' complaints about an .rst
    html = (workdir / "results/report.html").read_text()
    # every result embedded in the page as a data URI of exactly the file's bytes
    results = json.loads(re.search(r"var results = (\{.*\});\n", html).group(1))
    assert {Path(path).name for path in results} == set().union(*CATEGORIES.values())
    for path, result in results.items():
        header, payload = result["data_uri"].split(",", 1)
        assert header.startswith("data:") and header.endswith(";base64")
        assert base64.b64decode(payload) == (workdir / path).read_bytes()
    assert not re.search(r"""(src|href)=["']https?://""", html)


def test_the_page_renders_the_workflow_description_of_this_run(built, page):
    raw = (built[0] / "results/report.html").read_text()
    # In the file the app is an empty div and the description a JSON string in a script, its
    # non-ASCII escaped; only JavaScript puts it on the page.
    assert re.search(r'<div id="app">\s*</div>', raw) and "θ = (1+w)·θ_r − w·θ_s" not in raw
    assert page.evaluate("getComputedStyle(document.querySelector('#loading-screen')).display") == "none"
    text = app_text(page)
    for words in ["Neon: negative extrapolation from self-training", "θ = (1+w)·θ_r − w·θ_s",
                  "w > 0 extrapolates away from the self-trained θ_s (Neon)", "The workflow", "This run"]:
        assert words in text
    # "This run" is the config's models, one row each, from the caption's jinja over the config
    rows = page.evaluate("[...document.querySelectorAll('#app table tbody tr')]"
                         ".map(row => [...row.cells].map(cell => cell.innerText.trim()))")
    models = tiny_config()["models"]
    assert [row[:3] for row in rows] == [[name, spec["adapter"], spec["dataset"]] for name, spec in models.items()]
    assert rows[0][4] == "0.005, 0.01" and rows[0][5] == "-0.5, 0.5"  # ddpm's budgets and w
    for category in CATEGORIES:
        assert category in page.evaluate("document.querySelector('#app nav').innerText")


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_aggregate_output_is_listed_under_its_category(built, page, category):
    open_category(page, category)
    assert set(listed(page)) == CATEGORIES[category]


def test_the_categories_hold_everything_the_aggregate_wrote(built):
    written = {f.name for folder in ["tables", "figures"] for f in (built[0] / "results" / folder).iterdir()}
    assert written == set().union(*CATEGORIES.values())


def test_a_figure_opens_with_its_caption(page):
    open_category(page, "Summary")
    press_in_row(page, "summary.png", 0)
    # the PNG decoded in the content pane (the logo is an SVG data URI)
    width = page.wait_for("(() => { const img = document.querySelector('#app img[src^=\"data:image/png\"]');"
                          " return img && img.complete && img.naturalWidth; })()")
    assert width > 500
    press_in_row(page, "summary.png", 1)
    page.wait_for("document.querySelector('#app nav').innerText.includes('The run on one page')")
    assert "w > 0 extrapolates away from the self-trained θ_s" in app_text(page)


def test_the_table_caption_explains_the_seed_noise_and_shows_this_runs_budgets(page):
    open_category(page, "Tables")
    press_in_row(page, "table_a1.csv", 1)
    text = page.wait_for("(() => { const t = document.querySelector('#app nav').innerText;"
                         " return t.includes('gain_over_sd') && t; })()")
    assert "fid_base_sd" in text and "extra_compute_pct" in text
    # jinja over the aggregate's params: the base budgets of tiny.yaml's models
    assert "Base training budgets in this run (Mi images): ar 0.05, ddpm 0.05." in text  # by name
