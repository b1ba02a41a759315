"""The live piano roll in a real browser: headless Debian Chromium opens a small page with one roll and
the gr.Audio it follows (a real MP3 rendered by FluidSynth), plays the audio, and checks that the roll
draws notes, that its playhead moves while the audio plays, that a click seeks, that a drag selects
bars (reported to Python through the `select` event) and that a new value replaces the roll."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import gradio as gr
import pytest

from tests.conftest import BROWSER_TEST
from tests.render.conftest import make_small_score

pytestmark = BROWSER_TEST

# The media element of a gr.Audio block, found independently of roll.js: Gradio 6 plays through
# WaveSurfer, which keeps its <audio> in an open shadow root inside the block.
FIND_MEDIA = """
const block = document.getElementById(arguments[0]);
if (!block) return null;
for (const e of block.querySelectorAll('*')) {
  const m = e.shadowRoot && e.shadowRoot.querySelector('audio');
  if (m) return m;
}
return Array.from(block.querySelectorAll('audio')).find(a => a.currentSrc) || null;
"""

# Pixels of the roll's canvas that are clearly coloured (notes), and those that are blue-ish (piano,
# #1f77b4) and green-ish (bass, #2ca02c).
CANVAS_PIXELS = """
const c = document.querySelector('#live-roll canvas');
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let coloured = 0, blue = 0, green = 0;
for (let i = 0; i < px.length; i += 4) {
  const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
  if (Math.max(r, g, b) - Math.min(r, g, b) < 50) continue;
  coloured++;
  if (b > r + 60 && b > g + 10) blue++;
  if (g > r + 40 && g > b + 40) green++;
}
return [coloured, blue, green, c.width, c.height];
"""


def long_song(bars: int = 250):
    """A 250-bar song: a piano note on every beat, so that the roll is far wider than its box."""
    import numpy as np

    from tokenizer import Score, make_notes
    from tokenizer import vocab as V

    onsets = np.arange(bars * 4) * V.STEPS_PER_QUARTER
    notes = make_notes(onset=onsets, duration=4, velocity_level=5, group=0, pitch=60 + onsets // V.STEPS_PER_BAR % 12)
    return Score(notes, bpm=120, length=bars * V.STEPS_PER_BAR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def roll_page(tmp_path_factory):
    """(url, audio seconds, roll seconds): a page with one roll following one gr.Audio, served in-process."""
    from page.roll import roll_html
    from render import render_mp3
    from render.audio import RenderError
    from render.roll import roll_data
    from tests.render.test_roll import waltz

    tmp = tmp_path_factory.mktemp("roll-page")
    old_cache = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")  # this page's files stay in the test's folder
    score = make_small_score(bpm=90)  # 2 bars, piano + bass + drums, about 5.3 s
    try:
        mp3 = render_mp3(score, tmp / "small.mp3")
    except RenderError as e:
        pytest.skip(str(e))
    data = roll_data(score, mp3.seconds)

    with gr.Blocks(analytics_enabled=False) as demo:
        roll = roll_html("live-roll", "audio-1", value=data)
        gr.Audio(value=str(mp3.path), type="filepath", interactive=False, elem_id="audio-1")
        bars = gr.Textbox(label="bars", elem_id="bars")
        swap = gr.Button("swap", elem_id="swap")

        def on_select(evt: gr.SelectData):  # gr at module level: the annotation is resolved by name
            return "" if evt.index is None else f"{evt.index[0]}-{evt.index[1]}"

        roll.select(on_select, None, bars)
        swap.click(lambda: roll_data(waltz()), None, roll)
        gr.Button("long", elem_id="long").click(lambda: roll_data(long_song()), None, roll)
        # the preview of an edit of a 40-bar song: the MP3 plays from bar 30 (58 s in)
        gr.Button("window", elem_id="window").click(
            lambda: roll_data(long_song(40), mp3.seconds, audio_start=58.0), None, roll)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}/", mp3.seconds, data["seconds"]
    finally:
        demo.close()
        if old_cache is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_cache


def _head_x(driver) -> float:
    """The playhead's x inside the roll, in CSS pixels."""
    return driver.execute_script(
        "const s = document.querySelector('#live-roll .mb-stage').getBoundingClientRect();"
        "const h = document.querySelector('#live-roll .mb-head').getBoundingClientRect();"
        "return h.left + h.width / 2 - s.left;")


def _selected(driver) -> str | None:
    """The bars the roll shows as selected ("first-last", "" for none)."""
    return driver.execute_script("return document.querySelector('#live-roll .mb-roll').parentElement"
                                 ".dataset.selectedBars")


def test_roll_plays_seeks_and_selects_bars(roll_page, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, audio_seconds, roll_seconds = roll_page
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    # the roll draws: legend names the parts, canvas has coloured notes (piano blue, bass green)
    legend = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text or None)
    assert "piano (24)" in legend and "bass (8)" in legend and "drums (16)" in legend, legend
    coloured, blue, green, cw, ch = wait.until(lambda d: (p := d.execute_script(CANVAS_PIXELS))[0] > 500 and p)
    assert blue > 200 and green > 50, (coloured, blue, green, cw, ch)
    assert "Bass Drum 1" not in legend  # drum names are drawn in the lane, not in the legend

    # the media element loaded the MP3, and the roll found it: the playhead sits at the start
    media = wait.until(lambda d: d.execute_script(FIND_MEDIA, "audio-1"))
    wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", media))
    duration = browser.execute_script("return arguments[0].duration", media)
    assert duration == pytest.approx(audio_seconds, abs=0.15)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#live-roll .mb-head").is_displayed())
    width = browser.execute_script("return document.querySelector('#live-roll .mb-stage').clientWidth")
    x0 = _head_x(browser)
    assert x0 == pytest.approx(0, abs=3)

    # play: the playhead moves with the audio
    err = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "arguments[0].play().then(() => done(null), e => done(String(e)));", media)
    assert err is None, err
    time.sleep(1.5)
    t = browser.execute_script("return arguments[0].currentTime", media)
    x1 = _head_x(browser)
    assert t > 0.5, f"the audio did not play (currentTime {t})"
    assert x1 > x0 + 0.5 / roll_seconds * width, (x0, x1)  # moved by at least half a second's worth
    assert x1 == pytest.approx(t / roll_seconds * width, abs=0.25 / roll_seconds * width + 3)
    browser.execute_script("arguments[0].pause()", media)
    time.sleep(0.3)
    frames = browser.execute_script("return window.MidiBangersRoll.stats.frames")
    time.sleep(1.0)
    assert browser.execute_script("return window.MidiBangersRoll.stats.frames") == frames  # paused: the loop rests
    assert frames > 20  # it ran while the audio played

    # a click at half the width seeks to half the piece
    stage = browser.find_element(By.CSS_SELECTOR, "#live-roll .mb-stage")
    ActionChains(browser).move_to_element(stage).click().perform()  # the element's centre
    t = wait.until(lambda d: (v := d.execute_script("return arguments[0].currentTime", media)) > 1 and v)
    assert t == pytest.approx(roll_seconds / 2, abs=0.1)
    wait.until(lambda d: abs(_head_x(d) - width / 2) < 3)

    # a drag from 10 % to 60 % of the width selects bars 1-2, and Python hears of it
    left = -stage.size["width"] / 2
    ActionChains(browser).move_to_element_with_offset(stage, int(left + 0.1 * width), 0).click_and_hold() \
        .move_by_offset(int(0.25 * width), 0).move_by_offset(int(0.25 * width), 0).release().perform()
    assert _selected(browser) == "1-2"
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#bars textarea, #bars input").get_attribute("value")
               == "1-2")

    # a new value replaces the roll (and clears the selection); still one roll on the shared loop
    browser.find_element(By.ID, "swap").click()
    wait.until(lambda d: "3/4" in d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text)
    assert "piano (2)" in browser.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text
    assert _selected(browser) == ""
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#bars textarea, #bars input").get_attribute("value") == "")
    assert browser.execute_script("return window.MidiBangersRoll.rolls.size") == 1
    if os.environ.get("SAVE_SCREENSHOT") == "1":
        browser.save_screenshot(str(Path(tempfile.gettempdir()) / "roll-browser.png"))


ROLL = "const r = document.querySelector('#live-roll .mb-roll').parentElement.midiBangersRoll;"


def test_a_long_song_scrolls_sideways_and_its_bars_can_be_selected(roll_page, browser):
    """A 250-bar roll gets at least 20 px a bar and scrolls inside its box; a drag over bars 120-123, scrolled
    into view, selects exactly those bars."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = roll_page
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text)
    browser.find_element(By.ID, "long").click()
    wait.until(lambda d: "250 bars" in d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text)
    stage_w, box_w, scroll_w = browser.execute_script(
        ROLL + "return [r.stage.clientWidth, r.scroll.clientWidth, r.scroll.scrollWidth];")
    assert stage_w >= 250 * 20 > box_w and scroll_w >= stage_w, (stage_w, box_w, scroll_w)
    # scroll bar 120 into view, then drag from the middle of bar 120 to the middle of bar 123
    browser.execute_script(ROLL + "r.scroll.scrollLeft = r.data.bars[119] / r.data.seconds * r.width - 40;")
    box = browser.find_element(By.CSS_SELECTOR, "#live-roll .mb-scroll")
    centre = browser.execute_script("const b = arguments[0].getBoundingClientRect(); return b.left + b.width / 2;",
                                    box)
    x120, x123 = browser.execute_script(
        ROLL + "const s = r.stage.getBoundingClientRect(), d = r.data;"
        "const x = (b) => s.left + (d.bars[b - 1] + d.bar_seconds / 2) / d.seconds * r.width;"
        "return [x(120), x(123)];")
    assert 0 < x120 - (centre - box_w / 2) < box_w and x123 < centre + box_w / 2  # both in view
    ActionChains(browser).move_to_element_with_offset(box, int(x120 - centre), 10).click_and_hold() \
        .move_by_offset(int((x123 - x120) / 2), 0).move_by_offset(int((x123 - x120) / 2), 0).release().perform()
    assert _selected(browser) == "120-123"


def test_a_preview_of_the_bars_around_an_edit_moves_the_playhead_from_its_first_bar(roll_page, browser):
    """An edit of a long song previews bars 30 on: with the MP3 at its start the playhead stands at bar 30, it
    follows the MP3 from there, and a click on bar 31 seeks the MP3 to that bar's time within it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, _ = roll_page
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text)
    media = wait.until(lambda d: d.execute_script(FIND_MEDIA, "audio-1"))
    wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0", media))
    browser.find_element(By.ID, "window").click()
    wait.until(lambda d: "40 bars" in d.find_element(By.CSS_SELECTOR, "#live-roll .mb-legend").text)
    width, seconds = browser.execute_script(ROLL + "return [r.width, r.data.seconds];")
    assert seconds == pytest.approx(80.0)  # 40 bars of 2 s
    browser.execute_script(ROLL + "r.scroll.scrollLeft = 58 / 80 * r.width - 40; arguments[0].currentTime = 0;", media)
    wait.until(lambda d: abs(_head_x(d) - 58 / 80 * width) < 3)
    browser.execute_script("arguments[0].currentTime = 2;", media)
    wait.until(lambda d: abs(_head_x(d) - 60 / 80 * width) < 3)
    box = browser.find_element(By.CSS_SELECTOR, "#live-roll .mb-scroll")
    x = browser.execute_script(ROLL + "const s = r.stage.getBoundingClientRect(), b = arguments[0].getBoundingClientRect();"
                               "return s.left + 61 / 80 * r.width - (b.left + b.width / 2);", box)
    ActionChains(browser).move_to_element_with_offset(box, int(x), 10).click().perform()
    t = wait.until(lambda d: (v := d.execute_script("return arguments[0].currentTime", media)) and abs(v - 3.0) < 0.2 and v)
    assert t == pytest.approx(3.0, abs=0.2)
