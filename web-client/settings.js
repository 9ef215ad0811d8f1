// The settings panel: its fields, what the writer changed (kept in localStorage), and the request they make.
//
// Only the values the writer changed are stored; the others show the server's defaults
// (GET /api/info) and follow them. Values go to the server as typed: it validates them and
// its error message says what is wrong; nothing is clamped here.

const STORE_KEY = "ai-writer.settings";
const TOKEN_KEY = "ai-writer.token";

/** The fields, in the panel's order; `request` is where the value goes in the POST body. */
export const FIELDS = [
  { name: "length", type: "number", integer: true, min: 1, step: 1, request: "settings" },
  { name: "temperature", type: "number", min: 0, max: 10, step: 0.05, request: "settings" },
  { name: "top_p", type: "number", min: 0, max: 1, step: 0.01, request: "settings" },
  { name: "top_p_newline", type: "number", min: 0, max: 1, step: 0.01, request: "settings" },
  { name: "allow_p", type: "number", min: 0, max: 1, step: 0.001, request: "settings" },
  { name: "top_k", type: "number", integer: true, min: 0, step: 1, request: "settings" },
  { name: "presence_penalty", type: "number", min: 0, max: 10, step: 0.1, request: "settings" },
  { name: "frequency_penalty", type: "number", min: 0, max: 10, step: 0.1, request: "settings" },
  { name: "penalty_decay", type: "number", min: 0, max: 1, step: 0.001, request: "settings" },
  { name: "seed", type: "number", integer: true, min: 0, step: 1, request: "settings" },
  { name: "variants", type: "number", integer: true, min: 1, max: 16, step: 1, request: "body", fallback: 1 },
  { name: "raw", type: "checkbox", request: "settings" },
];

function readJson(storage, key) {
  try {
    const value = JSON.parse(storage.getItem(key) || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

export class Settings {
  /** `form` is the panel's <form>; its inputs are made here from FIELDS. */
  constructor(form, storage, onChange = () => {}) {
    this.form = form;
    this.storage = storage;
    this.onChange = onChange;
    this.changed = readJson(storage, STORE_KEY);
    this.defaults = {};
    this.inputs = {};
    this.build();
    this.tokenInput = form.querySelector("#setting-token");
    this.tokenInput.value = storage.getItem(TOKEN_KEY) || "";
    this.tokenInput.addEventListener("change", () => {
      this.save(TOKEN_KEY, this.tokenInput.value.trim());
      this.onChange("token");
    });
    this.show();
  }

  build() {
    const fields = this.form.querySelector("#setting-fields");
    for (const field of FIELDS) {
      const label = document.createElement("label");
      label.className = field.type === "checkbox" ? "field check" : "field";
      const input = document.createElement("input");
      input.id = `setting-${field.name}`;
      input.name = field.name;
      input.type = field.type;
      for (const attribute of ["min", "max", "step"]) if (field[attribute] !== undefined) input[attribute] = field[attribute];
      if (field.type === "number") input.inputMode = field.integer ? "numeric" : "decimal";
      const text = document.createElement("span");
      text.dataset.i18n = field.name;
      if (field.type === "checkbox") label.append(input, text);
      else label.append(text, input);
      input.addEventListener("input", () => this.edited(field, input));
      input.addEventListener("change", () => this.edited(field, input));
      fields.append(label);
      this.inputs[field.name] = input;
    }
  }

  edited(field, input) {
    input.removeAttribute("aria-invalid");
    const value = field.type === "checkbox" ? input.checked : input.value.trim();
    if (value === "" || value === this.defaultText(field)) delete this.changed[field.name];
    else this.changed[field.name] = value;
    this.save(STORE_KEY, JSON.stringify(this.changed));
    this.onChange(field.name);
  }

  defaultText(field) {
    const value = this.defaults[field.name] ?? field.fallback;
    if (field.type === "checkbox") return Boolean(value);
    return value === undefined || value === null ? "" : String(value);
  }

  /** The server's defaults ({length, temperature, ...}) and limits (max_chars). */
  applyInfo(info) {
    this.defaults = { ...(info.defaults || {}) };
    if (info.max_chars) this.inputs.length.max = info.max_chars;
    this.show();
  }

  show() {
    for (const field of FIELDS) {
      const input = this.inputs[field.name];
      const value = field.name in this.changed ? this.changed[field.name] : this.defaultText(field);
      if (field.type === "checkbox") input.checked = Boolean(value);
      else input.value = value;
    }
  }

  reset() {
    this.changed = {};
    this.save(STORE_KEY, "{}");
    for (const input of Object.values(this.inputs)) input.removeAttribute("aria-invalid");
    this.show();
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
      if (field.request === "body") variants = value;
      else settings[field.name] = value;
    }
    return { settings, variants };
  }

  get variants() {
    const value = Number(this.inputs.variants.value);
    return Number.isInteger(value) && value > 0 ? value : 1;
  }

  /** Mark the field an error names ("settings.length", "variants"); returns whether one was found. */
  markInvalid(param) {
    const name = String(param || "").replace(/^settings\./, "");
    const input = name === "text" ? null : this.inputs[name];
    if (!input) return false;
    input.setAttribute("aria-invalid", "true");
    return true;
  }

  save(key, value) {
    try {
      this.storage.setItem(key, value);
    } catch {
      // storage full or disabled: the settings still apply to this page
    }
  }
}
