// The page: the editor, the buttons and shortcuts, streaming into the editor or the variant cards,
// autosave, download, the connection and status lines, the language switch.

import { ApiError, getInfo, isHealthy, streamContinue } from "./api.js";
import { pickLanguage, t, translatePage } from "./i18n.js";
import { Settings } from "./settings.js";
import { VariantCards } from "./variants.js";
import { countChars, insertVariant, planRewrite } from "./writer.js";

const KEYS = { story: "ai-writer.story", last: "ai-writer.last", language: "ai-writer.language" };
const HEALTH_EVERY_MS = 15000;
const SAVE_WHILE_STREAMING_MS = 500;

const $ = (id) => document.getElementById(id);
const editor = $("editor");
const buttons = { continue: $("continue"), rewrite: $("rewrite"), stop: $("stop") };

const state = {
  language: pickLanguage(navigator.language, readStorage(KEYS.language)),
  status: { key: "connecting", values: {}, kind: "info" },
  connection: { state: "connecting", key: "connecting", values: {} },
  last: readLast(), // {written}: what the last continue added at the end of the story
  running: null, // the AbortController of the request in flight
  pending: null, // {replacing}: the written part that the variant cards would replace
  saveTimer: 0,
};

const settings = new Settings($("settings-form"), localStorage, (name) => {
  if (name === "token") connect();
});
const cards = new VariantCards($("variants"), $("variant-cards"), pickVariant);

// -- storage --------------------------------------------------------------------------------------

function readStorage(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function readLast() {
  try {
    const last = JSON.parse(readStorage(KEYS.last) || "null");
    return last && typeof last.written === "string" ? last : null;
  } catch {
    return null;
  }
}

function saveStory() {
  clearTimeout(state.saveTimer);
  state.saveTimer = 0;
  try {
    localStorage.setItem(KEYS.story, editor.value);
    localStorage.setItem(KEYS.last, JSON.stringify(state.last));
  } catch (error) {
    setStatus("saveFailed", { message: error.message }, "error");
  }
}

function saveSoon() {
  if (!state.saveTimer) state.saveTimer = setTimeout(saveStory, SAVE_WHILE_STREAMING_MS);
}

// -- what the page shows ---------------------------------------------------------------------------

function setStatus(key, values = {}, kind = "info", detail = null) {
  state.status = { key, values, kind, detail };
  renderStatus();
}

function renderStatus() {
  const status = $("status");
  const { key, values, kind, detail } = state.status;
  status.textContent = t(state.language, key, values);
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
  $("char-count").textContent = t(state.language, "chars", { n: countChars(editor.value) });
}

function setLanguage(language) {
  state.language = language;
  translatePage(document, language);
  cards.retitle((n) => t(language, "variant", { n }));
  renderStatus();
  renderConnection();
  updateCount();
}

function setRunning(controller) {
  state.running = controller;
  buttons.continue.disabled = buttons.rewrite.disabled = Boolean(controller);
  buttons.stop.disabled = !controller;
}

function openSettings(open) {
  document.body.classList.toggle("settings-open", open);
  $("settings-toggle").setAttribute("aria-expanded", String(open));
}

// -- the server ---------------------------------------------------------------------------------

async function connect() {
  setConnection("connecting", "connecting");
  try {
    const info = await getInfo(settings.token);
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

function showError(error) {
  if (error.status === 401) setConnection("auth", "needToken");
  else if (error.status === 0) setConnection("offline", "offline");
  const key = error.status === 0 && error.type === "network_error" ? "unreachable"
    : error.type === "stream_error" ? "streamBroken" : "serverError";
  setStatus(key, { message: error.message }, "error");
  if (error.param && settings.markInvalid(error.param)) openSettings(true);
  if (error.status === 401) {
    openSettings(true);
    $("setting-token").setAttribute("aria-invalid", "true");
  }
}

// -- continue and rewrite -----------------------------------------------------------------------

function start(mode) {
  if (state.running) return;
  const story = editor.value;
  let prefix = story;
  let replacing = "";
  let note = null;
  if (mode === "rewrite") {
    const plan = planRewrite(story, state.last);
    if (!plan) {
      setStatus("nothingToRewrite", {}, "warn");
      return;
    }
    prefix = plan.prefix;
    replacing = plan.replaces ? state.last.written : "";
    if (!plan.replaces) note = "editedInside";
  }
  if (!prefix.trim()) {
    setStatus("emptyText", {}, "warn");
    return;
  }
  const request = settings.request();
  const multi = typeof request.variants === "number" && request.variants > 1;
  write({ text: prefix, ...request }, { mode, replacing, note, multi });
}

async function write(body, { mode, replacing, note, multi }) {
  const controller = new AbortController();
  setRunning(controller);
  $("setting-token").removeAttribute("aria-invalid");
  setStatus(mode === "rewrite" ? "rewriting" : "writing", {}, "busy");
  let written = "";
  let started = false;
  const begin = () => {
    // The written part goes only once the server answers: a refused request changes nothing.
    if (started) return;
    started = true;
    if (multi) {
      state.pending = { replacing };
      cards.open(body.variants, (n) => t(state.language, "variant", { n }));
    } else {
      state.pending = null;
      cards.close();
      if (replacing) editor.value = editor.value.slice(0, editor.value.length - replacing.length);
      state.last = { written: "" };
      editor.scrollTop = editor.scrollHeight;
    }
  };
  if (!multi) editor.readOnly = true;
  try {
    const done = await streamContinue(body, {
      token: settings.token,
      signal: controller.signal,
      onEvent(name, data) {
        begin();
        if (name === "chunk" && multi) cards.append(data.variant, data.text);
        else if (name === "chunk") {
          written += data.text;
          appendToEditor(data.text);
          state.last = { written };
          saveSoon();
        } else if (name === "finish" && multi) cards.finish(data.variant);
      },
    });
    begin();
    const values = { n: countChars(written), s: done.seconds, seed: done.seed, count: done.variants.length };
    const detail = `prompt_tokens ${done.prompt_tokens}, reused_tokens ${done.reused_tokens}, ` +
      `completion_tokens ${done.completion_tokens}`;
    setStatus(note || (multi ? "wroteVariants" : "wrote"), values, note ? "warn" : "ok", detail);
    const status = $("status");
    status.dataset.promptTokens = done.prompt_tokens;
    status.dataset.reusedTokens = done.reused_tokens;
  } catch (error) {
    if (error.name === "AbortError") {
      if (!controller.picked) setStatus("stopped", {}, "info");
    }
    else showError(error);
  } finally {
    if (multi) cards.finishAll();
    editor.readOnly = false;
    setRunning(null);
    saveStory();
    updateCount();
  }
}

function appendToEditor(text) {
  const atBottom = editor.scrollHeight - editor.scrollTop - editor.clientHeight < 80;
  editor.setRangeText(text, editor.value.length, editor.value.length, "end");
  if (atBottom) editor.scrollTop = editor.scrollHeight;
  updateCount();
}

function pickVariant(index, text) {
  const result = insertVariant(editor.value, text, state.pending ? state.pending.replacing : "");
  if (state.running) {
    state.running.picked = true; // the other variants are not wanted any more
    state.running.abort();
  }
  editor.value = result.story;
  state.last = result.last;
  state.pending = null;
  cards.close();
  editor.scrollTop = editor.scrollHeight;
  saveStory();
  updateCount();
  setStatus("inserted", { n: index + 1 }, "ok");
}

function stop() {
  if (state.running) state.running.abort();
}

function download() {
  const firstLine = editor.value.trim().split("\n")[0].replace(/[\\/:*?"<>|\s]+/g, " ").trim().slice(0, 24);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([editor.value], { type: "text/plain;charset=utf-8" }));
  link.download = `${firstLine || "ai-writer"}.txt`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// -- wiring ------------------------------------------------------------------------------------

function onKey(event) {
  if (event.key === "Escape" && state.running) {
    event.preventDefault();
    stop();
    return;
  }
  if (!event.altKey || event.ctrlKey || event.metaKey) return;
  const action = { KeyQ: "continue", KeyE: "rewrite" }[event.code];
  if (!action) return;
  event.preventDefault();
  start(action);
}

function main() {
  editor.value = readStorage(KEYS.story) || "";
  setLanguage(state.language);
  openSettings(window.matchMedia("(min-width: 960px)").matches);
  updateCount();
  buttons.continue.addEventListener("click", () => start("continue"));
  buttons.rewrite.addEventListener("click", () => start("rewrite"));
  buttons.stop.addEventListener("click", stop);
  $("download").addEventListener("click", download);
  $("variants-close").addEventListener("click", () => {
    state.pending = null;
    cards.close();
  });
  $("language").addEventListener("click", () => {
    const language = state.language === "zh" ? "en" : "zh";
    try {
      localStorage.setItem(KEYS.language, language);
    } catch {
      // the switch still works for this page
    }
    setLanguage(language);
  });
  $("settings-toggle").addEventListener("click", () => {
    openSettings(!document.body.classList.contains("settings-open"));
  });
  $("settings-reset").addEventListener("click", () => settings.reset());
  editor.addEventListener("input", () => {
    saveStory();
    updateCount();
  });
  window.addEventListener("keydown", onKey);
  window.addEventListener("pagehide", saveStory);
  connect();
  setInterval(watchHealth, HEALTH_EVERY_MS);
}

main();
