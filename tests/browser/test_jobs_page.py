"""The jobs pages in Chromium, with API keys set: a signed-in browser starts jobs from the form with a
real zip, a real `python -m web.worker` predicts them over gRPC with the demo model server, and the page
shows the progress bar reaching the total, the result links and the thumbnails without being reloaded;
the cancel and delete buttons work, and no page meets a Content-Security-Policy violation."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from demo.synthetic import encode_jpeg, generate_image
from tests.browser.conftest import JOBS_KEY as KEY
from tests.browser.conftest import SCREENSHOT_DIR, BrowserPage, sign_in
from tests.support.datasets import demo_coco_zip
from tests.web.jobs.queue_helpers import Workers
from web.jobs.config import JobSettings
from web.jobs.exporters import RESULT_FILES

PICTURES = 12
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""
# Set once a page has loaded: still there later means the page was never reloaded meanwhile.
MARK = "() => { window.__sameLoad = true; }"
SAME_LOAD = "() => window.__sameLoad === true"
THUMBNAILS_LOADED = (
    "() => { const imgs = [...document.querySelectorAll('#job-thumbnails img')];"
    " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) && imgs.length; }"
)


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """A real zip of generated photos in two folders, plus a file that is not a picture."""
    rng = np.random.default_rng(5)
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(PICTURES):
            image, _ = generate_image(rng, 480, 360, min_shapes=1, max_shapes=3)
            zf.writestr(f"{'day' if i % 2 else 'night'}/{i:02d}.jpg", encode_jpeg(image))
        zf.writestr("notes/readme.txt", b"not a picture")
    return path


def violations(page) -> list[str]:
    return page.evaluate("() => window.__csp || []")


def start_job(page, base: str, archive: Path) -> str:
    """Start a job from the form on /jobs; the id of the job page it lands on."""
    page.goto(f"{base}/jobs")
    page.select_option("#model", "shapes")
    page.set_input_files("#archive", str(archive))
    page.click("#start-job")
    page.wait_for_url(f"{base}/jobs/*")
    assert violations(page) == []
    return page.url.rsplit("/", 1)[1]


def row(page, job_id: str):
    return page.locator(f"#jobs-table tr[data-job='{job_id}']")


def test_jobs_from_the_form_with_live_progress_results_thumbnails_cancel_and_delete(
    keyed_gateway: str, serving: dict[str, str], workers: Workers, browser_page: BrowserPage, archive: Path
) -> None:
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, keyed_gateway, "/jobs", KEY)
    assert page.locator("#no-jobs").is_visible()

    # A job started with no worker running waits, queued, on its page.
    first = start_job(page, keyed_gateway, archive)
    assert page.locator("[data-job-status]").inner_text() == "queued"
    bar = page.locator("progress[data-job-progress]")
    assert bar.get_attribute("max") == str(PICTURES) and bar.get_attribute("value") == "0"
    assert "notes/readme.txt" in page.locator("[data-job-skipped]").inner_text()
    page.evaluate(MARK)

    # A worker starts: the same page (never reloaded) follows the job to its end.
    settings = JobSettings.from_env(serving)
    workers.start(settings, predictor=None, **serving)
    page.wait_for_function(
        f"() => document.querySelector('progress[data-job-progress]').value === {PICTURES}", timeout=120_000
    )
    page.wait_for_function(
        "() => document.querySelector('[data-job-status]').textContent === 'succeeded'", timeout=60_000
    )
    assert page.locator("[data-job-count]").inner_text() == f"{PICTURES} / {PICTURES}"
    links = page.locator("[data-job-results] a")
    all_links = f"() => document.querySelectorAll('[data-job-results] a').length === {len(RESULT_FILES)}"
    page.wait_for_function(all_links)
    assert sorted(links.all_inner_texts()) == sorted(RESULT_FILES)
    assert page.locator("[data-job-cancel]").is_hidden()  # nothing left to cancel
    assert page.wait_for_function(THUMBNAILS_LOADED, timeout=60_000).json_value() == 8  # the first eight
    assert page.evaluate(SAME_LOAD), "the job page was reloaded"
    # Every result link downloads its file with the browser's session.
    for link in links.all():
        answer = page.request.get(f"{keyed_gateway}{link.get_attribute('href')}")
        assert answer.status == 200 and answer.body(), link.inner_text()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "job.png"), full_page=True)
    assert violations(page) == []

    # With the worker stopped, two more jobs wait; the first one is cancelled from the table.
    workers.stop_all()
    waiting = start_job(page, keyed_gateway, archive)
    later = start_job(page, keyed_gateway, archive)
    page.goto(f"{keyed_gateway}/jobs")
    assert [page.locator("#jobs-table tbody tr").nth(i).get_attribute("data-job") for i in range(3)] == [
        later,
        waiting,
        first,
    ]  # newest first
    assert row(page, first).locator("[data-job-status]").inner_text() == "succeeded"
    assert row(page, first).locator("[data-job-results] a").count() == len(RESULT_FILES)
    row(page, waiting).locator("[data-job-cancel-button]").click()
    page.wait_for_url(f"{keyed_gateway}/jobs")
    assert row(page, waiting).locator("[data-job-status]").inner_text() == "cancelled"
    assert row(page, waiting).locator("[data-job-cancel]").is_hidden()
    assert row(page, later).locator("[data-job-status]").inner_text() == "queued"

    # A worker again: the table's bar for the queued job fills up without a reload.
    page.evaluate(MARK)
    workers.start(settings, predictor=None, **serving)
    later_row = f"#jobs-table tr[data-job='{later}']"
    page.wait_for_function(
        f"() => document.querySelector(\"{later_row} [data-job-status]\").textContent === 'succeeded'",
        timeout=120_000,
    )
    assert row(page, later).locator("progress").get_attribute("value") == str(PICTURES)
    assert row(page, later).locator("[data-job-results] a").count() == len(RESULT_FILES)
    assert row(page, later).locator("[data-job-cancel]").is_hidden()
    assert row(page, later).locator("[data-job-model]").inner_text() == "shapes v1"  # the version it ran
    assert page.evaluate(SAME_LOAD), "the jobs page was reloaded"
    page.screenshot(path=str(SCREENSHOT_DIR / "jobs.png"), full_page=True)
    assert violations(page) == []

    # Delete buttons: the rows go, and so do the jobs' files.
    for job_id in (waiting, first):
        row(page, job_id).locator("[data-job-delete-button]").click()
        page.wait_for_url(f"{keyed_gateway}/jobs")
        assert row(page, job_id).count() == 0
        assert not (Path(serving["JOBS_FOLDER"]) / job_id).exists()
    assert page.locator("#jobs-table tbody tr").count() == 1
    page.goto(f"{keyed_gateway}/jobs/{first}")
    assert page.locator("#error-message").count() == 1  # the deleted job's page: not found
    assert violations(page) == []


def test_a_refused_zip_comes_back_with_the_message_and_the_choices_made(
    keyed_gateway: str, browser_page: BrowserPage, tmp_path: Path
) -> None:
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, keyed_gateway, "/jobs", KEY)
    not_a_zip = tmp_path / "pictures.zip"
    not_a_zip.write_bytes(b"these bytes are not a zip archive")
    page.select_option("#model", "digits")
    page.fill("#max_detections", "7")
    page.locator("#min_score").focus()
    page.keyboard.press("Home")  # 0.00
    page.set_input_files("#archive", str(not_a_zip))
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#start-job")
    assert posted.value.status == 400
    page.wait_for_selector("#form-error")
    assert "zip" in page.locator("#form-error").inner_text().lower()
    assert page.locator("#model").input_value() == "digits"
    assert page.locator("#max_detections").input_value() == "7"
    assert page.locator("#min_score").input_value() == "0"
    assert page.locator("#min_score_value").inner_text() == "0.00"
    assert violations(page) == []
    page.goto(f"{keyed_gateway}/jobs")  # a fresh visit starts from the defaults again
    assert page.locator("#max_detections").input_value() == "100"


# -- an evaluate job's report page ------------------------------------------------------------

EVAL_PICTURES = 12
IMAGES_LOADED = (
    "(selector) => { const imgs = [...document.querySelectorAll(selector)];"
    " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) && imgs.length; }"
)


@pytest.fixture()
def labelled_set(tmp_path: Path) -> Path:
    """The demo's kind of labelled set: synthetic photos, COCO boxes and RLE masks."""
    return demo_coco_zip(tmp_path, EVAL_PICTURES, 777)


def threshold_row(page, model: int) -> dict[str, str]:
    row = page.locator(f"[data-threshold-model='{model}']")
    return {key: row.locator(f"[data-value='{key}']").inner_text() for key in ("precision", "recall", "f1")}


def test_an_evaluation_report_page_plots_slider_and_worst_pictures(
    keyed_gateway: str,
    serving: dict[str, str],
    workers: Workers,
    browser_page: BrowserPage,
    labelled_set: Path,
) -> None:
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, keyed_gateway, "/jobs", KEY)

    page.select_option("#model", "shapes")
    page.check("#kind-evaluate")
    assert page.input_value("#min_score") == "0"  # COCO's protocol: every prediction is scored
    page.select_option("#compare_with", "shapes_jpeg")
    page.set_input_files("#archive", str(labelled_set))
    page.click("#start-job")
    page.wait_for_url(f"{keyed_gateway}/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # Queued, no worker yet: the page says the report comes at the end, and shows the progress.
    assert page.locator("[data-eval-pending]").is_visible()
    assert page.locator("progress[data-job-progress]").get_attribute("max") == str(EVAL_PICTURES)

    workers.start(JobSettings.from_env(serving), predictor=None, **serving)
    page.wait_for_selector("#eval-metrics", timeout=180_000)  # the page loads the report when done
    report = json.loads(page.request.get(f"{keyed_gateway}/api/v1/jobs/{job_id}/results/report.json").body())
    labels = [model["label"] for model in report["models"]]
    metrics = page.locator("#eval-metrics").inner_text()
    assert all(label in metrics for label in labels) and "box AP50" in metrics and "mask AP" in metrics

    plots = page.wait_for_function(IMAGES_LOADED, arg="#eval-plots img", timeout=30_000).json_value()
    assert plots == len(report["plots"]) >= 8  # 4 per model, and the per-class deltas
    for image in page.locator("#eval-plots img").all():
        assert image.is_visible() and image.bounding_box()["width"] > 200

    # The slider starts at the operating score; moving it shows report.json's values at the new score.
    assert page.locator("#threshold-value").inner_text() == "0.50"
    before = threshold_row(page, 0)
    for score in (0.9, 0.05):
        page.locator("#threshold-slider").fill(str(score))
        assert page.locator("#threshold-value").inner_text() == f"{score:.2f}"
        for model, entry in enumerate(report["models"]):
            at = entry["thresholds"][round(score * 100)]
            assert threshold_row(page, model) == {
                key: "–" if at[key] is None else f"{at[key]:.3f}" for key in ("precision", "recall", "f1")
            }
        assert threshold_row(page, 0) != before
    assert float(threshold_row(page, 0)["recall"]) > float(before["recall"])  # a lower threshold finds more
    assert float(threshold_row(page, 0)["precision"]) < float(before["precision"])  # and more of it is wrong

    worst = report["models"][0]["worst"]
    assert worst, "the demo detector makes some mistakes on 12 pictures"
    loaded = page.wait_for_function(IMAGES_LOADED, arg="[data-eval-worst='0'] img", timeout=30_000)
    assert loaded.json_value() == len(worst)
    assert worst[0]["file"] in page.locator("[data-eval-worst='0']").inner_text()

    # report.html downloads as one file that needs nothing beside it.
    html = page.request.get(f"{keyed_gateway}/api/v1/jobs/{job_id}/results/report.html").text()
    assert html.count("data:image/png;base64,") >= len(report["plots"]) and "<script" not in html
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.locator("#threshold-slider").fill("0.5")
    page.screenshot(path=str(SCREENSHOT_DIR / "evaluation.png"), full_page=True)
    assert violations(page) == []
