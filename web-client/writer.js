// What the last continue wrote, and how Rewrite treats the story after the writer edited it.
//
// `last` is {written}: the text the last continue (or inserted variant) added at the end of
// the story. Rewrite never throws away the writer's own text:
//   - the story still ends with `written` (whatever was edited before it): only that part is
//     replaced, and the request carries the text before it (the server's prefix cache has
//     read exactly that text already, so nothing is re-read);
//   - otherwise the writer changed the written part (or typed after it): everything is kept
//     and a fresh continuation is written at the end.

/**
 * How to rewrite `story` given `last`.
 * Returns {prefix, replaces}: the text to continue from, and whether the written part is
 * dropped (true) or kept (false: `prefix` is the whole story). null when nothing was written yet.
 */
export function planRewrite(story, last) {
  if (!last || typeof last.written !== "string") return null;
  if (story.endsWith(last.written)) {
    return { prefix: story.slice(0, story.length - last.written.length), replaces: true };
  }
  return { prefix: story, replaces: false };
}

/**
 * Where a chosen variant goes: the range of `story` it takes the place of. `replacing` is the written part a rewrite
 * means to replace ("" for a continue): it gives way to the variant if the story still ends with it; otherwise the
 * variant goes at the end and the writer's text stays as it is.
 */
export function variantPlace(story, replacing = "") {
  const start = replacing && story.endsWith(replacing) ? story.length - replacing.length : story.length;
  return { start, end: story.length };
}

/** Characters as a writer counts them: code points, so an emoji or a rare CJK character is one. */
export function countChars(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}
