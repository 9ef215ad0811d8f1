"""The web page (web-client/) in a real headless Chromium, against the server running in-process.

Debian's chromium (/usr/bin/chromium, apt package `chromium`) is driven by Playwright; Playwright's
own browser downloads are never used. Without chromium these tests are skipped, except under CI
(CI=true), where they fail. The server runs the tiny random model, so continuations are fast.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from server_helpers import running_server

from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.cleanup import clean_opening

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without these Chromium keeps trying to reach Google's services.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPENING = "这是一颗魔法，林黛玉竟如此精妙。\n三体舰队众人惊。"  # characters of the tiny model's vocabulary
DEFAULTS = SamplerSettings(temperature=0.9)  # not the built-in 1.0: the page must show the server's defaults
DEFAULT_CHARS = 120
TOKEN = "s3cret-token"


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) for the web page tests"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing_browser()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model, defaults=DEFAULTS, default_chars=DEFAULT_CHARS) as serving:
        yield serving


@pytest.fixture(scope="module")
def token_server(tiny_model, one_torch_thread):
    with running_server(tiny_model, token=TOKEN) as serving:
        yield serving


class Page:
    """A browser tab on the web page, with what the tests look at."""

    def __init__(self, page, server):
        self.page, self.server = page, server
        self.requests = []  # the POST /api/continue requests, in order
        self.failed = []  # requests that did not complete (aborted ones included)
        self.errors = []  # uncaught JavaScript errors
        page.on("request", lambda r: self.requests.append(r) if r.url.endswith("/api/continue") else None)
        page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, connected: bool = True):
        self.page.goto(self.server.url)
        if connected:
            self.page.wait_for_selector("#connection[data-state=ok]")
        return self

    @property
    def text(self) -> str:
        return self.page.input_value("#editor")

    @property
    def status(self) -> str:
        return self.page.inner_text("#status")

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].post_data)

    def open_setting(self, name: str) -> None:
        """Show the settings panel, and its Advanced part if the field is there."""
        if not self.page.is_visible("#settings-form"):
            self.page.click("#settings-toggle")
        if not self.page.is_visible(f"#setting-{name}"):
            self.page.click("#advanced summary")

    def setting(self, name: str, value) -> None:
        self.open_setting(name)
        if isinstance(value, bool):
            self.page.set_checked(f"#setting-{name}", value)
        else:
            self.page.fill(f"#setting-{name}", str(value))
            self.page.press(f"#setting-{name}", "Tab")  # a change event, as when the writer moves on

    def write(self, text: str) -> None:
        self.page.fill("#editor", text)

    def run(self, button: str = "#continue", key: str | None = None) -> None:
        """Continue or rewrite (by button or shortcut) and wait until the request has ended."""
        count = len(self.requests)
        if key:
            self.page.keyboard.press(key)
        else:
            self.page.click(button)
        self.page.wait_for_function("document.getElementById('stop').disabled")
        assert len(self.requests) == count + 1, "one request per press"


@pytest.fixture
def tab(browser, server):
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = Page(context.new_page(), server)
    yield page
    context.close()
    assert page.errors == [], "the page threw"


def test_continue_streams_into_the_editor(tab, server):
    tab.open()
    tab.page.click("#editor")
    tab.page.keyboard.type(OPENING)
    tab.setting("length", 1500)
    # every length the editor goes through while the text streams in
    tab.page.evaluate("""() => {
        window.seen = new Set();
        setInterval(() => window.seen.add(document.getElementById('editor').value.length), 2);
    }""")
    tab.run()
    text = tab.text
    assert text.startswith(OPENING) and len(text) == len(OPENING) + 1500
    seen = tab.page.evaluate("[...window.seen]")
    between = [n for n in seen if len(OPENING) < n < len(text)]
    assert len(between) >= 3, f"the text should appear piece by piece, saw lengths {sorted(seen)}"
    settings = {**DEFAULTS.as_dict(), "length": 1500, "raw": False}  # the form shows, and sends, the defaults
    assert tab.body() == {"text": OPENING, "settings": settings, "variants": 1, "stream": True}
    assert "Wrote 1500 characters" in tab.status
    assert tab.page.inner_text("#char-count") == f"{len(text)} characters"
    assert tab.page.is_editable("#editor")  # read-only only while the text streams in


def test_alt_e_replaces_only_what_was_written(tab):
    tab.open().write(OPENING)
    tab.setting("length", 60)
    tab.run(key="Alt+KeyQ")
    first = tab.text
    assert first.startswith(OPENING) and len(first) == len(OPENING) + 60
    tab.run(key="Alt+KeyE")
    second = tab.text
    assert second.startswith(OPENING) and len(second) == len(OPENING) + 60
    assert second != first  # a fresh sample (no seed set)
    assert tab.body()["text"] == OPENING  # the text before the written part, so nothing is re-read
    status = tab.page.locator("#status")
    assert status.get_attribute("data-reused-tokens") == status.get_attribute("data-prompt-tokens")
    assert status.get_attribute("data-kind") == "ok"


def test_rewrite_keeps_an_edited_opening(tab):
    tab.open().write(OPENING)
    tab.setting("length", 50)
    tab.run()
    written = tab.text[len(OPENING):]
    tab.page.click("#editor")
    tab.page.keyboard.press("Control+Home")
    tab.page.keyboard.type("林黛玉")  # the writer edits the opening after the continue
    assert tab.text == "林黛玉" + OPENING + written
    tab.run("#rewrite")
    assert tab.body()["text"] == "林黛玉" + OPENING
    assert tab.text.startswith("林黛玉" + OPENING) and len(tab.text) == len("林黛玉" + OPENING) + 50
    assert tab.text != "林黛玉" + OPENING + written


def test_rewrite_after_editing_the_written_part_keeps_everything(tab):
    tab.open().write(OPENING)
    tab.setting("length", 50)
    tab.run()
    edited = tab.text[:-10] + "众人惊" + tab.text[-10:]  # an edit inside what was written
    tab.write(edited)
    tab.run("#rewrite")
    assert tab.body()["text"] == edited
    assert tab.text.startswith(edited) and len(tab.text) == len(edited) + 50
    assert "it is all kept" in tab.status
    assert tab.page.get_attribute("#status", "data-kind") == "warn"
    fresh = tab.text
    tab.run("#rewrite")  # now the fresh continuation is the written part: only it is replaced
    assert tab.body()["text"] == edited
    assert tab.text.startswith(edited) and len(tab.text) == len(edited) + 50 and tab.text != fresh


def test_rewrite_before_any_continue_says_so(tab):
    tab.open().write(OPENING)
    tab.page.click("#rewrite")
    assert "press Continue first" in tab.status
    assert tab.requests == [] and tab.text == OPENING


def test_stop_aborts_the_request_and_the_server_stops_writing(tab, server):
    tab.open().write(OPENING)
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 100}")
    assert server.worker.active_rows == 1  # still writing its 10,000 characters
    tab.page.click("#stop")
    tab.page.wait_for_function("document.getElementById('stop').disabled")
    stopped = tab.text
    assert len(OPENING) + 100 < len(stopped) < len(OPENING) + 10000
    assert tab.status == "Stopped"
    time.sleep(0.6)
    assert tab.text == stopped, "the text must stop growing"
    assert any(url.endswith("/api/continue") and "ABORTED" in (failure or "") for url, failure in tab.failed)
    deadline = time.monotonic() + 10
    while server.worker.active_rows or server.worker.waiting:
        assert time.monotonic() < deadline, "the server kept writing for a client that left"
        time.sleep(0.05)
    tab.setting("length", 30)
    tab.run(key="Alt+KeyE")  # what was written before the stop is the part a rewrite replaces
    assert tab.body()["text"] == OPENING
    assert tab.text.startswith(OPENING) and len(tab.text) == len(OPENING) + 30


def test_escape_stops_too(tab):
    tab.open().write(OPENING)
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 20}")
    tab.page.keyboard.press("Escape")
    tab.page.wait_for_function("document.getElementById('stop').disabled")
    assert tab.status == "Stopped" and len(tab.text) < len(OPENING) + 10000


def test_reload_restores_the_text_and_the_settings(tab):
    tab.open().write(OPENING + "众人")
    tab.setting("temperature", 0.4)
    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")
    assert tab.text == OPENING + "众人"
    assert tab.page.input_value("#setting-temperature") == "0.4"
    assert tab.page.inner_text("#char-count") == f"{len(OPENING) + 2} characters"
    tab.page.click("#settings-reset")
    assert tab.page.input_value("#setting-temperature") == "0.9"  # the server's default again


def test_settings_show_the_server_defaults_and_shape_the_request(tab):
    tab.open().write(OPENING)
    assert tab.page.input_value("#setting-length") == str(DEFAULT_CHARS)
    assert tab.page.input_value("#setting-temperature") == "0.9"
    assert tab.page.input_value("#setting-top_p") == "0.7"
    assert tab.page.input_value("#setting-seed") == ""
    chosen = {"length": 33, "temperature": 0.3, "top_p": 0.5, "top_p_newline": 0.6, "allow_p": 0.02, "top_k": 7,
              "presence_penalty": 0.1, "frequency_penalty": 0.2, "penalty_decay": 0.9, "seed": 1234}
    for name, value in chosen.items():
        tab.setting(name, value)
    tab.setting("raw", True)
    tab.run()
    assert tab.body() == {"text": OPENING, "settings": {**chosen, "raw": True}, "variants": 1, "stream": True}
    first = tab.text
    assert len(first) == len(OPENING) + 33 and "seed 1234" in tab.status
    tab.run("#rewrite")
    assert tab.text == first  # the same seed and settings write the same continuation


def test_variants_side_by_side_and_a_click_inserts_one(tab):
    tab.open().write(OPENING)
    tab.setting("length", 40)
    tab.setting("variants", 2)
    tab.run()
    assert tab.body()["variants"] == 2
    cards = tab.page.locator("#variant-cards .card")
    assert cards.count() == 2
    texts = [cards.nth(i).locator(".card-text").inner_text() for i in range(2)]
    assert all(len(text) == 40 for text in texts) and texts[0] != texts[1]
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert abs(first["y"] - second["y"]) < 1 and second["x"] > first["x"] + first["width"] - 1  # side by side
    assert tab.text == OPENING  # nothing goes into the story until one is chosen
    cards.nth(1).click()
    assert tab.text == OPENING + texts[1]
    assert tab.page.is_hidden("#variants")
    tab.run(key="Alt+KeyE")  # rewrite offers new variants in place of the inserted one
    assert tab.body()["text"] == OPENING and cards.count() == 2
    assert tab.text == OPENING + texts[1]
    fresh = cards.nth(0).locator(".card-text").inner_text()
    cards.nth(0).click()
    assert tab.text == OPENING + fresh


def test_a_setting_out_of_range_is_said_in_the_pages_words(tab):
    tab.open().write(OPENING)
    tab.setting("length", 20000)
    tab.run()
    assert tab.status == "Length must be a whole number from 1 to 10000 (it is 20000)"
    assert "'settings.length' must be between 1 and 10000, got 20000" in tab.page.get_attribute("#status", "title")
    assert tab.page.get_attribute("#status", "data-kind") == "error"
    assert tab.page.get_attribute("#setting-length", "aria-invalid") == "true"
    assert tab.text == OPENING


def test_a_token_protected_server(browser, token_server):
    context = browser.new_context(locale="en-US")
    tab = Page(context.new_page(), token_server).open(connected=False)
    try:
        tab.page.wait_for_selector("#connection[data-state=auth]")
        assert tab.status.startswith("Missing or wrong access token")
        tab.write(OPENING)
        tab.setting("token", "wrong")
        tab.run()
        assert tab.requests[-1].headers["authorization"] == "Bearer wrong"
        assert tab.status.startswith("Missing or wrong access token") and tab.text == OPENING
        tab.setting("token", TOKEN)
        tab.page.wait_for_selector("#connection[data-state=ok]")
        tab.setting("length", 20)
        tab.run()
        assert tab.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        assert len(tab.text) == len(OPENING) + 20
        assert tab.errors == []
    finally:
        context.close()


def test_download_as_text(tab, tmp_path):
    tab.open().write(OPENING)
    with tab.page.expect_download() as download:
        tab.page.click("#download")
    saved = tmp_path / "story.txt"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8") == OPENING
    assert download.value.suggested_filename.endswith(".txt")


def test_language_follows_the_browser_and_the_switch(browser, server):
    context = browser.new_context(locale="zh-CN")
    tab = Page(context.new_page(), server).open()
    try:
        assert tab.page.inner_text("#continue").startswith("续写")
        assert tab.page.inner_text("#rewrite").startswith("换个写法")
        tab.page.click("#language")
        assert tab.page.inner_text("#continue").startswith("Continue")
        tab.page.reload()
        tab.page.wait_for_selector("#connection[data-state=ok]")
        assert tab.page.inner_text("#continue").startswith("Continue")  # the choice is remembered
        assert tab.page.evaluate("document.documentElement.lang") == "en"
    finally:
        context.close()


def test_phone_sized_screen(browser, server):
    context = browser.new_context(locale="en-US", viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True)
    tab = Page(context.new_page(), server).open()
    try:
        page = tab.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, "no sideways scrolling"
        for selector in ("#continue", "#rewrite", "#stop", "#undo", "#redo", "#download", "#settings-toggle",
                         "#steering-toggle", "#stories-toggle", "#language"):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
        assert page.locator("#editor").bounding_box()["height"] > 300
        assert page.is_hidden("#settings")  # the panel waits behind its button
        page.click("#settings-toggle")
        panel = page.locator("#settings").bounding_box()
        assert page.is_visible("#setting-preset") and panel["x"] >= 0 and panel["x"] + panel["width"] <= 360
        page.click("#steering-toggle")  # one sheet at a time on a small screen
        panel = page.locator("#steering").bounding_box()
        assert page.is_visible("#steering-memory") and page.is_hidden("#settings")
        assert panel["x"] >= 0 and panel["x"] + panel["width"] <= 360
    finally:
        context.close()


def test_rewrite_rule_and_event_stream_parser(tab):
    """The pure parts (writer.js, api.js) on the edge cases the pages above do not reach."""
    tab.open()
    result = tab.page.evaluate("""async () => {
        const writer = await import('./writer.js');
        const api = await import('./api.js');
        const stream = 'event: chunk\\ndata: {"variant": 0, "text": "a\\\\nb"}\\n\\n: comment\\n\\n' +
                       'event: done\\r\\ndata: {"variants": []}\\r\\n\\r\\n';
        const parser = new api.EventStreamParser();
        const events = [];
        for (const character of stream) events.push(...parser.push(character));  // split anywhere
        return {
            none: writer.planRewrite('abc', null),
            same: writer.planRewrite('openingWRITTEN', {written: 'WRITTEN'}),
            editedBefore: writer.planRewrite('OPENINGWRITTEN', {written: 'WRITTEN'}),
            editedInside: writer.planRewrite('openingWRXTTEN', {written: 'WRITTEN'}),
            nothingWritten: writer.planRewrite('opening', {written: ''}),
            placeReplaces: writer.variantPlace('openingOLD', 'OLD'),
            placeAppends: writer.variantPlace('openingOLD!', 'OLD'),
            count: writer.countChars('林😀a'),
            events,
        };
    }""")
    assert result["none"] is None
    assert result["same"] == {"prefix": "opening", "replaces": True}
    assert result["editedBefore"] == {"prefix": "OPENING", "replaces": True}
    assert result["editedInside"] == {"prefix": "openingWRXTTEN", "replaces": False}
    assert result["nothingWritten"] == {"prefix": "opening", "replaces": True}
    assert result["placeReplaces"] == {"start": 7, "end": 10}
    assert result["placeAppends"] == {"start": 11, "end": 11}
    assert result["count"] == 3
    assert result["events"] == [{"name": "chunk", "data": '{"variant": 0, "text": "a\\nb"}'},
                                {"name": "done", "data": '{"variants": []}'}]


# -- presets, ranges, stop strings, errors in the page's language --------------------------------------------


def test_presets_in_plain_words_with_ranges_from_the_server(tab):
    from ai_writer.generation import presets

    # the ranges the page shows are the server's: a server with other ranges gets other fields
    def narrower(route):
        info = route.fetch().json()
        info["ranges"]["temperature"]["max"] = 3
        route.fulfill(json=info)

    tab.page.route("**/api/info", narrower)
    tab.open().write(OPENING)
    tab.open_setting("length")
    options = tab.page.eval_on_selector_all("#setting-preset option", "os => os.map(o => [o.value, o.textContent])")
    assert options == [[p.name, p.title["en"]] for p in presets.PRESETS] + [["", "Custom (see Advanced)"]]
    assert tab.page.input_value("#setting-preset") == ""  # the server's defaults (temperature 0.9) are no preset
    tab.page.select_option("#setting-preset", "steady")
    steady = presets.find("steady")
    assert tab.page.inner_text("#preset-description") == steady.description["en"]
    tab.setting("length", 20)
    tab.run()
    sent = tab.body()["settings"]
    assert {name: sent[name] for name in steady.settings().as_dict()} == steady.settings().as_dict()
    tab.setting("temperature", 0.85)  # a raw setting changed by hand: no preset any more
    assert tab.page.input_value("#setting-preset") == ""
    tab.page.select_option("#setting-preset", "novel")
    assert tab.page.input_value("#setting-temperature") == "1.2" and tab.page.input_value("#setting-top_p") == "0.5"
    ranges = {name: tab.page.eval_on_selector(f"#setting-{name}", "i => [i.min, i.max]")
              for name in ("length", "temperature", "top_p", "top_k", "variants", "seed")}
    assert ranges == {"length": ["1", "10000"], "temperature": ["0", "3"], "top_p": ["0", "1"], "top_k": ["0", ""],
                      "variants": ["1", "16"], "seed": ["0", "9223372036854776000"]}
    tab.page.reload()  # the preset is the story's settings
    tab.page.wait_for_selector("#connection[data-state=ok]")
    assert tab.page.input_value("#setting-preset") == "novel"


def test_stop_strings_are_sent(tab):
    tab.open().write(OPENING)
    tab.open_setting("length")
    tab.page.fill("#setting-stop", "魔法\n \\n\n\n")  # "\n" written out stands for a line break
    tab.setting("length", 200)
    tab.run()
    assert tab.body()["settings"]["stop"] == ["魔法", "\n"]
    assert "\n" not in tab.text[len(OPENING):] and "魔法" not in tab.text[len(OPENING):]
    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")
    tab.open_setting("length")
    assert tab.page.input_value("#setting-stop") == "魔法\n \\n\n\n"
    tab.page.fill("#setting-stop", "这\n是\n一\n颗\n魔")  # five: one too many
    tab.run()
    assert tab.status == "At most 4 stop strings, each at most 256 characters"
    assert tab.page.get_attribute("#setting-stop", "aria-invalid") == "true"


def test_errors_and_times_in_chinese(browser, server):
    context = browser.new_context(locale="zh-CN")
    tab = Page(context.new_page(), server).open()
    try:
        tab.write(OPENING)
        tab.setting("length", 30)
        tab.run()
        assert re.fullmatch(r"写了 30 字，用时 (\d\.\d|\d+) 秒（种子 \d+）", tab.status), tab.status
        tab.setting("temperature", 20)
        tab.run()
        assert tab.status == "温度 temperature 须在 0 到 10 之间（现在是 20）"
        assert "temperature must be a number between 0 and 10, got 20" in tab.page.get_attribute("#status", "title")
        assert tab.page.get_attribute("#setting-temperature", "aria-invalid") == "true"
        tab.page.click("#language")  # the message follows the page's language
        assert tab.status == "temperature must be between 0 and 10 (it is 20)"
        tab.page.click("#language")
        tab.setting("temperature", 1)
        tab.page.route("**/api/continue", lambda route: route.abort())
        tab.run()
        assert tab.status == "连不上服务器" and tab.text == OPENING + tab.text[len(OPENING):]
        tab.page.unroute("**/api/continue")
        tab.page.route("**/api/continue", lambda route: route.fulfill(status=429, json={"error": {
            "message": "the server is busy", "type": "rate_limit_error", "param": None}}))
        tab.run()
        assert tab.status == "服务器正忙，请稍后再试"
        assert tab.errors == []
    finally:
        context.close()


# -- memory, author's note, lorebook, banned phrases ------------------------------------------------------

MEMORY = "林黛玉是剑客。"
NOTE = "三体舰队朝着那。"
LORE_TEXT = "魔法是一颗影。"


def open_steering(tab):
    if not tab.page.is_visible("#steering-memory"):
        tab.page.click("#steering-toggle")


def add_lore(tab, keys, text):
    tab.page.click("#lore-add")
    entry = tab.page.locator(".lore-entry").last
    for key in keys:
        entry.locator(".chip-input").fill(key)
        entry.locator(".chip-input").press("Enter")
    entry.locator(".lore-text").fill(text)
    return entry


def chips(entry) -> list[str]:
    return [text.strip() for text in entry.locator(".chip > span").all_inner_texts()]


def test_memory_note_and_lore_go_with_every_request_but_never_into_the_story(tab, tmp_path):
    tab.open().write(OPENING)
    assert tab.page.is_hidden("#steering")  # the page stays calm until the writer asks
    open_steering(tab)
    tab.page.fill("#steering-memory", MEMORY)
    tab.page.fill("#steering-note", NOTE)
    entry = add_lore(tab, ["林黛玉", "黛玉", "剑"], LORE_TEXT)
    entry.locator(".chip", has_text="剑").locator(".chip-remove").click()
    assert chips(entry) == ["林黛玉", "黛玉"]
    spare = add_lore(tab, ["影"], "")
    assert "incomplete" in spare.get_attribute("class")  # no text yet: not sent
    assert tab.page.get_attribute("#steering-toggle", "data-in-use") == "true"
    tab.setting("length", 40)
    tab.run()
    body = tab.body()
    assert body["memory"] == MEMORY and body["note"] == NOTE
    assert body["lore"] == [{"keys": ["林黛玉", "黛玉"], "text": LORE_TEXT}]
    assert "ban" not in body and "loop_guard" not in body and body["text"] == OPENING
    written = tab.text
    assert written.startswith(OPENING) and len(written) == len(OPENING) + 40
    assert all(part not in written for part in (MEMORY, NOTE, LORE_TEXT))
    block = MEMORY + "\n" + LORE_TEXT + "\n" + NOTE + "\n"  # the key 林黛玉 is in the story: the entry is read
    status = tab.page.locator("#status")
    assert status.get_attribute("data-prompt-tokens") == str(len(clean_opening(OPENING)) + len(block))

    spare.locator(".lore-remove").click()
    assert tab.page.locator(".lore-entry").count() == 1
    tab.run("#rewrite")
    assert tab.body()["memory"] == MEMORY and tab.body()["lore"] == body["lore"] and tab.body()["text"] == OPENING
    assert status.get_attribute("data-reused-tokens") == status.get_attribute("data-prompt-tokens")

    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")
    open_steering(tab)
    assert tab.page.input_value("#steering-memory") == MEMORY and tab.page.input_value("#steering-note") == NOTE
    entries = tab.page.locator(".lore-entry")
    assert entries.count() == 1 and chips(entries.first) == ["林黛玉", "黛玉"]
    assert entries.first.locator(".lore-text").input_value() == LORE_TEXT
    stored = tab.page.evaluate("""() => {
        const id = JSON.parse(localStorage.getItem('ai-writer.stories')).current;
        return JSON.parse(localStorage.getItem('ai-writer.story.' + id)).text;
    }""")
    assert tab.text == stored
    with tab.page.expect_download() as download:
        tab.page.click("#download")
    saved = tmp_path / "story.txt"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8") == tab.text  # the download is the story alone


def test_banned_phrases_and_the_loop_guard_are_sent(tab):
    tab.open().write(OPENING)
    open_steering(tab)
    tab.page.click("#ban-section summary")
    tab.page.fill("#steering-ban", "魔法\n  \n众人惊 \n魔法")
    tab.page.uncheck("#steering-loop-guard")
    assert tab.page.inner_text("#ban-count") == "(2)"
    tab.setting("length", 80)
    tab.run()
    body = tab.body()
    assert body["ban"] == ["魔法", "众人惊"] and body["loop_guard"] is False
    written = tab.text[len(OPENING) - 1 :]  # a ban may begin in the story
    assert "魔法" not in written and "众人惊" not in written
    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")
    assert tab.page.input_value("#steering-ban") == "魔法\n  \n众人惊 \n魔法"
    assert not tab.page.is_checked("#steering-loop-guard")


SILLYTAVERN = {"entries": {
    "0": {"uid": 0, "key": ["林黛玉"], "keysecondary": [], "comment": "her", "content": "林黛玉是剑客。",
          "constant": False, "selective": True, "disable": False, "order": 100},
    "1": {"uid": 1, "key": ["舰队", "三体"], "keysecondary": ["魔法"], "comment": "", "content": "舰队在那。",
          "constant": False, "selective": True, "disable": False, "order": 100},
    "2": {"uid": 2, "key": ["影"], "keysecondary": [], "content": "不用这一条。", "disable": True},
    "3": {"uid": 3, "key": [], "keysecondary": [], "content": "始终在。", "constant": True, "disable": False},
}}


def test_import_a_sillytavern_world_info_file(tab):
    tab.open().write(OPENING)
    open_steering(tab)
    tab.page.set_input_files("#lore-import", files=[{"name": "world.json", "mimeType": "application/json",
                                                     "buffer": json.dumps(SILLYTAVERN).encode()}])
    entries = tab.page.locator(".lore-entry")
    entries.nth(2).wait_for()
    assert entries.count() == 3 and "Imported 3 lore entries from world.json" in tab.status
    assert chips(entries.nth(1)) == ["舰队", "三体"] and "魔法" in entries.nth(1).inner_text()
    assert entries.nth(2).locator(".lore-always").is_checked()
    tab.setting("length", 20)
    tab.run()
    assert tab.body()["lore"] == [{"keys": ["林黛玉"], "text": "林黛玉是剑客。"},
                                  {"keys": ["舰队", "三体"], "text": "舰队在那。", "secondary": ["魔法"]},
                                  {"keys": [], "text": "始终在。", "constant": True}]
    assert tab.page.get_attribute("#status", "data-kind") == "ok"
    tab.page.set_input_files("#lore-import", files=[{"name": "broken.json", "mimeType": "application/json",
                                                     "buffer": b'{"entries": [{"keys": ["a"]}]}'}])
    tab.page.wait_for_function("document.getElementById('status').dataset.kind === 'error'")
    assert "Cannot import broken.json: entry 1 has no text" in tab.status and entries.count() == 3


def test_a_memory_too_long_is_marked(tab):
    tab.open().write(OPENING)
    open_steering(tab)
    tab.page.fill("#steering-memory", "剑" * 20_001)
    tab.run()
    assert tab.status == "The memory is too long: 20001 characters, at most 20000"
    assert tab.page.get_attribute("#steering-memory", "aria-invalid") == "true" and tab.text == OPENING


def test_the_panel_in_chinese(browser, server):
    context = browser.new_context(locale="zh-CN")
    tab = Page(context.new_page(), server).open()
    try:
        tab.page.click("#steering-toggle")
        panel = tab.page.inner_text("#steering")
        assert all(word in panel for word in ("记忆", "作者注", "设定集", "禁用词", "导入 JSON 世界书"))
        tab.page.click("#lore-add")
        assert tab.page.get_attribute(".lore-entry .chip-input", "placeholder") == "关键词，回车添加"
        tab.page.click("#language")
        assert "Author's Note" in tab.page.inner_text("#steering")
        assert tab.page.get_attribute(".lore-entry .chip-input", "placeholder") == "A key, then Enter"
        assert tab.errors == []
    finally:
        context.close()


def test_lorebook_file_shapes(tab):
    """lore.js reads the shapes ai_writer/story/lorebook.py reads (the server checks them again)."""
    tab.open()
    result = tab.page.evaluate("""async () => {
        const lore = await import('./lore.js');
        const steering = await import('./steering.js');
        const read = (value) => {
            try { return lore.parseLorebook(typeof value === 'string' ? value : JSON.stringify(value)); }
            catch (error) { return 'error: ' + error.message; }
        };
        return {
            kobold: read({worldinfo: [{key: '林黛玉, 黛玉', keysecondary: '', content: '剑客。', constant: false},
                                      {key: '影', content: '不用。', widisabled: true}]}),
            card: read({data: {character_book: {entries: [
                {keys: ['舰队'], secondary_keys: ['三体'], content: '舰队在那。', enabled: true},
                {keys: ['影'], content: '不用。', enabled: false}]}}}),
            ours: read({entries: [{keys: ['剑'], text: ' 青锋。 ', constant: true}]}),
            plain: read('\\ufeff# a comment\\n青锋，剑: 林远的剑。\\n*: 北宋末年。\\n'),
            list: read([{keys: ['剑'], text: '青锋。', secondary: ['林远'], selective: false}]),
            noColon: read('青锋是剑'),
            notJson: read('{"entries": '),
            nothing: read({name: 'x'}),
            bans: steering.banList(' 魔法 \\n\\n众人\\r\\n魔法'),
        };
    }""")
    assert result["kobold"] == [{"keys": ["林黛玉", "黛玉"], "text": "剑客。"}]
    assert result["card"] == [{"keys": ["舰队"], "text": "舰队在那。", "secondary": ["三体"]}]
    assert result["ours"] == [{"keys": ["剑"], "text": "青锋。", "constant": True}]
    assert result["plain"] == [{"keys": ["青锋", "剑"], "text": "林远的剑。"}, {"keys": [], "text": "北宋末年。", "constant": True}]
    assert result["list"] == [{"keys": ["剑"], "text": "青锋。"}]
    assert result["noColon"].startswith("error: line 1") and result["notJson"].startswith("error: not valid JSON")
    assert result["nothing"].startswith("error: no lorebook entries found")
    assert result["bans"] == ["魔法", "众人"]
