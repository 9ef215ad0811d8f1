// The memory, author's note, lorebook and banned-phrases panel: what the writer keeps there (in localStorage, per
// story) and the fields it adds to every continue and rewrite request. None of it enters the story:
// the server reads it into the model before the paragraph being continued (DESIGN.md §11).

import { isComplete, makeEntry, parseLorebook, splitKeys } from "./lore.js";

const MAX_ENTRIES = 500; // the server's limit (GET /api/info: steering.lore_entries)
const EMPTY = () => ({ memory: "", note: "", lore: [], ban: "", loopGuard: true });

function readStored(storage, key) {
  try {
    const value = JSON.parse(storage.getItem(key) || "null");
    if (!value || typeof value !== "object") return EMPTY();
    const lore = Array.isArray(value.lore) ? value.lore.filter((e) => e && typeof e === "object") : [];
    return {
      memory: typeof value.memory === "string" ? value.memory : "",
      note: typeof value.note === "string" ? value.note : "",
      lore: lore.map((e) => makeEntry(e.keys, e.text, { secondary: e.secondary, constant: e.constant === true })),
      ban: typeof value.ban === "string" ? value.ban : "",
      loopGuard: value.loopGuard !== false,
    };
  } catch {
    return EMPTY();
  }
}

/** The banned phrases of the field's text: one per line, trimmed, without blanks or repeats. */
export function banList(text) {
  return [...new Set(text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean))];
}

export class Steering {
  /**
   * `root` is the panel (index.html's #steering); `key` the localStorage key of the story's steering; `t(key,
   * values)` gives the page's words in its language; `onChange()` follows every edit; `notify(key, values, kind)`
   * reports an import on the status line.
   */
  constructor(root, storage, { key, t, onChange = () => {}, notify = () => {} }) {
    this.root = root;
    this.storage = storage;
    this.t = t;
    this.onChange = onChange;
    this.notify = notify;
    const $ = (selector) => root.querySelector(selector);
    this.memory = $("#steering-memory");
    this.note = $("#steering-note");
    this.ban = $("#steering-ban");
    this.loopGuard = $("#steering-loop-guard");
    this.list = $("#lore-entries");
    for (const [input, name] of [[this.memory, "memory"], [this.note, "note"], [this.ban, "ban"]]) {
      input.addEventListener("input", () => {
        input.removeAttribute("aria-invalid");
        this.data[name] = input.value;
        this.changed();
      });
    }
    this.loopGuard.addEventListener("change", () => {
      this.data.loopGuard = this.loopGuard.checked;
      this.changed();
    });
    $("#lore-add").addEventListener("click", () => this.addEntry());
    const file = $("#lore-import");
    file.addEventListener("change", async () => {
      if (file.files.length) await this.importFile(file.files[0]);
      file.value = ""; // the same file can be imported again
    });
    this.load(key);
  }

  /** Show the steering stored under `key` (another story's). */
  load(key) {
    this.key = key;
    this.data = readStored(this.storage, key);
    this.memory.value = this.data.memory;
    this.note.value = this.data.note;
    this.ban.value = this.data.ban;
    this.loopGuard.checked = this.data.loopGuard;
    for (const field of [this.memory, this.note, this.ban, this.list]) field.removeAttribute("aria-invalid");
    this.render();
  }

  /** Whether any of it would go with a request. */
  get inUse() {
    return Object.keys(this.request()).length > 0;
  }

  /** The fields for POST /api/continue: only those the writer filled in. */
  request() {
    const body = {};
    if (this.data.memory.trim()) body.memory = this.data.memory;
    if (this.data.note.trim()) body.note = this.data.note;
    const lore = this.data.lore.filter(isComplete).map((entry) => ({ ...entry, text: entry.text.trim() }));
    if (lore.length) body.lore = lore;
    const ban = banList(this.data.ban);
    if (ban.length) body.ban = ban;
    if (!this.data.loopGuard) body.loop_guard = false;
    return body;
  }

  /** Mark the field an error names ("memory", "lore", "ban", ...) and open its section; whether one was found. */
  markInvalid(param) {
    const field = { memory: this.memory, note: this.note, lore: this.list, lore_scan: this.list, ban: this.ban,
      loop_guard: this.loopGuard }[param];
    if (!field) return false;
    field.setAttribute("aria-invalid", "true");
    const section = field.closest("details");
    if (section) section.open = true;
    return true;
  }

  addEntry() {
    this.data.lore.push({ keys: [], text: "" });
    this.changed();
    this.render();
    this.list.lastElementChild?.querySelector(".chip-input")?.focus();
  }

  async importFile(file) {
    let entries;
    try {
      entries = parseLorebook(await file.text());
      if (this.data.lore.length + entries.length > MAX_ENTRIES) {
        throw new Error(this.t("loreTooMany", { max: MAX_ENTRIES }));
      }
    } catch (error) {
      const message = error.key ? this.t(error.key, error.values) : error.message;
      this.notify("loreImportFailed", { name: file.name, message }, "error");
      return;
    }
    this.data.lore.push(...entries);
    this.root.querySelector("#lore-section").open = true;
    this.changed();
    this.render();
    this.notify("loreImported", { n: entries.length, name: file.name }, "ok");
  }

  changed() {
    this.list.removeAttribute("aria-invalid");
    try {
      this.storage.setItem(this.key, JSON.stringify(this.data));
    } catch {
      // storage full or disabled: it still goes with this page's requests
    }
    this.renderCounts();
    this.onChange();
  }

  // -- drawing ---------------------------------------------------------------------------------

  /** Draw the lorebook's entries (again, in the page's language). */
  render() {
    this.list.replaceChildren(...this.data.lore.map((entry, index) => this.entryElement(entry, index)));
    this.root.querySelector("#lore-empty").hidden = this.data.lore.length > 0;
    this.renderCounts();
  }

  renderCounts() {
    const lore = this.data.lore.length;
    this.root.querySelector("#lore-count").textContent = lore ? `(${lore})` : "";
    const bans = banList(this.data.ban).length;
    this.root.querySelector("#ban-count").textContent = bans ? `(${bans})` : "";
  }

  entryElement(entry, index) {
    const item = document.createElement("li");
    item.className = "lore-entry";
    item.dataset.index = String(index);
    const chips = document.createElement("div");
    chips.className = "chips";
    const keyInput = document.createElement("input");
    keyInput.className = "chip-input";
    keyInput.type = "text";
    keyInput.placeholder = this.t("loreKeyPlaceholder");
    keyInput.setAttribute("aria-label", this.t("loreKeys"));
    keyInput.spellcheck = false;
    chips.append(keyInput);
    const text = document.createElement("textarea");
    text.className = "lore-text";
    text.rows = 3;
    text.value = entry.text;
    text.placeholder = this.t("loreTextPlaceholder");
    text.setAttribute("aria-label", this.t("loreText"));
    const foot = document.createElement("div");
    foot.className = "lore-foot";
    const always = document.createElement("label");
    always.className = "check";
    const alwaysBox = document.createElement("input");
    alwaysBox.type = "checkbox";
    alwaysBox.className = "lore-always";
    alwaysBox.checked = Boolean(entry.constant);
    always.append(alwaysBox, document.createTextNode(this.t("loreAlways")));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "plain lore-remove";
    remove.textContent = this.t("loreRemove");
    foot.append(always, remove);
    const incomplete = document.createElement("p");
    incomplete.className = "lore-incomplete";
    incomplete.textContent = this.t("loreIncomplete");
    item.append(chips, text);
    if (entry.secondary?.length) {
      const secondary = document.createElement("p");
      secondary.className = "lore-secondary";
      secondary.textContent = this.t("loreSecondary", { keys: entry.secondary.join(", ") });
      item.append(secondary);
    }
    item.append(incomplete, foot);

    const update = () => {
      item.classList.toggle("incomplete", !isComplete(entry));
      this.changed();
    };
    const drawChips = () => {
      for (const chip of chips.querySelectorAll(".chip")) chip.remove();
      for (const key of entry.keys) chips.insertBefore(this.chip(key, () => {
        entry.keys = entry.keys.filter((k) => k !== key);
        drawChips();
        update();
        keyInput.focus();
      }), keyInput);
    };
    const addKeys = (value) => {
      const keys = splitKeys(value).filter((key) => !entry.keys.includes(key));
      if (!keys.length) return;
      entry.keys = [...entry.keys, ...keys];
      drawChips();
      update();
    };
    keyInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        addKeys(keyInput.value);
        keyInput.value = "";
      } else if (event.key === "Backspace" && !keyInput.value && entry.keys.length) {
        entry.keys = entry.keys.slice(0, -1);
        drawChips();
        update();
      }
    });
    keyInput.addEventListener("input", () => {
      const parts = keyInput.value.split(/[,，、|]/);
      if (parts.length > 1) {
        addKeys(parts.slice(0, -1).join(","));
        keyInput.value = parts[parts.length - 1];
      }
    });
    keyInput.addEventListener("change", () => {
      addKeys(keyInput.value);
      keyInput.value = "";
    });
    text.addEventListener("input", () => {
      entry.text = text.value;
      update();
    });
    alwaysBox.addEventListener("change", () => {
      if (alwaysBox.checked) entry.constant = true;
      else delete entry.constant;
      update();
    });
    remove.addEventListener("click", () => {
      this.data.lore = this.data.lore.filter((e) => e !== entry);
      this.changed();
      this.render();
    });
    drawChips();
    item.classList.toggle("incomplete", !isComplete(entry));
    return item;
  }

  chip(key, onRemove) {
    const chip = document.createElement("span");
    chip.className = "chip";
    const label = document.createElement("span");
    label.textContent = key;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", this.t("loreRemoveKey", { key }));
    remove.addEventListener("click", onRemove);
    chip.append(label, remove);
    return chip;
  }
}
