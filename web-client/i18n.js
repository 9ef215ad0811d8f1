// The page's words in Chinese and English; the language follows the browser unless the writer picks one.

const WORDS = {
  zh: {
    title: "AI 写小说",
    continue: "续写",
    rewrite: "换个写法",
    stop: "停止",
    download: "下载 .txt",
    settings: "设置",
    language: "English",
    editorLabel: "正文",
    placeholder: "在这里写下开头，然后按“续写”（Alt+Q）……",
    chars: "{n} 字",
    length: "续写长度（字）",
    temperature: "温度 temperature",
    top_p: "top_p（段落内）",
    top_p_newline: "top_p（换行后）",
    allow_p: "allow_p（至少保留概率）",
    top_k: "top_k（0 = 不限）",
    presence_penalty: "出现惩罚 presence_penalty",
    frequency_penalty: "频率惩罚 frequency_penalty",
    penalty_decay: "惩罚衰减 penalty_decay",
    seed: "随机种子（留空 = 随机）",
    raw: "原样发送（不整理开头的空行和缩进）",
    variants: "候选数（大于 1 时并排显示）",
    token: "访问令牌（服务器用了 --token 时）",
    resetSettings: "恢复默认",
    settingsNote: "设置保存在本浏览器中。",
    variantsTitle: "候选：点一个插入正文",
    variant: "候选 {n}",
    dismiss: "关闭候选",
    connecting: "正在连接……",
    connected: "已连接：{model}",
    offline: "连不上服务器",
    needToken: "需要访问令牌",
    ready: "就绪",
    writing: "正在续写……",
    rewriting: "正在换个写法……",
    wrote: "写了 {n} 字，用时 {s} 秒（种子 {seed}）",
    wroteVariants: "写好 {count} 个候选，用时 {s} 秒（种子 {seed}）；点一个插入",
    stopped: "已停止",
    inserted: "已插入候选 {n}",
    nothingToRewrite: "还没有可以换的内容：先按“续写”",
    editedInside: "上次写的部分被改过了，已全部保留，在末尾另写一段",
    emptyText: "正文是空的：先写个开头",
    unreachable: "连不上服务器：{message}",
    serverError: "服务器报错：{message}",
    streamBroken: "连接中断：{message}",
    saveFailed: "无法自动保存到浏览器（{message}）；请下载备份",
  },
  en: {
    title: "AI Writer",
    continue: "Continue",
    rewrite: "Rewrite",
    stop: "Stop",
    download: "Download .txt",
    settings: "Settings",
    language: "中文",
    editorLabel: "Story",
    placeholder: "Write an opening here, then press Continue (Alt+Q)…",
    chars: "{n} characters",
    length: "Length (characters)",
    temperature: "temperature",
    top_p: "top_p (inside a paragraph)",
    top_p_newline: "top_p (after a newline)",
    allow_p: "allow_p (always keep tokens this likely)",
    top_k: "top_k (0 = no limit)",
    presence_penalty: "presence_penalty",
    frequency_penalty: "frequency_penalty",
    penalty_decay: "penalty_decay",
    seed: "Seed (empty = random)",
    raw: "Send the text as it is (no clean-up of blank lines and indents)",
    variants: "Variants (more than 1: shown side by side)",
    token: "Access token (for a server started with --token)",
    resetSettings: "Reset to defaults",
    settingsNote: "Settings are kept in this browser.",
    variantsTitle: "Variants: click one to insert it",
    variant: "Variant {n}",
    dismiss: "Close the variants",
    connecting: "Connecting…",
    connected: "Connected: {model}",
    offline: "Server unreachable",
    needToken: "Access token needed",
    ready: "Ready",
    writing: "Writing…",
    rewriting: "Rewriting…",
    wrote: "Wrote {n} characters in {s} s (seed {seed})",
    wroteVariants: "{count} variants in {s} s (seed {seed}); click one to insert it",
    stopped: "Stopped",
    inserted: "Inserted variant {n}",
    nothingToRewrite: "Nothing to rewrite yet: press Continue first",
    editedInside: "You edited what was written last; it is all kept and a fresh continuation was added at the end",
    emptyText: "The story is empty: write an opening first",
    unreachable: "Cannot reach the server: {message}",
    serverError: "Server error: {message}",
    streamBroken: "The connection broke: {message}",
    saveFailed: "Cannot autosave in this browser ({message}); download a copy",
  },
};

export const LANGUAGES = Object.keys(WORDS);

/** "zh" for any Chinese browser language, else "en"; a saved choice wins. */
export function pickLanguage(browserLanguage, saved) {
  if (LANGUAGES.includes(saved)) return saved;
  return String(browserLanguage || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

/** The text for `key` in `language`, with {name} placeholders filled from `values`. */
export function t(language, key, values = {}) {
  const text = WORDS[language]?.[key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** Fill every element marked data-i18n (text), data-i18n-placeholder or data-i18n-title. */
export function translatePage(root, language) {
  root.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  for (const element of root.querySelectorAll("[data-i18n]")) element.textContent = t(language, element.dataset.i18n);
  for (const element of root.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(language, element.dataset.i18nPlaceholder);
  }
  for (const element of root.querySelectorAll("[data-i18n-title]")) element.title = t(language, element.dataset.i18nTitle);
  root.title = t(language, "title");
}
