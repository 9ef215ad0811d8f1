// The stories kept in this browser: a list (new, rename, delete, switch), each story's text with its marks and its
// last continuation, its undo history, its settings and its memory/lore/bans, each under its own localStorage key;
// exporting as .txt and .md and importing a .txt. The single story of earlier versions becomes the first one.

const INDEX_KEY = "ai-writer.stories";
/** Where the page kept its one story before there were several (moved into the first story, then removed). */
export const OLD_KEYS = { story: "ai-writer.story", last: "ai-writer.last", settings: "ai-writer.settings",
  steering: "ai-writer.steering" };
const TITLE_CHARS = 24;

/** The localStorage keys of one story's parts. */
export function storyKeys(id) {
  return { story: `ai-writer.story.${id}`, history: `ai-writer.history.${id}`, settings: `ai-writer.settings.${id}`,
    steering: `ai-writer.steering.${id}` };
}

/** A title from the story's first line (empty when there is no text). */
export function titleFrom(text) {
  const line = text.trim().split("\n")[0].trim();
  return [...line].slice(0, TITLE_CHARS).join("");
}

/** The story as Markdown: its title as a heading, then one paragraph a line (blank lines between them). */
export function toMarkdown(title, text) {
  const paragraphs = text.split("\n").map((line) => line.trim()).filter(Boolean);
  return `${title ? `# ${title}\n\n` : ""}${paragraphs.join("\n\n")}\n`;
}

/** A file name for `title` and extension (the characters file systems refuse replaced). */
export function fileName(title, extension) {
  const name = title.replace(/[\\/:*?"<>|\s]+/g, " ").trim().slice(0, 40);
  return `${name || "ai-writer"}.${extension}`;
}

/** A text file's bytes as text: UTF-8 or UTF-16 (by its BOM), else UTF-8, else GB18030 (GBK, GB2312). */
export function decodeText(bytes) {
  const data = new Uint8Array(bytes);
  if (data[0] === 0xff && data[1] === 0xfe) return new TextDecoder("utf-16le").decode(data.subarray(2));
  if (data[0] === 0xfe && data[1] === 0xff) return new TextDecoder("utf-16be").decode(data.subarray(2));
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(data).replace(/^\uFEFF/, "");
  } catch {
    return new TextDecoder("gb18030").decode(data);
  }
}

function newId() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

function parse(json, fallback) {
  try {
    const value = JSON.parse(json || "null");
    return value && typeof value === "object" ? value : fallback;
  } catch {
    return fallback;
  }
}

export class Stories {
  /** The stories in `storage`; the first visit after an update moves the old single story in. */
  constructor(storage) {
    this.storage = storage;
    const index = parse(this.get(INDEX_KEY), null);
    const list = Array.isArray(index?.list) ? index.list.filter((s) => s && typeof s.id === "string") : [];
    this.list = list.map(({ id, title, named }) => ({ id, title: String(title || ""), named: named === true }));
    this.currentId = index?.current;
    if (!this.list.length) this.migrate();
    if (!this.find(this.currentId)) this.currentId = this.list[0].id;
  }

  get current() {
    return this.find(this.currentId);
  }

  find(id) {
    return this.list.find((story) => story.id === id) || null;
  }

  /** The earlier single story (if any) as the first story, with its last continuation marked as the model's. */
  migrate() {
    const text = this.get(OLD_KEYS.story) || "";
    const last = parse(this.get(OLD_KEYS.last), null);
    const written = typeof last?.written === "string" ? last.written : "";
    const marks = written && text.endsWith(written) ? [[text.length - written.length, text.length]] : [];
    const story = this.create({ text, marks, last: written ? { written } : null });
    this.currentId = story.id;
    const keys = storyKeys(story.id);
    for (const part of ["settings", "steering"]) {
      const value = this.get(OLD_KEYS[part]);
      if (value !== null) this.set(keys[part], value);
    }
    if (this.set(INDEX_KEY, JSON.stringify(this.index()))) {
      for (const key of Object.values(OLD_KEYS)) this.forget(key);
    }
  }

  /** A new story at the end of the list (not yet the current one). */
  create({ title = "", text = "", marks = [], last = null } = {}) {
    const story = { id: newId(), title: title || titleFrom(text), named: Boolean(title) };
    this.list.push(story);
    this.write(story.id, { text, marks, last });
    this.saveIndex();
    return story;
  }

  select(id) {
    if (!this.find(id)) return;
    this.currentId = id;
    this.saveIndex();
  }

  /** A title given by the writer; an empty one goes back to the first line. */
  rename(id, title, text) {
    const story = this.find(id);
    if (!story) return;
    story.named = Boolean(title.trim());
    story.title = story.named ? title.trim() : titleFrom(text);
    this.saveIndex();
  }

  /** Delete a story and all its parts; returns the story to show next (a new empty one if none is left). */
  remove(id) {
    const at = this.list.findIndex((story) => story.id === id);
    if (at < 0) return this.current;
    this.list.splice(at, 1);
    for (const key of Object.values(storyKeys(id))) this.forget(key);
    if (!this.list.length) this.create();
    if (this.currentId === id) this.currentId = this.list[Math.min(at, this.list.length - 1)].id;
    this.saveIndex();
    return this.current;
  }

  /** A story's text, marks and last continuation. */
  read(id) {
    const data = parse(this.get(storyKeys(id).story), {});
    return {
      text: typeof data.text === "string" ? data.text : "",
      marks: Array.isArray(data.marks) ? data.marks.filter((m) => Array.isArray(m) && m.length === 2) : [],
      last: data.last && typeof data.last.written === "string" ? data.last : null,
    };
  }

  /** Save a story's text (its title follows its first line until the writer names it); false when storage failed. */
  write(id, { text, marks, last }) {
    const story = this.find(id);
    if (story && !story.named && story.title !== titleFrom(text)) {
      story.title = titleFrom(text);
      this.saveIndex();
    }
    return this.set(storyKeys(id).story, JSON.stringify({ text, marks, last }));
  }

  index() {
    return { current: this.currentId, list: this.list };
  }

  saveIndex() {
    this.set(INDEX_KEY, JSON.stringify(this.index()));
  }

  get(key) {
    try {
      return this.storage.getItem(key);
    } catch {
      return null;
    }
  }

  forget(key) {
    try {
      this.storage.removeItem(key);
    } catch {
      // storage disabled: nothing was kept either
    }
  }

  /** Whether the value was stored (storage may be full or disabled). */
  set(key, value) {
    try {
      this.storage.setItem(key, value);
      return true;
    } catch {
      return false;
    }
  }
}

/** The stories panel: the current story's title, the list to switch by, and its buttons (wired by the page). */
export class StoryPanel {
  constructor(root, stories, { t, onSelect }) {
    this.root = root;
    this.stories = stories;
    this.t = t;
    this.onSelect = onSelect;
    this.list = root.querySelector("#story-list");
    this.title = root.querySelector("#story-title");
  }

  /** Draw the list again (titles change as the first line does). */
  render() {
    const current = this.stories.current;
    this.list.replaceChildren(...this.stories.list.map((story) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "story";
      button.dataset.id = story.id;
      button.textContent = story.title || this.t("untitled");
      if (story.id === current.id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => this.onSelect(story.id));
      item.append(button);
      return item;
    }));
    if (document.activeElement !== this.title) this.title.value = current.named ? current.title : "";
    this.title.placeholder = current.title || this.t("untitled");
    document.getElementById("story-name").textContent = current.title || this.t("untitled");
  }
}
