// Undo and redo over every change to a story: the writer's typing, continuations, rewrites, inserted variants.
//
// A step is one edit, kept both ways so it can be undone and redone:
//   {at, removed, inserted, removedMarks, insertedMarks, kind, lastBefore?, lastAfter?}
// text[at, at + removed.length) gave way to `inserted`; the marks say which characters of each were the model's
// (marks.js); `lastBefore`/`lastAfter` are what the last continuation wrote before and after the step, when the
// step changed it. Typing joins the step before it while the writer keeps typing (or changes what was just typed,
// as an input method does); a pause, a new paragraph or any other kind of step starts a new one. The history is
// bounded (steps and characters) and saved with the story, so it survives a reload.

import { concatMarks } from "./marks.js";

export const MAX_STEPS = 200;
export const MAX_CHARS = 200_000;
const JOIN_TYPING_MS = 1500;

function size(step) {
  return step.removed.length + step.inserted.length + (step.lastBefore?.length || 0) + (step.lastAfter?.length || 0);
}

function isStep(step) {
  return step && Number.isInteger(step.at) && step.at >= 0 && typeof step.removed === "string" &&
    typeof step.inserted === "string" && Array.isArray(step.removedMarks) && Array.isArray(step.insertedMarks);
}

/** Typing `step` folded into `previous` (returns whether it was). */
function join(previous, step) {
  if (previous.kind !== "typing" || step.kind !== "typing" || !(step.time - previous.time <= JOIN_TYPING_MS)) {
    return false; // (a step read back from storage has no time: nothing joins it)
  }
  if (previous.inserted.endsWith("\n")) return false; // a new paragraph: a new step
  const end = previous.at + previous.inserted.length;
  if (step.at >= previous.at && step.at + step.removed.length <= end && !step.removedMarks.length &&
      !step.insertedMarks.length && !previous.insertedMarks.length) {
    // typing on, or an input method changing the characters it has just put down
    const offset = step.at - previous.at;
    previous.inserted = previous.inserted.slice(0, offset) + step.inserted +
      previous.inserted.slice(offset + step.removed.length);
  } else if (!previous.inserted && !step.inserted && step.at + step.removed.length === previous.at) {
    // Backspace after Backspace
    previous.removedMarks = concatMarks(step.removedMarks, step.removed.length, previous.removedMarks);
    previous.removed = step.removed + previous.removed;
    previous.at = step.at;
  } else if (!previous.inserted && !step.inserted && step.at === previous.at) {
    // Delete after Delete
    previous.removedMarks = concatMarks(previous.removedMarks, previous.removed.length, step.removedMarks);
    previous.removed += step.removed;
  } else {
    return false;
  }
  previous.time = step.time;
  return true;
}

export class History {
  constructor({ done = [], undone = [] } = {}) {
    this.done = Array.isArray(done) ? done.filter(isStep) : [];
    this.undone = Array.isArray(undone) ? undone.filter(isStep) : [];
  }

  /** A history read back from storage (anything unreadable: an empty one). */
  static from(json) {
    try {
      const value = JSON.parse(json || "null");
      return new History(value && typeof value === "object" ? value : {});
    } catch {
      return new History();
    }
  }

  get canUndo() {
    return this.done.length > 0;
  }

  get canRedo() {
    return this.undone.length > 0;
  }

  /** Record a step (what was undone can no longer be redone). */
  push(step) {
    if (!step.removed && !step.inserted) return; // (a continuation stopped before its first character)
    const stamped = { ...step, time: step.time ?? Date.now() };
    this.undone = [];
    const previous = this.done[this.done.length - 1];
    if (!previous || !join(previous, stamped)) this.done.push(stamped);
    this.trim();
  }

  /** The step to undo (the caller puts `removed` back in place of `inserted`), or null. */
  undo() {
    const step = this.done.pop();
    if (!step) return null;
    this.undone.push({ ...step, kind: step.kind === "typing" ? "typed" : step.kind });
    return step;
  }

  /** The step to redo (the caller puts `inserted` back in place of `removed`), or null. */
  redo() {
    const step = this.undone.pop();
    if (!step) return null;
    this.done.push(step);
    return step;
  }

  /** Keep at most `steps` steps and `chars` characters, dropping the oldest first (the newest step always stays). */
  trim(steps = MAX_STEPS, chars = MAX_CHARS) {
    while (this.done.length + this.undone.length > steps && this.done.length > 1) this.done.shift();
    while (this.done.length + this.undone.length > steps && this.undone.length) this.undone.shift();
    let total = [...this.done, ...this.undone].reduce((sum, step) => sum + size(step), 0);
    while (total > chars && this.undone.length) total -= size(this.undone.shift());
    while (total > chars && this.done.length > 1) total -= size(this.done.shift());
  }

  toJSON() {
    const plain = ({ time, ...step }) => step;
    return { done: this.done.map(plain), undone: this.undone.map(plain) };
  }
}
