"""A video job from the jobs page in Chromium, with API keys on: a signed-in browser uploads a video of
moving demo shapes with tracking on, a real worker annotates it, and the job page plays the annotated
H.264 video in its `<video>` element, shows the timeline and the tables, and seeks when a frame of the
table is clicked; no Content-Security-Policy violation on the way."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from demo.videos import shapes_video
from tests.browser.conftest import JOBS_KEY, SCREENSHOT_DIR, BrowserPage, sign_in
from tests.web.jobs.queue_helpers import Workers
from web.jobs.config import JobSettings

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""
PLAYABLE = (
    "() => { const v = document.getElementById('job-video'); return v && (v.readyState >= 2 || v.error); }"
)



def test_a_video_job_from_the_form_plays_on_its_page(
    keyed_gateway: str, serving: dict[str, str], workers: Workers, browser_page: BrowserPage, tmp_path: Path
) -> None:
    video = shapes_video(tmp_path / "street.mp4", frames=45, fps=15, step=3, audio="aac")
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, keyed_gateway, "/jobs", JOBS_KEY)
    page.select_option("#model", "shapes_jpeg")
    page.check("#kind-video")
    assert page.locator("#archive").is_disabled() and page.locator("#video-options").is_visible()
    page.set_input_files("#video", str(video.path))
    page.check("#track")
    page.click("#start-job")
    page.wait_for_url(f"{keyed_gateway}/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    assert page.locator("[data-eval-pending]").is_visible()  # queued: the video comes at the end

    workers.start(JobSettings.from_env(serving), predictor=None, **serving)
    page.wait_for_selector("#job-video", timeout=180_000)  # the page reloads itself when the job is done
    state = page.wait_for_function(PLAYABLE, timeout=30_000)
    assert state
    facts = page.evaluate(
        "() => { const v = document.getElementById('job-video');"
        " return {error: v.error && v.error.message, width: v.videoWidth, height: v.videoHeight,"
        " duration: v.duration}; }"
    )
    assert facts["error"] is None and (facts["width"], facts["height"]) == (640, 480)
    assert abs(facts["duration"] - 3.0) < 0.2
    played = page.evaluate(
        "async () => { const v = document.getElementById('job-video'); v.muted = true; await v.play();"
        " await new Promise(r => setTimeout(r, 700)); v.pause(); return v.currentTime; }"
    )
    assert played > 0.2  # it really plays, not only loads

    labels = {shape.label.casefold() for shape in video.shapes}
    timeline = page.locator("#video-timeline")
    assert timeline.locator("rect").count() > 0
    rows = timeline.locator("text.timeline-label").all_text_contents()
    assert labels <= {text.split(" (")[0].casefold() for text in rows}
    tracks = page.locator("#video-tracks tbody tr")
    assert tracks.count() >= len([s for s in video.shapes if video.inside(s)])
    link = page.locator("#video-top-frames a[data-seek]").nth(2)
    target = float(link.get_attribute("data-seek"))
    link.click()
    assert abs(page.evaluate("() => document.getElementById('job-video').currentTime") - target) < 0.1
    assert page.evaluate("() => window.__csp") == []

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => { const v = document.getElementById('job-video'); v.currentTime = 1.5; }")
    page.wait_for_timeout(500)
    shot = SCREENSHOT_DIR / "video-job.png"
    page.locator("#video-report").screenshot(path=str(shot))
    assert Image.open(shot).size[0] > 600
    assert page.request.get(f"{keyed_gateway}/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
