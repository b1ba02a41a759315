"""A real browser: headless Debian Chromium opens the studio, presses Generate, gets players, rolls and
links, adds a part to a variant, undoes it, and sees the roll's playhead move while the audio plays.

The screenshot goes to the pytest temp folder, and also to docs/screenshot.png when SAVE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import BROWSER_TEST

ROOT = Path(__file__).resolve().parents[2]

pytestmark = BROWSER_TEST


def _legend(driver, i: int) -> str:
    return driver.execute_script(f"const e = document.querySelector('#roll-{i} .mb-legend'); return e ? e.innerText : ''")


def _head_x(driver, i: int) -> float:
    return driver.execute_script(
        f"const s = document.querySelector('#roll-{i} .mb-stage').getBoundingClientRect();"
        f"const h = document.querySelector('#roll-{i} .mb-head').getBoundingClientRect();"
        "return h.left + h.width / 2 - s.left;")


def test_generate_edit_undo_and_play_in_a_real_browser(app_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.page.test_roll_browser import FIND_MEDIA

    url = app_server[0]
    browser.get(url)
    wait = WebDriverWait(browser, 180)
    button = wait.until(EC.element_to_be_clickable((By.ID, "generate-btn")))
    # first view: a short how-to, no empty result boxes
    assert "How it works" in browser.find_element(By.ID, "summary").text
    for hidden in ("seed-used", "zip", "audio-1", "roll-1", "undo-btn"):
        assert not any(e.is_displayed() for e in browser.find_elements(By.ID, hidden)), hidden
    button.click()
    # two variants by default: two players, two live rolls and MIDI download links appear
    wait.until(lambda d: d.execute_script(FIND_MEDIA, "audio-1") and d.execute_script(FIND_MEDIA, "audio-2"))
    def kinds(d) -> set:  # the variants stream in first, the zip comes with the whole result
        links = [(a.get_attribute("href") or "").split("?")[0] for a in
                 d.find_elements(By.CSS_SELECTOR, "#midi-1 a, #midi-2 a, #zip a")]
        return {h.rsplit(".", 1)[-1] for h in links if h.endswith((".mid", ".zip"))}

    hrefs = wait.until(lambda d: kinds(d) if "zip" in kinds(d) else None)
    assert {"mid", "zip"} <= hrefs, hrefs
    legend = wait.until(lambda d: _legend(d, 1) or None)
    assert "piano" in legend and "strings" not in legend, legend
    seed_used = browser.find_element(By.CSS_SELECTOR, "#seed-used textarea, #seed-used input").get_attribute("value")
    assert seed_used.isdigit()
    assert not any(e.is_displayed() for e in browser.find_elements(By.ID, "audio-3"))  # unused slots stay hidden
    shot = tmp_path / "studio.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # add a part (the edit panel's part: strings) to variant 1, then undo it
    browser.find_element(By.ID, "add-part-1").click()
    wait.until(lambda d: "variant 1: strings part added" in d.find_element(By.ID, "summary").text)
    wait.until(lambda d: "strings" in _legend(d, 1))
    undo = wait.until(EC.element_to_be_clickable((By.ID, "undo-btn")))
    undo.click()
    wait.until(lambda d: "strings part added" not in d.find_element(By.ID, "summary").text)
    wait.until(lambda d: "strings" not in _legend(d, 1))
    wait.until(EC.element_to_be_clickable((By.ID, "redo-btn")))

    # play variant 1: the roll's playhead follows the audio
    media = wait.until(lambda d: d.execute_script(FIND_MEDIA, "audio-1"))
    wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", media))
    x0 = _head_x(browser, 1)
    err = browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                       "arguments[0].play().then(() => done(null), e => done(String(e)));", media)
    assert err is None, err
    time.sleep(1.5)
    assert browser.execute_script("return arguments[0].currentTime", media) > 0.5
    assert _head_x(browser, 1) > x0 + 5
    browser.execute_script("arguments[0].pause()", media)
    if os.environ.get("SAVE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ROOT / "docs" / "screenshot.png"))
    print(f"screenshot: {shot}")
