"""In Chromium: the pages and Swagger UI work under the Content-Security-Policy without a single
violation, and with API keys set a browser signs in, uploads, and cannot be made to post the form
from another site."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from werkzeug.wrappers import Response

from demo.synthetic import encode_jpeg, generate_image
from tests.browser.conftest import BrowserPage, RunningGateway, demo_config, serving_app

KEY = "browser-test-key"
# Every CSP violation the page meets is kept where the test can read it.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""


def violations(page) -> list[str]:
    return page.evaluate("() => window.__csp || []")


def test_swagger_ui_works_under_the_policy(gateway: RunningGateway, browser_page: BrowserPage) -> None:
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(f"{gateway.url}/docs")
    page.wait_for_selector(".opblock-tag", timeout=60_000)  # the spec was fetched and rendered
    for tag in page.locator(".opblock-tag").all():  # tags start collapsed (docExpansion "none")
        tag.click()
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 6  # every operation of the API is listed
    page.locator(".opblock-summary").first.click()
    page.wait_for_selector(".opblock-body")  # the script that expands an operation runs too
    assert violations(page) == []


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    image, _ = generate_image(np.random.default_rng(7), 320, 240, min_shapes=2, max_shapes=3)
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode_jpeg(image))
    return path


def test_upload_and_result_pages_meet_no_violation(
    gateway: RunningGateway, browser_page: BrowserPage, photo: Path
) -> None:
    page = browser_page.page
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(f"{gateway.url}/")
    page.set_input_files("#image", str(photo))
    page.wait_for_selector("#image-preview-img[src^='blob:']", state="visible")
    page.click("#submit-button")
    page.wait_for_url("**/results/*")
    page.wait_for_selector("#result-image")
    assert violations(page) == []


@pytest.fixture()
def keyed_gateway(demo_model_server: str, tmp_path: Path) -> Iterator[str]:
    from web import create_app

    app = create_app(
        demo_config(demo_model_server, tmp_path, API_KEYS=KEY, SECRET_KEY="browser-test-session-secret")
    )
    with serving_app(app) as url:
        yield url


@pytest.fixture()
def other_site(keyed_gateway: str) -> Iterator[str]:
    """A page on another origin whose form posts to the gateway's upload form when it loads."""
    html = (
        f'<!doctype html><form id="f" method="post" action="{keyed_gateway}/"'
        ' enctype="multipart/form-data"><input name="model" value="shapes"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )

    def app(environ, start_response):
        return Response(html, mimetype="text/html")(environ, start_response)

    with serving_app(app) as url:
        yield url


def test_with_keys_a_browser_signs_in_uploads_and_refuses_other_sites(
    keyed_gateway: str, other_site: str, browser_page: BrowserPage, photo: Path
) -> None:
    page = browser_page.page
    page.goto(f"{keyed_gateway}/results")
    assert "/login?next=" in page.url  # sent to sign in, and back afterwards
    page.fill("#key", "not-the-key")
    page.click("#sign-in")
    assert page.locator("#login-error").is_visible()
    page.fill("#key", KEY)
    page.click("#sign-in")
    page.wait_for_url(f"{keyed_gateway}/results")
    page.goto(f"{keyed_gateway}/")
    page.set_input_files("#image", str(photo))
    page.click("#submit-button")
    page.wait_for_url("**/results/*")
    assert page.locator("#result-image").is_visible()
    # Another site's page posting the form with this browser (signed in): refused, nothing stored.
    with page.expect_response(
        lambda r: r.url.startswith(keyed_gateway) and r.request.method == "POST"
    ) as posted:
        page.goto(other_site)
    assert posted.value.status == 403
    # Signing out ends the session.
    page.goto(f"{keyed_gateway}/")
    page.click("#sign-out")
    page.wait_for_url("**/login")
    page.goto(f"{keyed_gateway}/results")
    assert "/login?next=" in page.url
