"""The media library in a real Chromium: browse, page, preview, search, download, keyboard, phone, axe-core."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect

from emulator.library import file_bytes
from tests.browser.conftest import assert_accessible, fresh_page, log_in
from tests.support import Emulator, Portal

pytestmark = pytest.mark.browser

# Ids in the emulator's default library (emulator/library.py, README's emulator section).
BRAND_ASSETS, SOCIAL_MEDIA, PHOTO_LIBRARY, ERIKAS_FILES = -3, 4, 6, 11
LOGO, DANGEROUS, EMBARGOED = 101, 102, 107
DANGEROUS_NAME = "<img src=x onerror=alert(1)>"
WEB_JPEG, THUMBNAIL_PNG = 1, 2

# What the focused element is, and whether a sighted keyboard user can see that it is.
FOCUSED = """() => {
  const e = document.activeElement, style = getComputedStyle(e);
  return {tag: e.tagName, name: e.innerText.replace(/\\s+/g, " ").trim(),
          visible: e.matches(":focus-visible") && style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2};
}"""
# Elements in <main> that stick out of its content box: what a phone user would have to scroll or miss.
STICKING_OUT = """() => {
  const main = document.querySelector("main"), box = main.getBoundingClientRect(), style = getComputedStyle(main);
  const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  return [...main.querySelectorAll("*")].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && (r.left < left - 0.5 || r.right > right + 0.5);
  }).map(e => `${e.tagName}.${e.className}: ${e.textContent.trim().slice(0, 40)}`);
}"""


@pytest.fixture(scope="module")
def logged_in_state(browser: Browser, portal: Portal) -> dict[str, Any]:
    """One real login for the module: its cookies, which each test's fresh browser profile starts with."""
    context = browser.new_context()
    log_in(context.new_page(), portal)
    state = context.storage_state()
    context.close()
    return dict(state)


@pytest.fixture
def browsing(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest,
             logged_in_state: dict[str, Any]) -> Iterator[Page]:
    """A fresh, logged-in browser profile."""
    yield from fresh_page(browser, tmp_path, request, storage_state=logged_in_state)


@pytest.fixture
def browsing_in_swedish(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest,
                        logged_in_state: dict[str, Any]) -> Iterator[Page]:
    """A fresh, logged-in browser profile set to Swedish (Sweden)."""
    yield from fresh_page(browser, tmp_path, request, storage_state=logged_in_state, locale="sv-SE")


def watch(page: Page) -> list[str]:
    """Collect console errors (CSP violations among them) and uncaught script errors as they happen."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    return problems


def watch_dialogs(page: Page) -> list[str]:
    """Record (and dismiss) every alert, confirm or prompt the page opens."""
    opened: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return opened


def previews(page: Page, emulator: Emulator) -> list[str]:
    """Wait for the previews in <main> to finish loading; each must be a drawn image from the emulator."""
    expect(page.locator("main img").first).to_be_visible()
    # Playwright's own polling: wait_for_function evaluates a string, which the portal's CSP refuses
    # once the first check fails (no 'unsafe-eval').
    for image in page.locator("main img").all():
        expect(image).to_have_js_property("complete", True)
    images: list[dict[str, Any]] = page.eval_on_selector_all(
        "main img", "all => all.map(img => ({src: img.currentSrc, width: img.naturalWidth}))")
    for image in images:
        # A blocked or broken image is also "complete", with no size: naturalWidth tells them apart.
        assert image["width"] > 0, f"{image['src']} did not load"
        assert image["src"].startswith(f"{emulator.url}/_emulator/preview/"), image["src"]
    return [image["src"] for image in images]


def grid_names(page: Page) -> list[str]:
    return page.locator("ul.grid .name").all_inner_texts()


def grid_files(page: Page) -> list[str]:
    return [str(href) for href in page.eval_on_selector_all("ul.grid a", "all => all.map(a => a.pathname)")]


def toggle_by_click(page: Page, folder: str) -> None:
    """Click the triangle that opens or closes a folder's subfolders."""
    page.locator("nav.tree summary", has_text=f"Subfolders of {folder}").click()


def branch(page: Page, folder: str) -> Any:
    """The <details> that holds a folder's subfolders."""
    return page.locator(f"nav.tree li:has(> a:text-is({folder!r})) > details")


def tab_to(page: Page, tag: str, name: str, limit: int = 60) -> None:
    """Press Tab until the element of this tag and name has the focus, and check that the focus shows."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["tag"] == tag and focused["name"] == name:
            assert focused["visible"], f"the focus on {tag} {name!r} cannot be seen"
            return
    pytest.fail(f"{tag} {name!r} cannot be reached with Tab from {page.url}")


def download_bytes(page: Page, submit: Any) -> tuple[str, bytes]:
    """Run submit() and return the name and bytes of the download it starts."""
    with page.expect_download() as started:
        submit()
    download = started.value
    assert download.failure() is None, download.failure()
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_browse_a_folder_page_through_it_open_a_file_and_download_it(page: Page, portal: Portal,
                                                                     emulator: Emulator) -> None:
    problems = watch(page)
    log_in(page, portal)
    page.get_by_role("link", name="Browse the library").click()
    expect(page).to_have_title("Library · Mediaflow Portal")
    tree = page.get_by_role("navigation", name="Folders")
    expect(tree.get_by_role("link", name="Brand assets")).to_be_hidden()

    toggle_by_click(page, "Marketing")
    expect(branch(page, "Marketing")).to_have_attribute("open", "")
    tree.get_by_role("link", name="Brand assets").click()
    page.wait_for_url(f"{portal.url}/library/folders/{BRAND_ASSETS}")
    assert page.get_by_role("heading", level=1).inner_text() == "Brand assets"
    expect(tree.get_by_role("link", name="Brand assets")).to_have_attribute("aria-current", "page")
    assert sorted(grid_names(page)) == ["Brand guide 2024", "Logo on white"]
    assert len(previews(page, emulator)) == 2  # CSP's img-src lets the emulator's previews in

    tree.get_by_role("link", name="Photo library").click()
    page.wait_for_url(f"{portal.url}/library/folders/{PHOTO_LIBRARY}")
    expect(page.locator("ul.grid > li")).to_have_count(24)
    first_page = grid_files(page)
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Next page").click()
    page.wait_for_url(f"{portal.url}/library/folders/{PHOTO_LIBRARY}?page=2&sort=filename&order=asc")
    assert "Page 2" in page.get_by_role("navigation", name="Pages").inner_text()
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    second_page = grid_files(page)
    assert len(second_page) == 2
    assert sorted(first_page + second_page) == sorted(f"/files/{n}" for n in range(201, 227))  # each photo once
    assert len(previews(page, emulator)) == 2

    page.get_by_role("link", name="Djurgården 26").click()
    page.wait_for_url(f"{portal.url}/files/226")
    assert page.title() == "Djurgården 26 · Mediaflow Portal"
    assert previews(page, emulator) == [f"{emulator.url}/_emulator/preview/226/medium.svg"]
    name, body = download_bytes(page, page.get_by_role("link", name="Download Thumbnail PNG 300").click)
    assert name == "stockholm-26.png"
    assert body == file_bytes(226, THUMBNAIL_PNG)
    assert page.url == f"{portal.url}/files/226"  # the download left the page where it was
    assert problems == []


def test_search_from_the_box_asks_mediaflow_in_the_browsers_language(browsing_in_swedish: Page, portal: Portal,
                                                                      emulator: Emulator) -> None:
    page = browsing_in_swedish
    problems = watch(page)
    page.goto(f"{portal.url}/")
    page.get_by_role("searchbox", name="Search the library").press_sequentially("öresund")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/search?q=%C3%B6resund")
    assert page.get_by_role("heading", level=2).inner_text() == "1 file found for “öresund”"
    assert grid_names(page) == ["Öresundsbron i dimma"]
    assert len(previews(page, emulator)) == 1
    assert page.get_by_role("searchbox", name="Search the library").input_value() == "öresund"
    assert emulator.stats()["last_search_lang"] == "sv-SE"
    assert problems == []


def test_keyboard_alone_browses_the_tree_opens_a_file_and_downloads_it(browsing: Page, portal: Portal) -> None:
    page = browsing
    problems = watch(page)
    page.goto(f"{portal.url}/")
    tab_to(page, "A", "Browse the library")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/library")

    marketing = branch(page, "Marketing")
    tab_to(page, "SUMMARY", "Subfolders of Marketing")
    page.keyboard.press("Enter")
    expect(marketing).to_have_attribute("open", "")
    page.keyboard.press("Space")
    expect(marketing).not_to_have_attribute("open", "")
    page.keyboard.press("Space")
    expect(marketing).to_have_attribute("open", "")
    assert page.evaluate(FOCUSED)["name"] == "Subfolders of Marketing"  # the focus stays on the toggle
    tab_to(page, "A", "Brand assets", limit=1)  # the first subfolder comes next
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/library/folders/{BRAND_ASSETS}")

    tab_to(page, "A", "Logo on white")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/files/{LOGO}")
    tab_to(page, "A", "Download Original")
    tab_to(page, "A", "Download Web JPEG 1200", limit=1)
    name, body = download_bytes(page, lambda: page.keyboard.press("Enter"))
    assert name == "logo-white.jpg"
    assert body == file_bytes(LOGO, WEB_JPEG)
    assert problems == []


@pytest.mark.parametrize("path", ["/library", f"/library/folders/{PHOTO_LIBRARY}", f"/files/{DANGEROUS}"],
                         ids=["library", "folder", "file"])
def test_library_pages_work_at_phone_width(browsing: Page, portal: Portal, emulator: Emulator, path: str) -> None:
    page = browsing
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{portal.url}{path}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "the page scrolls sideways"
    assert page.evaluate(STICKING_OUT) == []

    def on_screen(locator: Any) -> None:
        expect(locator).to_be_visible()
        box = locator.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box

    if path == "/library":
        toggle_by_click(page, "Marketing")
        on_screen(page.get_by_role("navigation", name="Folders").get_by_role("link", name="Campaigns"))
        assert page.evaluate(STICKING_OUT) == []
    elif path.startswith("/library/folders/"):
        on_screen(page.get_by_role("navigation", name="Folders").get_by_role("link", name="Photo library"))
        cards = page.locator("ul.grid > li")
        expect(cards).to_have_count(24)
        first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
        assert first and second and first["y"] == second["y"], "the grid has one column"
        assert page.locator("ul.grid img").first.bounding_box()["width"] >= 120  # type: ignore[index]
        on_screen(page.get_by_role("link", name="Next page"))
    else:
        previews(page, emulator)
        on_screen(page.get_by_role("img", name="<b>not bold</b>"))  # Mediaflow's alt text, as text
        for each in page.locator("ul.downloads a").all():
            on_screen(each)


@pytest.mark.parametrize(
    ("path", "status", "title"),
    [("/library", 200, "Library"),
     (f"/library/folders/{SOCIAL_MEDIA}", 200, "Social media"),
     (f"/files/{DANGEROUS}", 200, DANGEROUS_NAME),
     (f"/files/{EMBARGOED}", 200, "Product shot (embargoed)"),
     ("/search?q=stockholm", 200, "Search: stockholm"),
     ("/library/folders/424242", 404, "Not found"),
     (f"/library/folders/{ERIKAS_FILES}", 403, "No access")],
    ids=["library", "folder", "dangerous-name", "no-download", "search", "404-folder", "403-folder"],
)
def test_library_pages_have_no_serious_accessibility_issue(browsing: Page, portal: Portal, path: str, status: int,
                                                            title: str) -> None:
    page = browsing
    response = page.goto(f"{portal.url}{path}")
    assert response is not None and response.status == status
    assert page.title() == f"{title} · Mediaflow Portal"
    if status != 200:
        expect(page.locator("main a.button")).to_have_text("Back to the library")
    assert_accessible(page)


@pytest.mark.parametrize("path", [f"/library/folders/{SOCIAL_MEDIA}", f"/files/{DANGEROUS}", "/search?q=onerror"],
                         ids=["folder", "file", "search"])
def test_a_file_name_that_is_html_is_shown_as_text_and_runs_nothing(browsing: Page, portal: Portal,
                                                                    emulator: Emulator, path: str) -> None:
    page = browsing
    dialogs, problems = watch_dialogs(page), watch(page)
    page.goto(f"{portal.url}{path}")
    assert page.locator("img:not([src^='http'])").count() == 0  # no <img src=x> made it into the page
    previews(page, emulator)  # every image on the page has loaded: an onerror would have fired by now
    if path.startswith("/files/"):
        assert page.get_by_role("heading", level=1).inner_text() == DANGEROUS_NAME
        assert page.locator("dd", has_text="<script>alert('description')</script>").is_visible()
    else:
        expect(page.get_by_role("link", name=DANGEROUS_NAME)).to_be_visible()
    assert dialogs == []
    assert problems == []


def test_a_file_that_may_not_be_downloaded_says_why_and_offers_no_download(browsing: Page, portal: Portal) -> None:
    page = browsing
    page.goto(f"{portal.url}/files/{EMBARGOED}")
    expect(page.locator("p.warning")).to_have_text(
        "You may not download this file: Embargoed until the product launch.")
    expect(page.get_by_role("link", name="Download")).to_have_count(0)
