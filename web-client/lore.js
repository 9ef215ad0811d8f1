// Lorebook entries as the page keeps and sends them ({keys, text, secondary?, constant?}), and reading
// world-info files: ai-writer's own JSON or plain lines, KoboldAI's and SillyTavern's world info, and the
// character-card book (the shapes ai_writer/story/lorebook.py reads; the server checks them again).

const KEY_SEPARATORS = /[,，、|]/;
export const ALWAYS = "*";

/** What is wrong with a lorebook file: an English message, and the page's word `key` with its `values`. */
export class LoreError extends Error {
  constructor(message, key, values = {}) {
    super(message);
    this.key = key;
    this.values = values;
  }
}

/** Keys from a list or a "a, b、c" string: trimmed, without blanks or repeats. */
export function splitKeys(keys) {
  const list = typeof keys === "string" ? keys.split(KEY_SEPARATORS) : Array.isArray(keys) ? keys : [];
  return [...new Set(list.filter((key) => typeof key === "string").map((key) => key.trim()).filter(Boolean))];
}

/** An entry in the page's shape; `*` among the keys makes it always active. */
export function makeEntry(keys, text, { secondary = [], constant = false } = {}) {
  let list = splitKeys(keys);
  if (list.includes(ALWAYS)) {
    list = list.filter((key) => key !== ALWAYS);
    constant = true;
  }
  const entry = { keys: list, text: typeof text === "string" ? text.trim() : "" };
  const also = splitKeys(secondary);
  if (also.length) entry.secondary = also;
  if (constant) entry.constant = true;
  return entry;
}

/** Whether the server can use the entry: some text, and a key unless it is always active. */
export function isComplete(entry) {
  return Boolean(entry.text && entry.text.trim() && (entry.constant || entry.keys.length));
}

function first(record, ...names) {
  for (const name of names) if (record[name] !== undefined && record[name] !== null) return record[name];
  return undefined;
}

/** The entries of a parsed JSON world-info file (or a list of entries). Throws an Error saying what is wrong. */
export function entriesFromJson(records) {
  if (records && typeof records === "object" && !Array.isArray(records)) {
    const paths = [["entries"], ["worldinfo"], ["character_book", "entries"], ["data", "character_book", "entries"],
      ["lore"]];
    const path = paths.find((names) => names.reduce((found, name) => found?.[name], records) !== undefined);
    if (!path) throw new LoreError("no lorebook entries found (expected 'entries', 'worldinfo' or 'character_book')",
      "loreNoEntries");
    records = path.reduce((found, name) => found[name], records);
  }
  if (records && typeof records === "object" && !Array.isArray(records)) {
    records = Object.values(records); // SillyTavern: {"0": {...}, "1": {...}}
  }
  if (!Array.isArray(records)) throw new LoreError("the lorebook entries are not a list", "loreNotList");
  const entries = [];
  records.forEach((record, index) => {
    if (!record || typeof record !== "object" || Array.isArray(record)) {
      throw new LoreError(`entry ${index + 1} is not an object`, "loreEntryNotObject", { n: index + 1 });
    }
    if (record.disable === true || record.enabled === false || record.widisabled === true) return;
    const secondary = record.selective === false ? [] : first(record, "secondary", "secondary_keys", "keysecondary",
      "secondary keys") || [];
    const entry = makeEntry(first(record, "keys", "key") || [], first(record, "text", "content", "entry") || "",
      { secondary, constant: record.constant === true });
    if (!isComplete(entry)) {
      throw new LoreError(`entry ${index + 1} has no ${entry.text ? "keys" : "text"}`,
        entry.text ? "loreEntryNoKeys" : "loreEntryNoText", { n: index + 1 });
    }
    entries.push(entry);
  });
  return entries;
}

/** A lorebook file's text: JSON in any of the shapes above, or plain lines `key, key: text` (`#` comments). */
export function parseLorebook(text) {
  const body = text.replace(/^\uFEFF/, "");
  if (/^\s*[[{]/.test(body)) {
    let records;
    try {
      records = JSON.parse(body);
    } catch (error) {
      throw new LoreError(`not valid JSON (${error.message})`, "loreBadJson", { detail: error.message });
    }
    return entriesFromJson(records);
  }
  const entries = [];
  body.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim() || line.trim().startsWith("#")) return;
    const match = /^\s*([^:：]*)[:：](.*)$/.exec(line);
    if (!match) {
      throw new LoreError(`line ${index + 1}: write it as 'key, key: text'`, "loreLineFormat", { n: index + 1 });
    }
    const entry = makeEntry(match[1], match[2]);
    if (!isComplete(entry)) {
      throw new LoreError(`line ${index + 1} has no ${entry.text ? "keys" : "text"}`,
        entry.text ? "loreLineNoKeys" : "loreLineNoText", { n: index + 1 });
    }
    entries.push(entry);
  });
  return entries;
}
