"""`make screenshots`: take the README's screenshots in Chromium, in demo mode, on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from emulator.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from scripts.run import wait_until_up
from scripts.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def shoot(page: Page, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page)
    print(f"wrote docs/screenshots/{name}.png")


def previews_loaded(page: Page) -> None:
    """Wait until every preview in view has arrived from the emulator: a half-drawn grid is no screenshot."""
    page.wait_for_function("[...document.querySelectorAll('main img')]"
                           ".filter(img => img.getBoundingClientRect().top < innerHeight)"
                           ".every(img => img.complete && img.naturalWidth > 0)")


def main() -> None:
    emulator_port, portal_port = free_port(), free_port()
    portal = f"http://127.0.0.1:{portal_port}"
    work = Path(tempfile.mkdtemp(prefix="portal-screenshots-"))
    config = work / "emulator.json"
    config.write_text(json.dumps({"clients": [{"id": DEMO_CLIENT_ID, "secret": DEMO_CLIENT_SECRET,
                                               "redirect_uris": [f"{portal}/callback"]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAFLOW_", "SESSION_", "REDIS_"))}
    env.update(MEDIAFLOW_EMULATOR_URL=f"http://127.0.0.1:{emulator_port}", SESSION_FILE_DIR=str(work),
               MEDIAFLOW_REDIRECT_URI=f"{portal}/callback")
    emulator, portal_server = children = [
        subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(emulator_port), "--config", str(config)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(portal_port)],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_until_up(f"http://127.0.0.1:{emulator_port}/_emulator/stats", emulator)
        wait_until_up(f"{portal}/healthz", portal_server)
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 960, "height": 640})
            page.goto(f"{portal}/")
            shoot(page, "landing")
            page.get_by_role("link", name="Log in with Mediaflow").click()
            shoot(page, "emulator-login")
            page.get_by_label("Username").fill("demo")
            page.get_by_label("Password").fill("demo")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{portal}/")
            shoot(page, "home")
            page.goto(f"{portal}/library/folders/6")  # Photo library: a full page of previews
            previews_loaded(page)
            shoot(page, "library")
            page.goto(f"{portal}/files/108")  # Licensed stock photo: an ended licence, its warning, the formats
            previews_loaded(page)
            shoot(page, "file", full_page=True)
            page.goto(f"{portal}/callback?code=old&state=from-another-tab")
            shoot(page, "error-state")
            browser.close()
    finally:
        for child in children:
            child.terminate()
            child.wait()


if __name__ == "__main__":
    main()
