// The story editor: a plain <textarea> for writing (input methods, paste as plain text, the selection all work as
// the browser made them), over a mirror <div> that lays out the same text in the same place and tints the model's
// characters. The editor keeps the text and its marks (marks.js) and reports every change as a step (history.js):
// the writer's edits as "typing", the page's own as the kind it names.

import { applyEdit, diffText, normalize, sliceMarks } from "./marks.js";

const normalizeBreaks = (text) => text.replace(/\r\n?/g, "\n"); // as the textarea itself keeps them

export class Editor {
  /**
   * `textarea` is where the writer types, `mirror` the element under it that shows the marks.
   * `onEdit(step)` follows every change; `onUndo()` and `onRedo()` answer Ctrl+Z, Ctrl+Shift+Z (Ctrl+Y) and the
   * browser's own Undo and Redo, which never act on the textarea by themselves.
   */
  constructor(textarea, mirror, { onEdit = () => {}, onUndo = () => {}, onRedo = () => {} } = {}) {
    this.textarea = textarea;
    this.mirror = mirror;
    this.onEdit = onEdit;
    this.value = textarea.value;
    this.marks = [];
    this.pending = null; // [start, end): a passage being rewritten, shown until the writer picks
    this.frame = 0;
    textarea.addEventListener("input", () => this.readInput());
    textarea.addEventListener("beforeinput", (event) => {
      const action = { historyUndo: onUndo, historyRedo: onRedo }[event.inputType];
      if (!action) return;
      event.preventDefault();
      action();
    });
    textarea.addEventListener("keydown", (event) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey || event.isComposing) return;
      const key = event.key.toLowerCase();
      if (key === "z" || key === "y") {
        event.preventDefault();
        if (key === "y" || event.shiftKey) onRedo();
        else onUndo();
      }
    });
    textarea.addEventListener("scroll", () => this.syncScroll());
    new ResizeObserver(() => this.syncScroll()).observe(textarea);
  }

  get text() {
    return this.value;
  }

  /** A story's text and marks, shown afresh (no step is reported). */
  load(text, marks = []) {
    this.value = normalizeBreaks(text);
    this.textarea.value = this.value;
    this.marks = normalize(marks, this.value.length);
    this.pending = null;
    this.render();
  }

  /**
   * Put `text` in place of [start, end); `marks` are its own (relative to start). `kind` names the step reported;
   * `caret`: "end" (after the new text), "select" (the new text selected) or "preserve" (the writer's selection kept).
   * Returns the step.
   */
  replace(start, end, text, marks = [], kind = "edit", caret = "preserve") {
    const inserted = normalizeBreaks(text);
    this.textarea.setRangeText(inserted, start, end, caret);
    return this.commit(start, end, inserted, marks, kind);
  }

  /** Add text at the end (a continuation streaming in); returns the step. */
  append(text, marks, kind = "stream") {
    return this.replace(this.value.length, this.value.length, text, marks, kind);
  }

  /** The writer's edit, found by comparing the text before and after it. */
  readInput() {
    const after = this.textarea.value;
    const edit = diffText(this.value, after, this.textarea.selectionEnd);
    if (edit) this.commit(edit.start, edit.end, edit.inserted, [], "typing");
  }

  commit(start, end, inserted, insertedMarks, kind) {
    const step = {
      at: start,
      removed: this.value.slice(start, end),
      inserted,
      removedMarks: sliceMarks(this.marks, start, end),
      insertedMarks: normalize(insertedMarks, inserted.length),
      kind,
    };
    this.value = this.textarea.value;
    this.marks = applyEdit(this.marks, start, end, inserted.length, step.insertedMarks);
    this.onEdit(step);
    this.renderSoon();
    return step;
  }

  get selection() {
    return { start: this.textarea.selectionStart, end: this.textarea.selectionEnd };
  }

  select(start, end) {
    this.textarea.setSelectionRange(start, end);
  }

  get readOnly() {
    return this.textarea.readOnly;
  }

  set readOnly(value) {
    this.textarea.readOnly = value;
  }

  /** Show a passage as being rewritten ([start, end) or null). */
  showPending(range) {
    this.pending = range;
    this.renderSoon();
  }

  scrollToEnd() {
    this.textarea.scrollTop = this.textarea.scrollHeight;
    this.syncScroll();
  }

  get nearEnd() {
    const area = this.textarea;
    return area.scrollHeight - area.scrollTop - area.clientHeight < 80;
  }

  // -- the mirror ------------------------------------------------------------------------------

  renderSoon() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  /** Lay the text out again in the mirror: plain runs as text, the model's runs and the pending passage marked. */
  render() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    const text = this.value;
    const cuts = new Set([0, text.length]);
    for (const [start, end] of this.marks) cuts.add(start).add(end);
    if (this.pending) cuts.add(this.pending[0]).add(this.pending[1]);
    const points = [...cuts].filter((n) => n >= 0 && n <= text.length).sort((a, b) => a - b);
    const fragment = document.createDocumentFragment();
    let mark = 0;
    for (let index = 0; index + 1 < points.length; index += 1) {
      const [start, end] = [points[index], points[index + 1]];
      while (mark < this.marks.length && this.marks[mark][1] <= start) mark += 1;
      const model = mark < this.marks.length && this.marks[mark][0] <= start;
      const pending = this.pending && this.pending[0] <= start && end <= this.pending[1];
      const run = text.slice(start, end);
      if (!model && !pending) {
        fragment.append(run);
        continue;
      }
      const element = document.createElement("mark");
      element.className = [model ? "model" : "", pending ? "pending" : ""].join(" ").trim();
      element.textContent = run;
      fragment.append(element);
    }
    fragment.append("\u200b"); // a final empty line takes its height, as in the textarea
    this.mirror.replaceChildren(fragment);
    this.syncScroll();
  }

  syncScroll() {
    this.mirror.scrollTop = this.textarea.scrollTop;
    this.mirror.scrollLeft = this.textarea.scrollLeft;
  }
}
