// The page: the editor (editor.js) with the model's text marked and undo/redo over every change (history.js), the
// buttons and shortcuts, the stories (stories.js), autosave, the connection and status lines in the page's language,
// the language switch and the side panels (stories; memory and lore: steering.js; settings: settings.js). Continuing
// and rewriting (streaming into the editor or the variant cards) are in writing.js.

import { getInfo, isHealthy } from "./api.js";
import { Editor } from "./editor.js";
import { History, MAX_CHARS, MAX_STEPS } from "./history.js";
import { errorText, pickLanguage, t, translatePage } from "./i18n.js";
import { Settings } from "./settings.js";
import { Steering } from "./steering.js";
import { decodeText, fileName, Stories, StoryPanel, storyKeys, toMarkdown } from "./stories.js";
import { VariantCards } from "./variants.js";
import { Writing } from "./writing.js";
import { countChars } from "./writer.js";

const KEYS = { language: "ai-writer.language", marks: "ai-writer.marks" };
const HEALTH_EVERY_MS = 15000;
const SAVE_AFTER_MS = 400;
const PANELS = ["stories", "steering", "settings"];

const $ = (id) => document.getElementById(id);

const state = {
  language: pickLanguage(navigator.language, readStorage(KEYS.language)),
  status: { key: "connecting", values: {}, kind: "info" },
  connection: { state: "connecting", key: "connecting", values: {} },
  info: {}, // GET /api/info: defaults, ranges, presets, limits
  history: new History(),
  saveTimer: 0,
};

const words = (key, values) => t(state.language, key, values);
const stories = new Stories(localStorage);
const editor = new Editor($("editor"), $("editor-marks"), { onEdit: edited, onUndo: undo, onRedo: redo });
const settings = new Settings($("settings-form"), localStorage, {
  key: storyKeys(stories.currentId).settings,
  onChange: (name) => (name === "token" ? connect() : null),
  language: () => state.language,
  t: words,
});
const steering = new Steering($("steering"), localStorage, {
  key: storyKeys(stories.currentId).steering,
  t: words,
  onChange: showSteeringInUse,
  notify: setStatus,
});
const storyPanel = new StoryPanel($("stories"), stories, { t: words, onSelect: switchStory });
const cards = new VariantCards($("variants"), $("variant-cards"), (index, text) => writing.pick(index, text));
const writing = new Writing({
  editor, cards, settings, steering, words,
  history: () => state.history,
  info: () => state.info,
  setStatus, showError, save: saveStory, changed: showUndo,
  running: (busy) => {
    $("continue").disabled = $("rewrite").disabled = busy;
    $("stop").disabled = !busy;
    $("setting-token").removeAttribute("aria-invalid");
    showUndo();
  },
});

// -- storage --------------------------------------------------------------------------------------

function readStorage(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeStorage(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage full or disabled: the choice still holds for this page
  }
}

/** Save the story, its marks, last continuation and history now (a history too large for the storage is cut). */
function saveStory() {
  clearTimeout(state.saveTimer);
  state.saveTimer = 0;
  const id = stories.currentId;
  let saved = stories.write(id, { text: editor.text, marks: editor.marks, last: writing.last });
  const key = storyKeys(id).history;
  let kept = false;
  for (const chars of [MAX_CHARS, MAX_CHARS / 10, 0]) {
    state.history.trim(MAX_STEPS, chars);
    if ((kept = stories.set(key, JSON.stringify(state.history)))) break;
  }
  saved = saved && kept;
  if (!saved) setStatus("saveFailed", {}, "error");
  storyPanel.render();
}

function saveSoon() {
  if (!state.saveTimer) state.saveTimer = setTimeout(saveStory, SAVE_AFTER_MS);
}

// -- what the page shows ---------------------------------------------------------------------------

function setStatus(key, values = {}, kind = "info", detail = null) {
  state.status = { key, values, kind, detail };
  renderStatus();
}

/** An API error on the status line, in the page's language (the server's own words in its tooltip). */
function setError(error, sent = {}) {
  state.status = { error, sent, kind: "error", detail: error.message };
  renderStatus();
}

function renderStatus() {
  const status = $("status");
  const { key, values, kind, detail, error, sent } = state.status;
  const limits = { ...(state.info.steering || {}), stop: state.info.stop };
  status.textContent = error ? errorText(state.language, error, { ranges: state.info.ranges, limits, sent })
    : t(state.language, key, values);
  status.dataset.kind = kind;
  status.title = detail || "";
}

function setConnection(connectionState, key, values = {}) {
  state.connection = { state: connectionState, key, values };
  renderConnection();
}

function renderConnection() {
  $("connection").dataset.state = state.connection.state;
  $("connection-text").textContent = t(state.language, state.connection.key, state.connection.values);
}

function updateCount() {
  $("char-count").textContent = t(state.language, "chars", { n: countChars(editor.text) });
}

/** The rewrite button says how much of the text is selected (what it would rewrite). */
function updateScope() {
  const { start, end } = editor.selection;
  const scope = $("rewrite-scope");
  scope.hidden = end <= start;
  scope.textContent = end > start ? t(state.language, "rewriteScope", { n: countChars(editor.text.slice(start, end)) })
    : "";
}

function showUndo() {
  $("undo").disabled = writing.busy || !state.history.canUndo;
  $("redo").disabled = writing.busy || !state.history.canRedo;
}

function setLanguage(language) {
  state.language = language;
  translatePage(document, language);
  cards.retitle((n) => t(language, "variant", { n }), t(language, "original"));
  steering.render();
  settings.renderPresets();
  storyPanel.render();
  renderStatus();
  renderConnection();
  updateCount();
  updateScope();
}

function showMarks(shown) {
  $("editor-wrap").classList.toggle("show-marks", shown);
  $("marks-toggle").setAttribute("aria-pressed", String(shown));
}

/** Open or close a side panel; on a narrow screen only one is open at a time. */
function openPanel(name, open) {
  if (open && !window.matchMedia("(min-width: 960px)").matches) {
    for (const other of PANELS) if (other !== name) openPanel(other, false);
  }
  document.body.classList.toggle(`${name}-open`, open);
  $(`${name}-toggle`).setAttribute("aria-expanded", String(open));
}

function togglePanel(name) {
  const open = !document.body.classList.contains(`${name}-open`);
  if (open && name === "stories") saveStory(); // the list shows the titles as they are now
  openPanel(name, open);
}

function showSteeringInUse() {
  $("steering-toggle").dataset.inUse = String(steering.inUse);
}

// -- the server ---------------------------------------------------------------------------------

async function connect() {
  setConnection("connecting", "connecting");
  try {
    const info = await getInfo(settings.token);
    state.info = info;
    settings.applyInfo(info);
    setConnection("ok", "connected", { model: [info.model, info.backend].filter(Boolean).join(" · ") });
    if (state.status.key === "connecting" || state.status.kind === "error") setStatus("ready");
  } catch (error) {
    showError(error);
  }
}

async function watchHealth() {
  const healthy = await isHealthy();
  if (!healthy) setConnection("offline", "offline");
  else if (state.connection.state === "offline") connect();
}

/** Say what went wrong, mark the field at fault and open its panel. `sent`: the request's values by name. */
function showError(error, sent = {}) {
  if (error.status === 401) setConnection("auth", "needToken");
  else if (error.type === "network_error") setConnection("offline", "offline");
  setError(error, sent);
  if (error.param && settings.markInvalid(error.param)) openPanel("settings", true);
  if (error.param && steering.markInvalid(error.param)) openPanel("steering", true);
  if (error.status === 401) {
    openPanel("settings", true);
    $("setting-token").setAttribute("aria-invalid", "true");
  }
}

// -- undo and redo --------------------------------------------------------------------------------

/** Every change in the editor: the writer's typing is a step of the history (the page records its own). */
function edited(step) {
  writing.follow(step);
  if (step.kind === "typing") {
    state.history.push(step);
    saveSoon();
  } else if (step.kind === "stream") {
    saveSoon();
  }
  updateCount();
  updateScope();
  showUndo();
}

function undo() {
  if (writing.busy) return;
  const step = state.history.undo();
  if (!step) {
    setStatus("nothingToUndo");
    return;
  }
  editor.replace(step.at, step.at + step.inserted.length, step.removed, step.removedMarks, "undo", "end");
  if ("lastBefore" in step) writing.last = step.lastBefore === null ? null : { written: step.lastBefore };
  saveStory();
  showUndo();
  setStatus("undone");
}

function redo() {
  if (writing.busy) return;
  const step = state.history.redo();
  if (!step) {
    setStatus("nothingToRedo");
    return;
  }
  editor.replace(step.at, step.at + step.removed.length, step.inserted, step.insertedMarks, "redo", "end");
  if ("lastAfter" in step) writing.last = step.lastAfter === null ? null : { written: step.lastAfter };
  saveStory();
  showUndo();
  setStatus("redone");
}

// -- stories --------------------------------------------------------------------------------------

/** Show story `id`: its text and marks, history, settings and steering. */
function openStory(id) {
  stories.select(id);
  const data = stories.read(id);
  writing.reset(data.last);
  editor.load(data.text, data.marks);
  state.history = History.from(stories.get(storyKeys(id).history));
  const keys = storyKeys(id);
  settings.load(keys.settings);
  steering.load(keys.steering);
  showSteeringInUse();
  updateCount();
  updateScope();
  showUndo();
  storyPanel.render();
}

function switchStory(id) {
  if (id === stories.currentId) return;
  writing.abort();
  saveStory();
  openStory(id);
}

function newStory() {
  writing.abort();
  saveStory();
  openStory(stories.create().id);
  editor.textarea.focus();
}

function deleteStory() {
  const story = stories.current;
  const title = story.title || t(state.language, "untitled");
  if (!window.confirm(t(state.language, "confirmDelete", { title }))) return;
  writing.abort();
  clearTimeout(state.saveTimer);
  state.saveTimer = 0;
  openStory(stories.remove(story.id).id);
  setStatus("storyDeleted", { title }, "ok");
}

async function importStory(file) {
  let text;
  try {
    text = decodeText(await file.arrayBuffer()).replace(/\r\n?/g, "\n");
  } catch (error) {
    setStatus("storyImportFailed", { name: file.name, message: error.message }, "error");
    return;
  }
  writing.abort();
  saveStory();
  openStory(stories.create({ title: file.name.replace(/\.[^.]*$/, ""), text }).id);
  setStatus("storyImported", { name: file.name, n: countChars(text) }, "ok");
}

function download(name, text, type) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function exportStory(format) {
  const title = stories.current.title;
  if (format === "md") download(fileName(title, "md"), toMarkdown(title, editor.text), "text/markdown");
  else download(fileName(title, "txt"), editor.text, "text/plain");
}

// -- wiring ------------------------------------------------------------------------------------

/** Whether the writer is typing in a field of a panel (where Ctrl+Z is that field's own). */
function inField(target) {
  return target !== editor.textarea && target instanceof Element && target.matches("input, textarea, select");
}

function onKey(event) {
  if (event.key === "Escape" && writing.busy) {
    event.preventDefault();
    writing.stop();
    return;
  }
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && !event.altKey && (key === "z" || key === "y") && !event.defaultPrevented &&
      !inField(event.target)) {
    event.preventDefault(); // (the editor answers its own keys: these come from a button or the page)
    if (key === "y" || event.shiftKey) redo();
    else undo();
    return;
  }
  if (!event.altKey || event.ctrlKey || event.metaKey) return;
  const action = { KeyQ: "continue", KeyE: "rewrite" }[event.code];
  if (!action) return;
  event.preventDefault();
  writing.start(action);
}

function main() {
  openStory(stories.currentId);
  showMarks(readStorage(KEYS.marks) !== "off");
  setLanguage(state.language);
  openPanel("settings", window.matchMedia("(min-width: 960px)").matches);
  $("continue").addEventListener("click", () => writing.start("continue"));
  $("rewrite").addEventListener("click", () => writing.start("rewrite"));
  $("stop").addEventListener("click", () => writing.stop());
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("download").addEventListener("click", () => exportStory("txt"));
  $("variants-close").addEventListener("click", () => writing.dismiss());
  $("marks-toggle").addEventListener("click", () => {
    const shown = $("marks-toggle").getAttribute("aria-pressed") !== "true";
    showMarks(shown);
    writeStorage(KEYS.marks, shown ? "on" : "off");
  });
  $("language").addEventListener("click", () => {
    const language = state.language === "zh" ? "en" : "zh";
    writeStorage(KEYS.language, language);
    setLanguage(language);
  });
  for (const name of PANELS) $(`${name}-toggle`).addEventListener("click", () => togglePanel(name));
  $("settings-reset").addEventListener("click", () => settings.reset());
  $("story-new").addEventListener("click", newStory);
  $("story-delete").addEventListener("click", deleteStory);
  $("story-export-txt").addEventListener("click", () => exportStory("txt"));
  $("story-export-md").addEventListener("click", () => exportStory("md"));
  $("story-title").addEventListener("input", () => {
    stories.rename(stories.currentId, $("story-title").value, editor.text);
    storyPanel.render();
  });
  const file = $("story-import");
  file.addEventListener("change", async () => {
    if (file.files.length) await importStory(file.files[0]);
    file.value = ""; // the same file can be imported again
  });
  for (const name of ["select", "keyup", "mouseup", "focus"]) editor.textarea.addEventListener(name, updateScope);
  document.addEventListener("selectionchange", updateScope);
  window.addEventListener("keydown", onKey);
  window.addEventListener("pagehide", saveStory);
  connect();
  setInterval(watchHealth, HEALTH_EVERY_MS);
}

main();
