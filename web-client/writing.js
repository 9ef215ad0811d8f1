// Continuing and rewriting: what each request carries (the story, or the text before a selected passage, with the
// settings and the steering), the text streaming into the editor or into the variant cards, and what a picked
// variant replaces. Each continuation, rewrite and picked variant is one step of the story's history.
//
// Three kinds of request:
//   - continue: the story goes as the prompt; one continuation streams in at the end (read-only meanwhile), or N
//     into the cards, and the one picked goes at the end;
//   - rewrite of the last continuation (no selection): the text before it goes as the prompt (writer.js
//     planRewrite), and the new one takes its place;
//   - rewrite of a selected passage: the text before the passage goes as the prompt (the server's prefix cache has
//     read it already), N versions of about the passage's length stream into the cards beside the passage itself,
//     and the one picked replaces the passage alone: the text after it is never touched.

import { streamContinue } from "./api.js";
import { formatSeconds } from "./i18n.js";
import { countChars, planRewrite, variantPlace } from "./writer.js";

const MODEL = [[0, Infinity]]; // marks of a text all the model's (cut to its length)

/** The values a request carried, by the names an error's `param` uses. */
function sentValues(body) {
  return { ...body.settings, variants: body.variants, memory: body.memory, note: body.note };
}

export class Writing {
  /**
   * `page` gives what the page owns: editor, cards, settings, steering, words(key, values), history(), info(),
   * setStatus(key, values, kind, detail), showError(error, sent), save(), changed() (the history changed) and
   * running(busy).
   */
  constructor(page) {
    this.page = page;
    this.editor = page.editor;
    this.cards = page.cards;
    this.last = null; // {written}: what the last continuation added at the end of the story
    this.controller = null; // the request in flight
    this.pending = null; // {kind: "continue", replacing} or {kind: "selection", start, end, text}: what cards replace
  }

  get busy() {
    return Boolean(this.controller);
  }

  /** Another story: nothing in flight, nothing pending, its last continuation. */
  reset(last) {
    this.abort();
    this.closeCards();
    this.last = last;
  }

  start(mode) {
    if (this.busy) return;
    const { editor, settings, steering, setStatus } = this.page;
    const { start, end } = editor.selection;
    if (mode === "rewrite" && end > start) {
      this.rewriteSelection(start, end);
      return;
    }
    const story = editor.text;
    let prefix = story;
    let replacing = "";
    let note = null;
    if (mode === "rewrite") {
      const plan = planRewrite(story, this.last);
      if (!plan) {
        setStatus("nothingToRewrite", {}, "warn");
        return;
      }
      prefix = plan.prefix;
      replacing = plan.replaces ? this.last.written : "";
      if (!plan.replaces) note = "editedInside";
    }
    if (!prefix.trim()) {
      setStatus("emptyText", {}, "warn");
      return;
    }
    const request = settings.request();
    const multi = typeof request.variants === "number" && request.variants > 1;
    this.closeCards(); // cards still open belong to the request before: no longer to be picked
    // memory, note, lore and bans go with every request; the server reads them, never the story
    this.run({ text: prefix, ...request, ...steering.request() }, { mode, replacing, note, multi });
  }

  /** Rewrite text[start, end): versions of about its length, from the state at its start. */
  rewriteSelection(start, end) {
    const { editor, settings, steering, setStatus, info } = this.page;
    const text = editor.text;
    const prefix = text.slice(0, start);
    if (!prefix.trim()) {
      setStatus("nothingBeforeSelection", {}, "warn");
      return;
    }
    const passage = text.slice(start, end);
    const request = settings.request();
    const stop = [...(request.settings.stop || [])];
    // a passage within one paragraph gets a version within one paragraph
    if (!passage.includes("\n") && !stop.includes("\n") && stop.length < (info().stop?.strings ?? 4)) stop.push("\n");
    this.closeCards();
    const longest = info().ranges?.length?.max ?? Infinity;
    const length = Math.min(countChars(passage), longest);
    const sampling = { ...request.settings, length, ...(stop.length ? { stop } : {}) };
    const body = { text: prefix, ...request, settings: sampling, ...steering.request() };
    this.pending = { kind: "selection", start, end, text: passage };
    editor.showPending([start, end]);
    this.run(body, { mode: "selection" });
  }

  async run(body, { mode, replacing = "", note = null, multi = false }) {
    const { editor, cards, page } = this;
    const controller = new AbortController();
    this.controller = controller;
    page.running(true);
    const selection = mode === "selection" ? this.pending : null;
    const toCards = multi || Boolean(selection);
    const busy = { continue: "writing", rewrite: "rewriting", selection: "rewritingSelection" }[mode];
    page.setStatus(busy, { n: selection ? countChars(selection.text) : 0 }, "busy");
    const stream = { at: 0, length: 0, removed: "", removedMarks: [], lastBefore: null };
    let started = false;
    let settled = false;
    const begin = () => {
      // What is replaced goes only once the server answers: a refused request changes nothing.
      if (started) return;
      started = true;
      if (toCards) {
        if (!selection) this.pending = { kind: "continue", replacing };
        cards.open(body.variants, (n) => page.words("variant", { n }),
          selection ? { title: page.words("original"), text: selection.text } : null);
        this.retitle(selection ? "variantsTitleSelection" : "variantsTitle");
        return;
      }
      this.closeCards();
      const length = editor.text.length;
      stream.at = replacing ? length - replacing.length : length;
      if (replacing) Object.assign(stream, editor.replace(stream.at, length, "", [], "stream"));
      stream.lastBefore = this.last ? this.last.written : null;
      this.last = { written: "" };
      editor.scrollToEnd();
    };
    const settle = () => {
      // the continuation written into the story, as one step of its history (once, whatever ended it)
      if (!started || settled || toCards) return;
      settled = true;
      const inserted = editor.text.slice(stream.at, stream.at + stream.length);
      this.last = { written: inserted };
      page.history().push({ at: stream.at, removed: stream.removed, removedMarks: stream.removedMarks, inserted,
        insertedMarks: inserted ? [[0, inserted.length]] : [], kind: mode, lastBefore: stream.lastBefore,
        lastAfter: inserted });
      page.changed();
    };
    controller.settle = settle;
    if (!toCards) editor.readOnly = true;
    try {
      const done = await streamContinue(body, {
        token: page.settings.token,
        signal: controller.signal,
        onEvent: (name, data) => {
          if (controller.signal.aborted) return;
          begin();
          if (name === "chunk" && toCards) cards.append(data.variant, data.text);
          else if (name === "chunk") {
            const near = editor.nearEnd;
            stream.length += editor.append(data.text, MODEL).inserted.length;
            this.last = { written: editor.text.slice(stream.at, stream.at + stream.length) };
            if (near) editor.scrollToEnd();
          } else if (name === "finish" && toCards) cards.finish(data.variant);
        },
      });
      begin();
      const values = { n: countChars(this.last?.written || ""), s: formatSeconds(done.seconds), seed: done.seed,
        count: done.variants.length, fresh: done.prompt_tokens - done.reused_tokens, reused: done.reused_tokens };
      const detail = `prompt_tokens ${done.prompt_tokens}, reused_tokens ${done.reused_tokens}, ` +
        `completion_tokens ${done.completion_tokens}, seconds ${done.seconds}`;
      const key = note || (selection ? "rewroteSelection" : multi ? "wroteVariants" : "wrote");
      page.setStatus(key, values, note ? "warn" : "ok", detail);
      const status = document.getElementById("status");
      status.dataset.promptTokens = done.prompt_tokens;
      status.dataset.reusedTokens = done.reused_tokens;
    } catch (error) {
      if (error.name !== "AbortError") page.showError(error, sentValues(body));
      else if (!controller.picked) page.setStatus("stopped");
      if (!started && selection && this.pending === selection) this.closeCards();
    } finally {
      settle();
      if (toCards && this.pending) cards.finishAll();
      if (this.controller === controller) {
        this.controller = null;
        editor.readOnly = false;
        page.running(false);
      }
      page.save();
    }
  }

  /** A card was picked: its text goes where the cards say (index -1: the passage itself, kept). */
  pick(index, text) {
    const { editor, page } = this;
    const pending = this.pending;
    if (this.controller) {
      this.controller.picked = true; // the other variants are not wanted any more
      this.controller.abort();
    }
    this.closeCards();
    if (pending?.kind === "selection") {
      if (index < 0) {
        editor.select(pending.start, pending.end);
        page.setStatus("keptOriginal", {}, "ok");
        return;
      }
      const step = editor.replace(pending.start, pending.end, text, MODEL, "page", "select");
      page.history().push({ ...step, kind: "rewrite-selection" });
      editor.textarea.focus();
      page.setStatus("replacedSelection", { n: index + 1 }, "ok");
    } else {
      const { start, end } = variantPlace(editor.text, pending?.replacing || "");
      const step = editor.replace(start, end, text, MODEL, "page", "end");
      page.history().push({ ...step, kind: "variant", lastBefore: this.last ? this.last.written : null,
        lastAfter: step.inserted });
      this.last = { written: step.inserted };
      editor.scrollToEnd();
      page.setStatus("inserted", { n: index + 1 }, "ok");
    }
    page.changed();
    page.save();
  }

  /** Every change in the editor: a passage waiting for its new version moves with the text before it, and is
   * given up if the writer edits the passage itself. */
  follow(step) {
    const pending = this.pending;
    if (!pending || pending.kind !== "selection" || step.kind === "stream") return;
    const shift = step.inserted.length - step.removed.length;
    if (step.at + step.removed.length <= pending.start) {
      pending.start += shift;
      pending.end += shift;
      this.editor.showPending([pending.start, pending.end]);
    } else if (step.at < pending.end) {
      this.dismiss();
      this.page.setStatus("passageEdited", {}, "warn");
    }
  }

  /** The writer closes the cards: what is still being written for them stops. */
  dismiss() {
    if (this.pending && this.controller) {
      this.controller.picked = true;
      this.controller.abort();
    }
    this.closeCards();
  }

  closeCards() {
    this.pending = null;
    this.cards.close();
    this.editor.showPending(null);
  }

  /** The writer's Stop: what was written so far stays. */
  stop() {
    if (this.controller) this.controller.abort();
  }

  /** Stop quietly (another story is opened): what was written so far stays, as one step. */
  abort() {
    const controller = this.controller;
    if (!controller) return;
    controller.picked = true;
    controller.settle();
    controller.abort();
    this.controller = null;
    this.editor.readOnly = false;
    this.page.running(false);
  }

  retitle(key) {
    const title = document.getElementById("variants-title");
    title.dataset.i18n = key;
    title.textContent = this.page.words(key);
  }
}
