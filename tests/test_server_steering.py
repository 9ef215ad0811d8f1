"""Memory, author's note, lorebook and banned phrases over the HTTP API (DESIGN.md §11), on a real socket.

The steering block is read between the story before the paragraph being continued and that paragraph;
it changes what is written, never the text sent back, and the prefix cache keeps the state after it.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from server_helpers import json_request, request, running_server, sse_events

from ai_writer.backends.open import load_model
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.generator import Generator
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.steering import Steering
from ai_writer.story.lorebook import Lorebook

# Characters of the tiny model's vocabulary only.
STORY = "林黛玉没想到，这一剑竟如此精妙。\n众人惊：“这是魔法？”"
MEMORY = "三体舰队朝着区下。"
NOTE = "只见影。"
LORE = [{"keys": ["林黛玉"], "text": "林黛玉的剑是一颗魔法。"}, {"keys": ["舰队"], "text": "舰队在那。"}]
BLOCK = "三体舰队朝着区下。\n林黛玉的剑是一颗魔法。\n只见影。\n"  # memory, the active entry, the note
STEERED = {"memory": MEMORY, "note": NOTE, "lore": LORE}


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model) as server:
        yield server


@pytest.fixture(scope="module")
def model(tiny_model, one_torch_thread):
    return load_model(tiny_model, backend="torch-cpu")


def complete(server, prompt, **fields):
    status, _, body = json_request(server, "POST", "/v1/completions", {"prompt": prompt, **fields})
    assert status == 200, body
    return body


def written_from_pieces(model, pieces, *, seed, length):
    """What the model writes after reading `pieces` one after another (each encoded on its own)."""
    ids = [i for piece in pieces for i in model.tokenizer.encode(piece)]
    logits, state = model.backend.forward([ids], model.backend.zero_state(1))
    start = Prefilled(state=state, logits=logits[0], last_token=ids[-1], n_tokens=len(ids))
    generator = Generator(model.backend, model.tokenizer, SamplerSettings())
    return "".join(chunk.text for chunk in generator.stream(start, max_chars=length, rng=np.random.default_rng(seed)))


def test_the_block_is_read_before_the_paragraph(server, model):
    assert Steering(MEMORY, NOTE, Lorebook.from_json(LORE, "test")).block(STORY) == BLOCK  # what the server reads
    plain = complete(server, STORY, max_tokens=40, seed=21)
    steered = complete(server, STORY, max_tokens=40, seed=21, **STEERED)
    text = steered["choices"][0]["text"]
    assert text != plain["choices"][0]["text"] and len(text) == 40
    cut = STORY.index("\n") + 1
    assert text == written_from_pieces(model, [STORY[:cut], BLOCK, STORY[cut:]], seed=21, length=40)
    assert steered["usage"]["prompt_tokens"] == len(STORY) + len(BLOCK)  # one character, one token
    assert BLOCK not in text and MEMORY not in text


def test_a_one_paragraph_prompt_reads_the_block_first(server, model):
    prompt = "林黛玉没想到，这一剑竟如此精妙。"
    text = complete(server, prompt, max_tokens=30, seed=4, memory=MEMORY)["choices"][0]["text"]
    assert text == written_from_pieces(model, [MEMORY + "\n", prompt], seed=4, length=30)


def test_lore_is_active_only_when_a_key_is_in_the_recent_text(server):
    lore = [{"keys": ["舰队"], "text": "舰队在那。"}]
    inactive = complete(server, STORY, max_tokens=20, seed=3, lore=lore)
    assert inactive["usage"]["prompt_tokens"] == len(STORY)
    assert inactive["choices"] == complete(server, STORY, max_tokens=20, seed=3)["choices"]
    scanned = complete(server, STORY, max_tokens=20, seed=3, lore=[{"keys": ["林黛玉"], "text": "剑。"}], lore_scan=10)
    assert scanned["usage"]["prompt_tokens"] == len(STORY)  # the key is further back than the last 10 characters
    constant = complete(server, STORY, max_tokens=20, seed=3, lore=[{"keys": ["*"], "text": "剑。"}])
    assert constant["usage"]["prompt_tokens"] == len(STORY) + len("剑。\n")


def test_world_info_shapes_are_accepted(server):
    sillytavern = {"entries": {"0": {"key": ["林黛玉"], "keysecondary": [], "content": "林黛玉的剑是一颗魔法。",
                                     "constant": False, "selective": False, "disable": False},
                               "1": {"key": ["舰队"], "content": "舰队在那。", "disable": False}}}
    kobold = [{"key": "林黛玉, 黛玉", "keysecondary": "", "content": "林黛玉的剑是一颗魔法。"}]
    ours = complete(server, STORY, max_tokens=20, seed=8, lore=LORE[:1])["choices"]
    assert complete(server, STORY, max_tokens=20, seed=8, lore=sillytavern)["choices"] == ours
    assert complete(server, STORY, max_tokens=20, seed=8, lore=kobold)["choices"] == ours


def test_an_unchanged_block_is_not_read_again(server):
    start = "众人没想到，林黛玉竟朝着那影下。\n"  # a story start no other test sends
    first = complete(server, start + "只见那影", max_tokens=5, seed=1, **STEERED)
    assert first["usage"]["prompt_tokens"] == len(start) + len(BLOCK) + 4
    other_paragraph = json_request(server, "POST", "/api/continue", {
        "text": start + "三体人惊", "settings": {"length": 5, "raw": True}, "stream": False, **STEERED})[2]
    assert other_paragraph["prompt_tokens"] == len(start) + len(BLOCK) + 4
    assert other_paragraph["reused_tokens"] == len(start) + len(BLOCK)  # the story before it and the block
    new_note = complete(server, start + "三体人惊", max_tokens=5, seed=1, **{**STEERED, "note": "剑。"})
    assert new_note["usage"]["prompt_tokens"] == len(start) + len(BLOCK.replace(NOTE, "剑。")) + 4
    # a changed block: the story before the paragraph is still not read again
    assert json_request(server, "POST", "/api/continue", {
        "text": start + "三体人惊", "settings": {"length": 5, "raw": True}, "stream": False,
        **{**STEERED, "note": "剑。"}})[2]["reused_tokens"] == new_note["usage"]["prompt_tokens"]
    third = json_request(server, "POST", "/api/continue", {
        "text": start + "这是", "settings": {"length": 5, "raw": True}, "stream": False,
        **{**STEERED, "memory": "魔法。"}})[2]
    assert third["reused_tokens"] == len(start)


def test_continuing_what_was_written_reads_only_the_new_text(server):
    text = "林黛玉惊，众人没想到。\n这一颗剑"
    body = {"settings": {"length": 12, "raw": True, "seed": 1}, "stream": False, **STEERED}
    first = json_request(server, "POST", "/api/continue", {"text": text, **body})[2]
    written = first["variants"][0]["text"]
    assert "\n" not in written  # the same paragraph: the block stays where it was
    follow = json_request(server, "POST", "/api/continue", {"text": text + written, **body})[2]
    assert follow["prompt_tokens"] == len(text + written) + len(BLOCK)
    assert follow["reused_tokens"] == follow["prompt_tokens"] - 1  # all but the last written character


# -- banned phrases ------------------------------------------------------------------------------------


def frequent_pair(texts: list[str]) -> str:
    """The two characters (no line break) the model writes most often in `texts`."""
    pairs = Counter(text[i : i + 2] for text in texts for i in range(len(text) - 1))
    return next(pair for pair, _ in pairs.most_common() if "\n" not in pair)


def test_a_banned_phrase_is_never_written(server):
    free = complete(server, STORY, max_tokens=150, n=4, seed=12)["choices"]
    phrase = frequent_pair([c["text"] for c in free])
    assert sum(c["text"].count(phrase) for c in free) >= 3, "the test needs a phrase the model writes often"
    banned = complete(server, STORY, max_tokens=150, n=4, seed=12, ban=[phrase, "魔法魔法"])["choices"]
    assert all(phrase not in c["text"] and len(c["text"]) == 150 for c in banned)
    assert sum(c["rewinds"] for c in banned) >= 1


def test_a_ban_may_begin_in_the_prompt(server):
    firsts = complete(server, STORY, max_tokens=1, n=16, seed=5)["choices"]
    common = Counter(c["text"] for c in firsts).most_common(1)[0][0]
    banned = complete(server, STORY, max_tokens=1, n=16, seed=5, ban=[STORY[-1] + common])["choices"]
    assert all(c["text"] != common for c in banned)


def test_rewinds_in_the_stream_and_the_summary(server):
    free = json_request(server, "POST", "/api/continue", {"text": STORY, "settings": {"length": 100, "seed": 2},
                                                          "stream": False})[2]
    phrase = frequent_pair([free["variants"][0]["text"]])
    status, _, payload = request(server, "POST", "/api/continue", {
        "text": STORY, "settings": {"length": 100, "seed": 2}, "ban": [phrase], "stream": True, **STEERED})
    assert status == 200
    events = sse_events(payload)
    finish = [json.loads(data) for name, data in events if name == "finish"]
    done = json.loads(events[-1][1])
    assert events[-1][0] == "done" and phrase not in done["variants"][0]["text"]
    assert finish[0]["rewinds"] == done["variants"][0]["rewinds"] and isinstance(finish[0]["rewinds"], int)
    streamed = "".join(json.loads(data)["text"] for name, data in events if name == "chunk")
    assert streamed == done["variants"][0]["text"]


def test_the_loop_guard_can_be_turned_off(server):
    answer = complete(server, STORY, max_tokens=20, seed=6, loop_guard=False)
    assert answer["choices"][0]["rewinds"] == 0


# -- the fields' limits ------------------------------------------------------------------------------------


def test_info_lists_the_limits(server):
    info = json_request(server, "GET", "/api/info")[2]
    assert info["steering"]["memory_chars"] == 20_000 and info["steering"]["note_chars"] == 2_000
    assert info["steering"]["ban_phrases"] == 200 and info["steering"]["ban_chars"] == 100
    assert info["steering"]["lore_scan"]["default"] == 3000


BAD_FIELDS = [
    ({"memory": 5}, 400, "memory"),
    ({"memory": "剑" * 20_001}, 422, "memory"),
    ({"note": ["剑"]}, 400, "note"),
    ({"note": "剑" * 2_001}, 422, "note"),
    ({"lore": "林黛玉: 剑"}, 400, "lore"),
    ({"lore": [["林黛玉", "剑"]]}, 400, "lore"),
    ({"lore": [{"keys": ["林黛玉"]}]}, 422, "lore"),
    ({"lore": [{"text": "剑"}]}, 422, "lore"),
    ({"lore": [{"keys": ["剑" * 101], "text": "剑"}]}, 422, "lore"),
    ({"lore": [{"keys": ["剑"], "text": "剑"}] * 501}, 422, "lore"),
    ({"lore": {"nothing": []}}, 422, "lore"),
    ({"lore_scan": "100"}, 400, "lore_scan"),
    ({"lore_scan": 0}, 422, "lore_scan"),
    ({"ban": "魔法"}, 400, "ban"),
    ({"ban": ["魔法", 3]}, 400, "ban"),
    ({"ban": ["魔" * 101]}, 422, "ban"),
    ({"ban": [f"魔法{i}" for i in range(201)]}, 422, "ban"),
    ({"loop_guard": "yes"}, 400, "loop_guard"),
]


@pytest.mark.parametrize("fields, status, param", BAD_FIELDS)
def test_bad_steering_fields_are_refused(server, fields, status, param):
    for path, body in (("/api/continue", {"text": STORY}), ("/v1/completions", {"prompt": STORY})):
        code, _, answer = json_request(server, "POST", path, {**body, **fields})
        assert code == status and answer["error"]["param"] == param, (path, answer)
