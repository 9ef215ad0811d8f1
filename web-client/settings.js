// The settings panel: a preset in plain words, the length, variants and stop strings, and the raw sampling
// settings under "advanced"; what the writer changed (kept per story in localStorage); the request they make.
//
// Only the values the writer changed are stored; the others show the server's defaults and follow them. The
// presets and every setting's valid range come from the server too (GET /api/info), never from this file. Values go
// to the server as typed: it validates them, and the page says what is wrong in its own language; nothing is clamped.

const TOKEN_KEY = "ai-writer.token";

/** The fields, in the panel's order; `group`: where they stand; `body`: sent beside `settings`, not in it. */
export const FIELDS = [
  { name: "length", type: "number", integer: true, step: 1, group: "main" },
  { name: "variants", type: "number", integer: true, step: 1, group: "main", body: true, fallback: 1 },
  { name: "temperature", type: "number", step: 0.05, group: "advanced" },
  { name: "top_p", type: "number", step: 0.01, group: "advanced" },
  { name: "top_p_newline", type: "number", step: 0.01, group: "advanced" },
  { name: "allow_p", type: "number", step: 0.001, group: "advanced" },
  { name: "top_k", type: "number", integer: true, step: 1, group: "advanced" },
  { name: "presence_penalty", type: "number", step: 0.1, group: "advanced" },
  { name: "frequency_penalty", type: "number", step: 0.1, group: "advanced" },
  { name: "penalty_decay", type: "number", step: 0.001, group: "advanced" },
  { name: "seed", type: "number", integer: true, step: 1, group: "advanced" },
  { name: "raw", type: "checkbox", group: "advanced" },
];

/** The stop strings of the field's text: one a line, `\n` standing for a line break; blank lines left out. */
export function stopList(text) {
  return String(text || "").split("\n").map((line) => line.trim().replaceAll("\\n", "\n")).filter(Boolean);
}

function readJson(storage, key) {
  try {
    const value = JSON.parse(storage.getItem(key) || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

export class Settings {
  /**
   * `form` is the panel's <form>; its inputs are made here from FIELDS. `key` is the localStorage key of the story's
   * settings; `onChange(name)` follows every change; `language()` is the page's language (for the presets' names)
   * and `t(key)` its words.
   */
  constructor(form, storage, { key, onChange = () => {}, language = () => "en", t = (word) => word }) {
    this.form = form;
    this.storage = storage;
    this.onChange = onChange;
    this.language = language;
    this.t = t;
    this.defaults = {};
    this.presets = [];
    this.inputs = {};
    this.build();
    this.presetSelect = form.querySelector("#setting-preset");
    this.presetSelect.addEventListener("change", () => this.choosePreset(this.presetSelect.value));
    this.stopInput = form.querySelector("#setting-stop");
    this.stopInput.addEventListener("input", () => {
      this.stopInput.removeAttribute("aria-invalid");
      if (this.stopInput.value.trim()) this.changed.stop = this.stopInput.value;
      else delete this.changed.stop;
      this.store();
      this.onChange("stop");
    });
    this.tokenInput = form.querySelector("#setting-token");
    this.tokenInput.value = storage.getItem(TOKEN_KEY) || "";
    this.tokenInput.addEventListener("change", () => {
      this.save(TOKEN_KEY, this.tokenInput.value.trim());
      this.onChange("token");
    });
    this.load(key);
  }

  /** Show the settings stored under `key` (another story's). */
  load(key) {
    this.key = key;
    this.changed = readJson(this.storage, key);
    for (const input of [...Object.values(this.inputs), this.stopInput]) input.removeAttribute("aria-invalid");
    this.show();
  }

  build() {
    for (const field of FIELDS) {
      const label = document.createElement("label");
      label.className = field.type === "checkbox" ? "field check" : "field";
      const input = document.createElement("input");
      input.id = `setting-${field.name}`;
      input.name = field.name;
      input.type = field.type;
      if (field.step !== undefined) input.step = field.step;
      if (field.type === "number") input.inputMode = field.integer ? "numeric" : "decimal";
      const text = document.createElement("span");
      text.dataset.i18n = field.name;
      if (field.type === "checkbox") label.append(input, text);
      else label.append(text, input);
      input.addEventListener("input", () => this.edited(field, input));
      input.addEventListener("change", () => this.edited(field, input));
      this.form.querySelector(`#setting-fields-${field.group}`).append(label);
      this.inputs[field.name] = input;
    }
  }

  edited(field, input) {
    input.removeAttribute("aria-invalid");
    const value = field.type === "checkbox" ? input.checked : input.value.trim();
    if (value === "" || value === this.defaultText(field.name)) delete this.changed[field.name];
    else this.changed[field.name] = value;
    this.store();
    this.showPreset();
    this.onChange(field.name);
  }

  defaultText(name) {
    const field = FIELDS.find((f) => f.name === name);
    const value = this.defaults[name] ?? field?.fallback;
    if (field?.type === "checkbox") return Boolean(value);
    return value === undefined || value === null ? "" : String(value);
  }

  /** GET /api/info: the server's defaults, every setting's range ({min, max, integer}) and the presets. */
  applyInfo(info) {
    this.defaults = { ...(info.defaults || {}) };
    this.presets = Array.isArray(info.presets) ? info.presets : [];
    for (const [name, range] of Object.entries(info.ranges || {})) {
      const input = this.inputs[name];
      if (!input || input.type !== "number") continue;
      for (const end of ["min", "max"]) {
        if (typeof range[end] === "number") input[end] = String(range[end]);
        else input.removeAttribute(end);
      }
    }
    this.show();
  }

  show() {
    for (const field of FIELDS) {
      const input = this.inputs[field.name];
      const value = field.name in this.changed ? this.changed[field.name] : this.defaultText(field.name);
      if (field.type === "checkbox") input.checked = Boolean(value);
      else input.value = value;
    }
    this.stopInput.value = typeof this.changed.stop === "string" ? this.changed.stop : "";
    this.renderPresets();
  }

  // -- presets ---------------------------------------------------------------------------------

  /** The preset menu in the page's language: the server's presets, and "custom" for any other values. */
  renderPresets() {
    const language = this.language();
    const options = this.presets.map((preset) => {
      const option = document.createElement("option");
      option.value = preset.name;
      option.textContent = preset.title?.[language] || preset.title?.en || preset.name;
      return option;
    });
    const custom = document.createElement("option");
    custom.value = "";
    custom.textContent = this.t("presetCustom");
    this.presetSelect.replaceChildren(...options, custom);
    this.form.querySelector("#preset-field").hidden = !this.presets.length;
    this.showPreset();
  }

  /** The preset whose every setting the fields hold, or null. */
  get preset() {
    return this.presets.find((preset) => Object.entries(preset.settings || {}).every(([name, value]) => {
      const input = this.inputs[name];
      return input && input.value.trim() !== "" && Math.abs(Number(input.value) - value) < 1e-9;
    })) || null;
  }

  showPreset() {
    const preset = this.preset;
    this.presetSelect.value = preset ? preset.name : "";
    const language = this.language();
    this.form.querySelector("#preset-description").textContent =
      preset ? preset.description?.[language] || preset.description?.en || "" : "";
  }

  /** Put a preset's settings in the fields (those equal to the server's defaults follow the defaults again). */
  choosePreset(name) {
    const preset = this.presets.find((p) => p.name === name);
    if (!preset) {
      this.showPreset();
      return;
    }
    for (const [setting, value] of Object.entries(preset.settings || {})) {
      if (!this.inputs[setting]) continue;
      this.inputs[setting].removeAttribute("aria-invalid");
      if (String(value) === this.defaultText(setting)) delete this.changed[setting];
      else this.changed[setting] = String(value);
    }
    this.store();
    this.show();
    this.onChange("preset");
  }

  reset() {
    this.changed = {};
    this.store();
    for (const input of [...Object.values(this.inputs), this.stopInput]) input.removeAttribute("aria-invalid");
    this.show();
    this.onChange("reset");
  }

  get token() {
    return this.tokenInput.value.trim();
  }

  /** The body of POST /api/continue without the text: {settings: {...}, variants}. */
  request() {
    const settings = {};
    let variants = 1;
    for (const field of FIELDS) {
      const input = this.inputs[field.name];
      let value;
      if (field.type === "checkbox") value = input.checked;
      else if (input.value.trim() === "") continue; // empty: the server's default
      else value = Number(input.value);
      if (field.body) variants = value;
      else settings[field.name] = value;
    }
    const stop = stopList(this.stopInput.value);
    if (stop.length) settings.stop = stop;
    return { settings, variants };
  }

  /** Mark the field an error names ("settings.length", "variants"), opening "advanced" if it is there. */
  markInvalid(param) {
    const name = String(param || "").replace(/^settings\./, "");
    const input = name === "stop" ? this.stopInput : this.inputs[name];
    if (!input) return false;
    input.setAttribute("aria-invalid", "true");
    const section = input.closest("details");
    if (section) section.open = true;
    return true;
  }

  store() {
    this.save(this.key, JSON.stringify(this.changed));
  }

  save(key, value) {
    try {
      this.storage.setItem(key, value);
    } catch {
      // storage full or disabled: the settings still apply to this page
    }
  }
}
