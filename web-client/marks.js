// Who wrote what: the model's text in the story as "marks", sorted, disjoint, non-empty [start, end) ranges of
// UTF-16 offsets (the textarea's own offsets); everything outside them is the writer's. Pure functions.
//
// An edit replaces text[start, end) with new text whose own marks are given (none for what the writer types):
// marks after it shift, marks it cuts keep their parts outside it, so an edit inside the model's text turns the
// edited characters into the writer's and leaves the rest marked.

/** Marks sorted, with touching or overlapping ranges joined and empty ones dropped, within [0, length]. */
export function normalize(marks, length = Infinity) {
  const sorted = marks
    .map(([start, end]) => [Math.max(0, start), Math.min(length, end)])
    .filter(([start, end]) => end > start)
    .sort((a, b) => a[0] - b[0]);
  const joined = [];
  for (const [start, end] of sorted) {
    const last = joined[joined.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else joined.push([start, end]);
  }
  return joined;
}

/** The marks after text[start, end) gave way to `insertedLength` characters marked by `insertedMarks` (relative). */
export function applyEdit(marks, start, end, insertedLength, insertedMarks = []) {
  const shift = insertedLength - (end - start);
  const kept = [];
  for (const [from, to] of marks) {
    if (to <= start) kept.push([from, to]);
    else if (from >= end) kept.push([from + shift, to + shift]);
    else {
      if (from < start) kept.push([from, start]);
      if (to > end) kept.push([end + shift, to + shift]);
    }
  }
  for (const [from, to] of insertedMarks) kept.push([start + from, start + to]);
  return normalize(kept);
}

/** The marks inside [start, end), relative to start. */
export function sliceMarks(marks, start, end) {
  const inside = [];
  for (const [from, to] of marks) {
    if (to > start && from < end) inside.push([Math.max(from, start) - start, Math.min(to, end) - start]);
  }
  return inside;
}

/** How many characters of [start, end) are marked. */
export function markedLength(marks, start, end) {
  return sliceMarks(marks, start, end).reduce((sum, [from, to]) => sum + to - from, 0);
}

/** Marks of two texts put one after the other (`firstLength`: the first text's length). */
export function concatMarks(first, firstLength, second) {
  return normalize([...first, ...second.map(([from, to]) => [from + firstLength, to + firstLength])]);
}

const isHigh = (code) => code >= 0xd800 && code <= 0xdbff;
const isLow = (code) => code >= 0xdc00 && code <= 0xdfff;

/**
 * The one edit that turns `before` into `after`: {start, end, inserted} (end in `before`), or null when they are
 * equal. `caret`, where the caret is in `after` once the edit is made, settles which of equal neighbours changed
 * (typing "a" after "a"); it is trusted only when the text after it is unchanged. A character made of two UTF-16
 * units (an emoji, a rare CJK character) is never cut in two.
 */
export function diffText(before, after, caret = null) {
  if (before === after) return null;
  const shorter = Math.min(before.length, after.length);
  let suffix = -1;
  if (Number.isInteger(caret) && caret >= 0 && caret <= after.length) {
    const tail = after.length - caret;
    if (tail <= before.length && before.endsWith(after.slice(caret))) suffix = tail;
  }
  let prefix = 0;
  if (suffix >= 0) {
    while (prefix < shorter - suffix && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix += 1;
  } else {
    while (prefix < shorter && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix += 1;
    suffix = 0;
    while (suffix < shorter - prefix &&
           before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)) suffix += 1;
  }
  if (prefix > 0 && isHigh(before.charCodeAt(prefix - 1))) prefix -= 1;
  if (suffix > 0 && isLow(before.charCodeAt(before.length - suffix))) suffix -= 1;
  return { start: prefix, end: before.length - suffix, inserted: after.slice(prefix, after.length - suffix) };
}
