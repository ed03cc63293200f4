"""Opens an HTML page in a real headless browser and reports everything that did not load.

The browser is Debian's ``chromium`` driven by playwright (playwright's own browser
download is never used). Locally a test skips without it; CI sets
``BENCH_REQUIRE_BROWSER=1`` so that a missing browser fails instead of skipping silently.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_BROWSER_VARIABLE = "BENCH_REQUIRE_BROWSER"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")

# readyState >= HAVE_METADATA, or a final failure: an error, or NETWORK_NO_SOURCE (3),
# which is what a media element with only failing <source> children ends in.
_AUDIO_SETTLED = """() => [...document.querySelectorAll('audio')].every(
    audio => audio.readyState >= 1 || audio.error !== null || audio.networkState === 3)"""

_AUDIO_STATES = """() => [...document.querySelectorAll('audio')].map(audio => ({
    src: audio.currentSrc || (audio.querySelector('source') || audio).getAttribute('src'),
    readyState: audio.readyState,
    networkState: audio.networkState,
    error: audio.error ? audio.error.code : null,
    duration: Number.isFinite(audio.duration) ? audio.duration : null,
}))"""

_IMAGE_STATES = """() => [...document.images].map(image => ({
    src: image.getAttribute('src'), complete: image.complete, width: image.naturalWidth,
}))"""


@dataclass(frozen=True)
class PageCheck:
    """What went wrong while a page loaded; every field empty means a clean page."""

    console_errors: tuple[str, ...]
    page_errors: tuple[str, ...]
    failed_requests: tuple[str, ...]
    external_requests: tuple[str, ...]
    broken_images: tuple[str, ...]
    broken_audio: tuple[str, ...]
    screenshot: Path | None

    @property
    def problems(self) -> dict[str, tuple[str, ...]]:
        """The non-empty problem lists by name, for a readable assertion message."""
        names = (
            "console_errors",
            "page_errors",
            "failed_requests",
            "external_requests",
            "broken_images",
            "broken_audio",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name)}


def _media_range_cancelled(request) -> bool:
    # With preload="metadata", chromium reads a media file's header and then cancels the
    # rest of the download (net::ERR_ABORTED); whether the audio resolved is checked on
    # the element itself. A missing file fails differently (net::ERR_FILE_NOT_FOUND).
    return request.resource_type == "media" and request.failure == "net::ERR_ABORTED"


def chromium_executable() -> str | None:
    """Debian's chromium launcher, or None when it is not installed."""
    found = shutil.which("chromium")
    if found:
        return found
    return str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file() else None


def require_chromium() -> str:
    """The chromium path; skips the test without it, or fails it when CI requires a browser."""
    executable = chromium_executable()
    if executable is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get(REQUIRE_BROWSER_VARIABLE):
            pytest.fail(f"{reason}, and {REQUIRE_BROWSER_VARIABLE} is set: CI must run this test")
        pytest.skip(reason)
    return executable


def check_page(
    html: Path,
    screenshot: Path | None = None,
    *,
    executable: str | None = None,
    timeout_s: float = 30.0,
) -> PageCheck:
    """Load ``html`` from ``file://`` in headless chromium and collect what failed.

    Waits until every ``<audio>`` has its metadata (or has failed) and every ``<img>``
    has loaded; an element that does not settle within ``timeout_s`` counts as broken.
    With ``screenshot``, saves a full-page PNG there.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    executable = executable or require_chromium()
    console_errors: list[str] = []
    page_errors: list[str] = []
    failed_requests: list[str] = []
    external_requests: list[str] = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI and containers run as root, where chromium's sandbox refuses to
        # start. playwright itself adds --disable-dev-shm-usage for small /dev/shm mounts.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda message: message.type == "error" and console_errors.append(message.text),
            )
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on(
                "requestfailed",
                lambda request: (
                    _media_range_cancelled(request)
                    or failed_requests.append(f"{request.url}: {request.failure}")
                ),
            )
            page.on(
                "request",
                lambda request: (
                    request.url.startswith(("http:", "https:", "ws:", "wss:"))
                    and external_requests.append(request.url)
                ),
            )
            page.goto(html.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
            # preload="metadata" starts loading by itself; load() covers elements a
            # browser left unstarted (networkState NETWORK_EMPTY).
            page.evaluate(
                """() => document.querySelectorAll('audio').forEach(
                    audio => audio.networkState === 0 && audio.load())"""
            )
            try:
                page.wait_for_function(_AUDIO_SETTLED, timeout=timeout_s * 1000)
            except PlaywrightError:
                pass  # the elements still loading are reported as broken below
            broken_audio = [
                f"{state['src']}: readyState {state['readyState']}, networkState "
                f"{state['networkState']}, error {state['error']}, duration {state['duration']}"
                for state in page.evaluate(_AUDIO_STATES)
                if state["readyState"] < 1 or state["error"] is not None or not state["duration"]
            ]
            broken_images = [
                f"{state['src']}: complete {state['complete']}, naturalWidth {state['width']}"
                for state in page.evaluate(_IMAGE_STATES)
                if not (state["complete"] and state["width"] > 0)
            ]
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return PageCheck(
        console_errors=tuple(console_errors),
        page_errors=tuple(page_errors),
        failed_requests=tuple(failed_requests),
        external_requests=tuple(external_requests),
        broken_images=tuple(broken_images),
        broken_audio=tuple(broken_audio),
        screenshot=screenshot,
    )


VIEWPORT = {"width": 1280, "height": 900}

_BOXES = """selectors => selectors.map(selector => {
    const element = document.querySelector(selector);
    if (element === null) return null;
    const box = element.getBoundingClientRect();
    return {top: box.top, bottom: box.bottom, left: box.left, right: box.right,
            loaded: element.tagName !== 'IMG' || (element.complete && element.naturalWidth > 0)};
})"""


def first_screen(
    html: Path, selectors: list[str], screenshot: Path, *, executable: str | None = None
) -> dict[str, dict | None]:
    """Open ``html`` at :data:`VIEWPORT`, unscrolled, save a screenshot of what a reader
    sees first (the viewport only), and return each selector's box in viewport pixels
    (``None`` where nothing matches), with ``loaded`` false for an image that did not load."""
    from playwright.sync_api import sync_playwright

    executable = executable or require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(html.resolve().as_uri(), wait_until="load")
            boxes = page.evaluate(_BOXES, selectors)
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return dict(zip(selectors, boxes, strict=True))
