"""The web page as a place to write, in a real headless Chromium (see test_web_client.py): undo and redo over
every change, the model's text marked, rewriting a selected passage, several stories (new, rename, switch, delete,
export, import) and the move of the old single story into the first one.
"""

from __future__ import annotations

import json

import pytest

from test_web_client import OPENING, Page, browser, server, tab  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.browser

MEMORY = "林黛玉是剑客。"


def model_marks(tab) -> list[str]:
    """The model's runs as the mirror shows them (once it has drawn the latest change)."""
    return tab.page.evaluate("""() => new Promise((done) => requestAnimationFrame(() => done(
        [...document.querySelectorAll('#editor-marks mark.model')].map((m) => m.textContent))))""")


def select(tab, start: int, end: int) -> None:
    tab.page.focus("#editor")
    tab.page.evaluate(f"document.getElementById('editor').setSelectionRange({start}, {end})")


def reload(tab) -> None:
    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")


def enabled(tab, selector: str) -> bool:
    return tab.page.is_enabled(selector)


# -- undo and redo --------------------------------------------------------------------------------------------


def test_undo_and_redo_over_continue_rewrite_and_typing_survive_a_reload(tab):
    tab.open()
    assert not enabled(tab, "#undo") and not enabled(tab, "#redo")
    tab.write(OPENING)
    tab.setting("length", 40)
    tab.run()
    first = tab.text
    tab.run("#rewrite")
    second = tab.text
    assert second != first and second.startswith(OPENING)
    tab.page.focus("#editor")
    tab.page.keyboard.press("Control+End")
    tab.page.keyboard.type("众人惊")
    third = tab.text
    assert third == second + "众人惊"

    tab.page.keyboard.press("Control+Z")  # the typing
    assert tab.text == second
    tab.page.click("#undo")  # the rewrite: the first continuation is back, marked as the model's
    assert tab.text == first and model_marks(tab) == [first[len(OPENING):]] and tab.status == "Undone"
    tab.page.keyboard.press("Control+Z")  # (the focus is on the button: the page answers)
    assert tab.text == OPENING and model_marks(tab) == []
    tab.page.keyboard.press("Control+Shift+Z")
    assert tab.text == first and enabled(tab, "#redo")

    reload(tab)  # the history is kept with the story
    assert tab.text == first and enabled(tab, "#undo") and enabled(tab, "#redo")
    tab.page.click("#redo")
    tab.page.click("#redo")
    assert tab.text == third and not enabled(tab, "#redo")
    for expected in (second, first, OPENING, ""):
        tab.page.click("#undo")
        assert tab.text == expected
    assert not enabled(tab, "#undo")
    tab.page.keyboard.press("Control+Z")
    assert tab.status == "Nothing to undo"
    tab.page.click("#redo")
    tab.page.click("#redo")
    assert tab.text == first
    tab.run(key="Alt+KeyE")  # redo gave back what the last continuation wrote: only that part is rewritten
    assert tab.body()["text"] == OPENING and len(tab.text) == len(OPENING) + 40 and tab.text != first
    assert not enabled(tab, "#redo")  # a new change: what was undone cannot be redone any more


def test_undo_after_stopping_and_after_picking_a_variant(tab):
    tab.open().write(OPENING)
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 50}")
    tab.page.click("#stop")
    tab.page.wait_for_function("document.getElementById('stop').disabled")
    tab.setting("length", 20)
    tab.setting("variants", 2)
    tab.run()
    stopped = tab.text
    cards = tab.page.locator(".card")
    variant = cards.nth(1).locator(".card-text").inner_text()
    cards.nth(1).click()
    assert tab.text == stopped + variant and model_marks(tab) == [tab.text[len(OPENING):]]
    tab.page.click("#undo")
    assert tab.text == stopped
    tab.page.click("#undo")
    assert tab.text == OPENING


# -- the model's text marked ----------------------------------------------------------------------------------


def test_the_models_text_is_marked_and_stays_marked_around_edits(tab, tmp_path):
    tab.open().write(OPENING)
    tab.setting("length", 30)
    tab.run()
    written = tab.text[len(OPENING):]
    assert model_marks(tab) == [written]
    at = len(OPENING) + 10
    select(tab, at, at)
    tab.page.keyboard.type("剑")  # typed inside the model's text: the writer's
    assert model_marks(tab) == [written[:10], written[10:]]
    select(tab, at + 3, at + 5)
    tab.page.keyboard.type("林")  # typed over two of the model's characters: they become the writer's one
    assert model_marks(tab) == [written[:10], written[10:12], written[14:]]
    tab.page.keyboard.press("Control+Home")
    tab.page.keyboard.type("三体")  # before it: the marks move along
    assert model_marks(tab) == [written[:10], written[10:12], written[14:]]
    assert tab.text == "三体" + OPENING + written[:10] + "剑" + written[10:12] + "林" + written[14:]

    background = "m => getComputedStyle(m).backgroundColor"
    assert tab.page.eval_on_selector("#editor-marks mark.model", background) != "rgba(0, 0, 0, 0)"
    tab.page.click("#marks-toggle")
    assert tab.page.get_attribute("#marks-toggle", "aria-pressed") == "false"
    assert tab.page.eval_on_selector("#editor-marks mark.model", background) == "rgba(0, 0, 0, 0)"
    reload(tab)  # the marks are kept with the story, the toggle with the browser
    assert model_marks(tab) == [written[:10], written[10:12], written[14:]]
    assert tab.page.get_attribute("#marks-toggle", "aria-pressed") == "false"
    tab.page.click("#marks-toggle")
    assert tab.page.eval_on_selector("#editor-marks mark.model", background) != "rgba(0, 0, 0, 0)"

    with tab.page.expect_download() as download:
        tab.page.click("#download")
    saved = tmp_path / "story.txt"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8") == tab.text  # plain text


def test_the_marks_lie_under_their_characters(tab):
    """The mirror lays the text out as the textarea does (same wrapping, same scrolling)."""
    tab.open().write(OPENING)
    tab.setting("length", 3000)
    tab.run()
    layout = tab.page.evaluate("""async () => {
        const area = document.getElementById('editor'), mirror = document.getElementById('editor-marks');
        area.scrollTop = 600;
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
        return {text: area.scrollHeight, mirror: mirror.scrollHeight - window.innerHeight,
                areaTop: area.scrollTop, mirrorTop: mirror.scrollTop, width: [area.clientWidth, mirror.clientWidth]};
    }""")
    assert abs(layout["text"] - layout["mirror"]) <= 2, layout  # as many lines in both
    assert layout["areaTop"] == layout["mirrorTop"] == 600 and layout["width"][0] == layout["width"][1]


# -- rewriting a selected passage ----------------------------------------------------------------------------

STORY = OPENING + "\n林黛玉只见那剑竟如此精妙，众人惊。\n这是一颗魔法。"  # three paragraphs


def test_rewrite_a_selected_passage(tab):
    tab.open().write(STORY)
    passage = "那剑竟如此精妙"
    start = STORY.index(passage)
    end = start + len(passage)
    after = STORY[end:]
    tab.setting("variants", 2)
    select(tab, start, end)
    assert tab.page.inner_text("#rewrite-scope") == "7 selected"
    tab.run("#rewrite")
    body = tab.body()
    assert body["text"] == STORY[:start] and body["variants"] == 2  # the text before the passage, nothing after it
    assert body["settings"]["length"] == len(passage) and body["settings"]["stop"] == ["\n"]  # one paragraph
    cards = tab.page.locator(".card")
    assert cards.count() == 3 and cards.nth(0).get_attribute("data-variant") == "original"
    assert cards.nth(0).locator(".card-text").inner_text() == passage
    assert tab.text == STORY  # nothing changes until the writer picks
    assert tab.page.eval_on_selector_all("#editor-marks mark.pending", "m => m.map(x => x.textContent)") == [passage]
    status = tab.page.locator("#status")
    prompt, reused = (int(status.get_attribute(f"data-{name}-tokens")) for name in ("prompt", "reused"))
    assert f"the model read {prompt - reused} new tokens ({reused} more came from the cache)" in tab.status

    version = cards.nth(2).locator(".card-text").inner_text()
    assert version and "\n" not in version
    cards.nth(2).click()
    text = tab.text
    assert text == STORY[:start] + version + after
    assert text[len(text) - len(after):] == after  # the text after the selection, byte for byte
    selection = "[document.getElementById('editor').selectionStart, document.getElementById('editor').selectionEnd]"
    assert tab.page.evaluate(selection) == [start, start + len(version)]
    assert model_marks(tab) == [version] and "Replaced the selection with version 2" in tab.status

    tab.run("#rewrite")  # the new version is selected: rewrite it again, from the same state (all of it cached)
    assert tab.body()["text"] == STORY[:start] and tab.body()["settings"]["length"] == len(version)
    assert status.get_attribute("data-reused-tokens") == status.get_attribute("data-prompt-tokens")
    assert "the model read 0 new tokens" in tab.status
    tab.page.focus("#editor")
    tab.page.keyboard.press("Control+Home")
    tab.page.keyboard.type("林")  # the writer edits before the passage while choosing: the passage moves with it
    again = cards.nth(1).locator(".card-text").inner_text()
    cards.nth(1).click()
    assert tab.text == "林" + STORY[:start] + again + after
    assert tab.page.evaluate(selection) == [start + 1, start + 1 + len(again)]
    tab.page.keyboard.press("Control+Z")  # the second version goes, the first comes back
    assert tab.text == "林" + STORY[:start] + version + after and model_marks(tab) == [version]
    tab.page.keyboard.press("Control+Z")  # the 林 typed
    tab.page.keyboard.press("Control+Z")  # the first version
    assert tab.text == STORY and model_marks(tab) == []


def test_keeping_the_original(tab):
    tab.open().write(STORY)
    select(tab, 3, 8)
    tab.run("#rewrite")
    tab.page.locator(".card").nth(0).click()
    assert tab.text == STORY and tab.status == "Kept the original" and tab.page.is_hidden("#variants")


def test_editing_the_passage_being_rewritten_drops_its_versions(tab):
    tab.open().write(STORY)
    select(tab, 3, 8)
    tab.run("#rewrite")
    assert tab.page.is_visible("#variants")
    tab.page.focus("#editor")
    tab.page.evaluate("document.getElementById('editor').setSelectionRange(5, 5)")
    tab.page.keyboard.type("剑")
    assert tab.page.is_hidden("#variants") and "its versions were dropped" in tab.status
    assert tab.text == STORY[:5] + "剑" + STORY[5:]


def test_a_selection_at_the_very_start_has_nothing_to_go_on_from(tab):
    tab.open().write(STORY)
    select(tab, 0, 4)
    tab.page.click("#rewrite")
    assert "no text before the selection" in tab.status and tab.requests == []


# -- stories ------------------------------------------------------------------------------------------------


def story_titles(tab) -> list[str]:
    return tab.page.eval_on_selector_all("#story-list .story", "s => s.map(b => b.textContent)")


def current_title(tab) -> str:
    return tab.page.inner_text("#story-list .story[aria-current=true]")


def open_stories(tab) -> None:
    if not tab.page.is_visible("#story-list"):
        tab.page.click("#stories-toggle")


def open_memory(tab) -> None:
    if not tab.page.is_visible("#steering-memory"):
        tab.page.click("#steering-toggle")


def test_stories_each_with_its_text_history_settings_and_memory(tab):
    tab.open().write(OPENING)
    open_memory(tab)
    tab.page.fill("#steering-memory", MEMORY)
    tab.setting("length", 33)
    open_stories(tab)
    first_title = OPENING.split("\n")[0]
    assert story_titles(tab) == [first_title]  # named after its first line until the writer names it
    tab.page.click("#story-new")
    assert tab.text == "" and story_titles(tab) == [first_title, "Untitled"] and current_title(tab) == "Untitled"
    open_memory(tab)
    assert tab.page.input_value("#steering-memory") == ""
    assert tab.page.input_value("#setting-length") == "120" and not enabled(tab, "#undo")
    tab.write("三体舰队朝着那。")
    open_stories(tab)
    tab.page.fill("#story-title", "第二篇")
    assert story_titles(tab) == [first_title, "第二篇"] and tab.page.inner_text("#story-name") == "第二篇"
    tab.setting("length", 20)
    tab.run()
    second = tab.text
    assert tab.body()["text"] == "三体舰队朝着那。" and "memory" not in tab.body()

    tab.page.click("#story-list .story >> nth=0")
    assert tab.text == OPENING and current_title(tab) == first_title
    open_memory(tab)
    assert tab.page.input_value("#steering-memory") == MEMORY and tab.page.input_value("#setting-length") == "33"
    tab.page.click("#undo")  # this story's history
    assert tab.text == ""
    tab.page.click("#redo")

    reload(tab)  # the story shown last is shown again
    assert tab.text == OPENING and current_title(tab) == first_title
    open_stories(tab)
    tab.page.click("#story-list .story >> nth=1")
    assert tab.text == second
    tab.page.click("#undo")
    assert tab.text == "三体舰队朝着那。"

    tab.page.once("dialog", lambda dialog: dialog.dismiss())
    tab.page.click("#story-delete")  # the writer says no: nothing is deleted
    assert story_titles(tab) == [first_title, "第二篇"]
    deleted = tab.page.evaluate("JSON.parse(localStorage.getItem('ai-writer.stories')).current")
    tab.page.once("dialog", lambda dialog: dialog.accept())
    tab.page.click("#story-delete")
    assert story_titles(tab) == [first_title] and tab.text == OPENING and tab.status == "Deleted “第二篇”"
    keys = tab.page.evaluate("Object.keys(localStorage)")
    assert not [key for key in keys if key.endswith(deleted)]
    tab.page.once("dialog", lambda dialog: dialog.accept())
    tab.page.click("#story-delete")  # the last one: an empty story takes its place
    assert story_titles(tab) == ["Untitled"] and tab.text == ""


def test_switching_stories_while_writing(tab):
    tab.open().write(OPENING)
    open_stories(tab)
    tab.page.click("#story-new")
    tab.write("三体舰队。")
    tab.page.click("#story-list .story >> nth=0")
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 50}")
    tab.page.click("#story-list .story >> nth=1")  # the continuation stops; what it wrote stays in its story
    assert tab.text == "三体舰队。" and enabled(tab, "#continue") and tab.page.is_editable("#editor")
    tab.page.wait_for_timeout(300)
    assert tab.text == "三体舰队。"
    tab.page.click("#story-list .story >> nth=0")
    partial = tab.text
    assert partial.startswith(OPENING) and len(partial) > len(OPENING) + 50
    assert model_marks(tab) == [partial[len(OPENING):]]
    tab.page.click("#undo")
    assert tab.text == OPENING


def test_export_and_import(tab, tmp_path):
    text = "第一段。\n\n  第二段。\n"
    tab.open().write(text)
    open_stories(tab)
    tab.page.fill("#story-title", "我的书")
    files = {}
    for button in ("#story-export-txt", "#story-export-md"):
        with tab.page.expect_download() as download:
            tab.page.click(button)
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        files[path.name] = path.read_text(encoding="utf-8")
    assert files == {"我的书.txt": text, "我的书.md": "# 我的书\n\n第一段。\n\n第二段。\n"}

    tab.page.set_input_files("#story-import", files=[{"name": "旧稿.txt", "mimeType": "text/plain",
                                                      "buffer": "林黛玉\r\n剑客".encode("gb18030")}])
    tab.page.wait_for_function("document.getElementById('editor').value.startsWith('林')")
    assert tab.text == "林黛玉\n剑客" and current_title(tab) == "旧稿"
    assert tab.status == "Imported 旧稿.txt (6 characters)" and model_marks(tab) == []
    tab.page.set_input_files("#story-import", files=[{"name": "utf8.txt", "mimeType": "text/plain",
                                                      "buffer": "\ufeff三体。".encode("utf-8")}])
    tab.page.wait_for_function("document.getElementById('editor').value === '三体。'")
    assert story_titles(tab) == ["我的书", "旧稿", "utf8"]


def test_the_old_single_story_becomes_the_first_story(tab):
    written = "林黛玉竟如此精妙。"
    old = {"ai-writer.story": OPENING + written, "ai-writer.last": json.dumps({"written": written}),
           "ai-writer.settings": json.dumps({"length": "44"}),
           "ai-writer.steering": json.dumps({"memory": MEMORY, "note": "", "lore": [], "ban": "", "loopGuard": True})}
    tab.open()
    tab.page.evaluate("(old) => { localStorage.clear(); for (const [k, v] of Object.entries(old)) "
                      "localStorage.setItem(k, v); }", old)
    reload(tab)
    assert tab.text == OPENING + written and model_marks(tab) == [written]
    open_memory(tab)
    assert tab.page.input_value("#steering-memory") == MEMORY
    tab.open_setting("length")
    assert tab.page.input_value("#setting-length") == "44"
    keys = tab.page.evaluate("Object.keys(localStorage)")
    assert not set(old) & set(keys), "the old keys are removed once moved"
    tab.run(key="Alt+KeyE")  # the last continuation is still known: only it is rewritten
    assert tab.body()["text"] == OPENING and tab.body()["settings"]["length"] == 44
    reload(tab)
    open_stories(tab)
    assert story_titles(tab) == [OPENING.split("\n")[0]]


def test_the_pure_parts_of_the_editor(tab):
    """marks.js (who wrote what) and history.js (undo steps) on the edge cases the pages above do not reach."""
    tab.open()
    result = tab.page.evaluate("""async () => {
        const m = await import('./marks.js');
        const {History} = await import('./history.js');
        const h = new History();
        const typed = (at, removed, inserted, time) =>
            h.push({at, removed, inserted, removedMarks: [], insertedMarks: [], kind: 'typing', time});
        typed(0, '', 'a', 0); typed(1, '', 'b', 100); typed(1, 'b', 'c', 200);  // typing on, an input method's change
        typed(2, '', 'd', 5000);  // after a pause: a new step
        const steps = h.done.map(s => s.inserted);
        const undone = h.undo().inserted;
        typed(2, '', 'e', 5100);  // a new edit: nothing to redo
        const back = new History();
        back.push({at: 5, removed: 'x', inserted: '', removedMarks: [[0, 1]], insertedMarks: [], kind: 'typing',
                   time: 0});
        back.push({at: 4, removed: 'y', inserted: '', removedMarks: [], insertedMarks: [], kind: 'typing', time: 10});
        const big = new History();
        for (let i = 0; i < 5; i += 1) big.push({at: 0, removed: '', inserted: 'z'.repeat(10), removedMarks: [],
                                                 insertedMarks: [[0, 10]], kind: 'continue'});
        big.trim(3, 25);
        return {
            steps, undone, canRedo: h.canRedo,
            backspace: [back.done.length, back.done[0].at, back.done[0].removed, back.done[0].removedMarks],
            bounded: big.done.length,
            fromBad: History.from('not json').done.length,
            insideSplits: m.applyEdit([[2, 8]], 4, 5, 3),
            beforeShifts: m.applyEdit([[2, 8]], 0, 0, 2),
            atEndIsWriters: m.applyEdit([[2, 8]], 8, 8, 1),
            overMark: m.applyEdit([[2, 8], [10, 12]], 6, 11, 0),
            modelInsert: m.applyEdit([[2, 8]], 8, 8, 3, [[0, 3]]),
            slice: m.sliceMarks([[2, 8], [10, 12]], 5, 11),
            caret: m.diffText('林林', '林林林', 1),
            noCaret: m.diffText('abcd', 'abXcd'),
            emoji: m.diffText('a😀b', 'a😁b', 3),
            same: m.diffText('abc', 'abc', 1),
        };
    }""")
    assert result["steps"] == ["ac", "d"] and result["undone"] == "d" and result["canRedo"] is False
    assert result["backspace"] == [1, 4, "yx", [[1, 2]]]
    assert result["bounded"] == 2 and result["fromBad"] == 0
    assert result["insideSplits"] == [[2, 4], [7, 10]]
    assert result["beforeShifts"] == [[4, 10]]
    assert result["atEndIsWriters"] == [[2, 8]]
    assert result["overMark"] == [[2, 7]]  # what is left of two model runs, joined
    assert result["modelInsert"] == [[2, 11]]
    assert result["slice"] == [[0, 3], [5, 6]]
    assert result["caret"] == {"start": 0, "end": 0, "inserted": "林"}
    assert result["noCaret"] == {"start": 2, "end": 2, "inserted": "X"}
    assert result["emoji"] == {"start": 1, "end": 3, "inserted": "😁"}
    assert result["same"] is None
