"""A real browser: headless Debian Chromium opens the studio, presses Generate, and gets players and links.

The screenshot goes to the pytest temp folder, and also to docs/screenshot.png when SAVE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian chromium and chromium-driver are not installed"),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1800", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_generate_in_a_real_browser(app_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url = app_server[0]
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    button = wait.until(EC.element_to_be_clickable((By.ID, "generate-btn")))
    seed = browser.find_element(By.CSS_SELECTOR, "textarea, input[type='text']")  # first text box: the seed
    assert seed is not None
    button.click()
    # two variants by default: two audio players and MIDI download links appear
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audio-1 audio, #audio-1 [data-testid='waveform-x']"))
               or d.find_elements(By.CSS_SELECTOR, "#audio-1 audio"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-2 audio"))
    links = wait.until(lambda d: [a for a in d.find_elements(By.CSS_SELECTOR, "#midi-1 a, #midi-2 a, #zip a")
                                  if (a.get_attribute("href") or "").split("?")[0].endswith((".mid", ".zip"))] or None)
    hrefs = {a.get_attribute("href").split("?")[0].rsplit(".", 1)[-1] for a in links}
    assert {"mid", "zip"} <= hrefs, hrefs
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#roll-1 img"))
    seed_used = browser.find_element(By.CSS_SELECTOR, "#seed-used textarea, #seed-used input").get_attribute("value")
    assert seed_used.isdigit()
    assert not browser.find_elements(By.CSS_SELECTOR, "#audio-3 audio")  # unused slots stay hidden
    shot = tmp_path / "studio.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "screenshot.png")
    print(f"screenshot: {shot}")
