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
    settingsNote: "设置跟着这篇故事保存在本浏览器中。",
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
    nothingToRewrite: "还没有可以换的内容：先按“续写”，或选中一段文字",
    editedInside: "上次写的部分被改过了，已全部保留，在末尾另写一段",
    emptyText: "正文是空的：先写个开头",
    unreachable: "连不上服务器",
    serverError: "服务器报错：{message}",
    streamBroken: "连接中断了，已写的部分保留着",
    saveFailed: "浏览器的存储满了或被禁用，无法自动保存：请导出一份备份",
    steering: "记忆与设定",
    steeringShort: "设定",
    steeringTitle: "记忆、作者注与设定集",
    memory: "记忆",
    memoryHint: "每次续写前都读给模型：人物、背景、前情。",
    memoryPlaceholder: "例如：林黛玉，剑客，住在三体舰队上。",
    authorsNote: "作者注",
    noteHint: "一句写作方向，读在离续写处最近的地方。",
    notePlaceholder: "例如：气氛紧张，多写对话。",
    lorebook: "设定集",
    loreHint: "条目的关键词出现在最近的正文里时，才读给模型。",
    loreEmpty: "还没有条目。",
    loreAdd: "添加条目",
    loreImport: "导入 JSON 世界书",
    loreKeys: "关键词",
    loreKeyPlaceholder: "关键词，回车添加",
    loreText: "内容",
    loreTextPlaceholder: "这个条目要告诉模型的内容",
    loreAlways: "始终启用",
    loreRemove: "删除条目",
    loreRemoveKey: "删除关键词 {key}",
    loreSecondary: "还需出现其一：{keys}",
    loreIncomplete: "需要关键词和内容才会生效",
    loreImported: "从 {name} 导入了 {n} 条设定",
    loreImportFailed: "无法导入 {name}：{message}",
    loreTooMany: "设定集最多 {max} 条",
    bans: "禁用词",
    bansHint: "每行一个；模型写到它们时会退回重写，正文里绝不会出现。",
    loopGuard: "防止原地打转（重复时退回重写）",
    steeringNote: "这些内容跟着这篇故事保存在本浏览器中，随每次续写发送，不会写进正文，也不在下载的 .txt 里。",
    undo: "撤销",
    redo: "重做",
    undoTitle: "撤销（Ctrl+Z）",
    redoTitle: "重做（Ctrl+Shift+Z）",
    undone: "已撤销",
    redone: "已重做",
    nothingToUndo: "没有可以撤销的了",
    nothingToRedo: "没有可以重做的了",
    marks: "标出模型写的",
    marksTitle: "用淡色标出模型写的文字（下载的文本不带标记）",
    stories: "故事",
    storiesTitle: "我的故事",
    storyTitle: "标题",
    untitled: "未命名",
    storyNew: "新建",
    storyDelete: "删除这篇",
    storyImport: "导入 .txt",
    storyExportTxt: "导出 .txt",
    storyExportMd: "导出 .md",
    storiesNote: "故事都保存在本浏览器里；换浏览器或清除浏览数据前，请先导出。",
    confirmDelete: "删除《{title}》？它的正文、历史、设置和设定都会删掉，无法恢复。",
    storyDeleted: "已删除《{title}》",
    storyImported: "已导入 {name}（{n} 字）",
    storyImportFailed: "无法导入 {name}：{message}",
    preset: "风格",
    presetCustom: "自定义（见“高级”）",
    advanced: "高级",
    stopStrings: "停止词",
    stopHint: "每行一个，最多 4 个；写到它就停（它本身不写出来）。\\n 表示换行：写完一段就停。",
    rewriteScope: "选中 {n} 字",
    rewritingSelection: "正在换个写法（选中的 {n} 字）……",
    rewroteSelection: "写好 {count} 个新写法，用时 {s} 秒；模型新读了 {fresh} 个词元（另有 {reused} 个来自缓存）。点一个替换选中的文字，或保留原文",
    variantsTitleSelection: "换个写法：点一个替换选中的文字",
    original: "原文（保留）",
    replacedSelection: "已用写法 {n} 替换选中的文字",
    keptOriginal: "保留了原文",
    passageEdited: "选中的文字被改动了，这些写法已作废",
    nothingBeforeSelection: "选中的文字前面没有正文：模型要从前文接着写",
    name_length: "续写长度",
    name_variants: "候选数",
    name_seed: "随机种子",
    name_top_k: "top_k",
    name_memory: "记忆",
    name_note: "作者注",
    errorRange: "{name} 须在 {min} 到 {max} 之间{given}",
    errorAtLeast: "{name} 须不小于 {min}{given}",
    errorIntegerRange: "{name} 须是 {min} 到 {max} 之间的整数{given}",
    errorIntegerAtLeast: "{name} 须是不小于 {min} 的整数{given}",
    errorGiven: "（现在是 {value}）",
    errorTooLong: "{name}太长：{n} 字，最多 {max} 字",
    errorStop: "停止词最多 {max} 个，每个最多 {chars} 字",
    errorLore: "设定集有问题：{message}",
    errorBan: "禁用词有问题：{message}",
    errorToken: "访问令牌不对或没填：请在“设置”里填上服务器的令牌",
    errorBusy: "服务器正忙，请稍后再试",
    errorUnavailable: "服务器现在不能写（可能正在关闭）",
    errorTooLarge: "请求太大：正文或设定太长了",
    errorTooSlow: "请求发得太慢，已超时",
    errorInternal: "服务器内部出错：{message}",
    loreNoEntries: "没有找到设定条目（需要 entries、worldinfo 或 character_book）",
    loreNotList: "设定条目不是列表",
    loreEntryNotObject: "第 {n} 条不是对象",
    loreEntryNoKeys: "第 {n} 条没有关键词",
    loreEntryNoText: "第 {n} 条没有内容",
    loreBadJson: "不是有效的 JSON（{detail}）",
    loreLineFormat: "第 {n} 行：请写成“关键词, 关键词: 内容”",
    loreLineNoKeys: "第 {n} 行没有关键词",
    loreLineNoText: "第 {n} 行没有内容",
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
    settingsNote: "Settings are kept with this story in this browser.",
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
    nothingToRewrite: "Nothing to rewrite yet: press Continue first, or select a passage",
    editedInside: "You edited what was written last; it is all kept and a fresh continuation was added at the end",
    emptyText: "The story is empty: write an opening first",
    unreachable: "Cannot reach the server",
    serverError: "Server error: {message}",
    streamBroken: "The connection broke; what was written is kept",
    saveFailed: "This browser's storage is full or disabled, so nothing is autosaved: export a copy",
    steering: "Memory & lore",
    steeringShort: "Lore",
    steeringTitle: "Memory, author's note and lorebook",
    memory: "Memory",
    memoryHint: "Read to the model before every continuation: characters, setting, what happened.",
    memoryPlaceholder: "e.g. Lin Daiyu, a swordswoman, lives aboard the fleet.",
    authorsNote: "Author's Note",
    noteHint: "A short direction, read closest to where the model writes.",
    notePlaceholder: "e.g. Tense mood, more dialogue.",
    lorebook: "Lorebook",
    loreHint: "An entry is read to the model when one of its keys appears in the recent story.",
    loreEmpty: "No entries yet.",
    loreAdd: "Add entry",
    loreImport: "Import world info (JSON)",
    loreKeys: "Keys",
    loreKeyPlaceholder: "A key, then Enter",
    loreText: "Text",
    loreTextPlaceholder: "What this entry tells the model",
    loreAlways: "Always active",
    loreRemove: "Remove entry",
    loreRemoveKey: "Remove the key {key}",
    loreSecondary: "Also needs one of: {keys}",
    loreIncomplete: "Needs a key and a text to be used",
    loreImported: "Imported {n} lore entries from {name}",
    loreImportFailed: "Cannot import {name}: {message}",
    loreTooMany: "a lorebook holds at most {max} entries",
    bans: "Banned phrases",
    bansHint: "One per line; when the model starts one it goes back and writes again, so they never appear.",
    loopGuard: "Stop loops (go back and write again when it repeats itself)",
    steeringNote: "Kept with this story in this browser and sent with every continuation; never part of the story or of the .txt.",
    undo: "Undo",
    redo: "Redo",
    undoTitle: "Undo (Ctrl+Z)",
    redoTitle: "Redo (Ctrl+Shift+Z)",
    undone: "Undone",
    redone: "Redone",
    nothingToUndo: "Nothing to undo",
    nothingToRedo: "Nothing to redo",
    marks: "Mark the model's text",
    marksTitle: "Tint the text the model wrote (the download is plain text)",
    stories: "Stories",
    storiesTitle: "Stories",
    storyTitle: "Title",
    untitled: "Untitled",
    storyNew: "New story",
    storyDelete: "Delete this story",
    storyImport: "Import .txt",
    storyExportTxt: "Export .txt",
    storyExportMd: "Export .md",
    storiesNote: "Stories are kept in this browser; export them before you switch browsers or clear its data.",
    confirmDelete: "Delete “{title}”? Its text, history, settings and lore go for good.",
    storyDeleted: "Deleted “{title}”",
    storyImported: "Imported {name} ({n} characters)",
    storyImportFailed: "Cannot import {name}: {message}",
    preset: "Preset",
    presetCustom: "Custom (see Advanced)",
    advanced: "Advanced",
    stopStrings: "Stop strings",
    stopHint: "One per line, at most 4: writing stops just before one. \\n stands for a line break (stop at the paragraph's end).",
    rewriteScope: "{n} selected",
    rewritingSelection: "Rewriting the {n} selected characters…",
    rewroteSelection: "{count} new versions in {s} s; the model read {fresh} new tokens ({reused} more came from the cache). Click one to replace the selection, or keep the original",
    variantsTitleSelection: "Rewrite: click one to replace the selection",
    original: "Original (keep it)",
    replacedSelection: "Replaced the selection with version {n}",
    keptOriginal: "Kept the original",
    passageEdited: "The selected passage was edited; its versions were dropped",
    nothingBeforeSelection: "There is no text before the selection for the model to go on from",
    name_length: "Length",
    name_variants: "Variants",
    name_seed: "Seed",
    name_top_k: "top_k",
    name_memory: "The memory",
    name_note: "The author's note",
    errorRange: "{name} must be between {min} and {max}{given}",
    errorAtLeast: "{name} must be at least {min}{given}",
    errorIntegerRange: "{name} must be a whole number from {min} to {max}{given}",
    errorIntegerAtLeast: "{name} must be a whole number, at least {min}{given}",
    errorGiven: " (it is {value})",
    errorTooLong: "{name} is too long: {n} characters, at most {max}",
    errorStop: "At most {max} stop strings, each at most {chars} characters",
    errorLore: "The lorebook has a problem: {message}",
    errorBan: "A banned phrase has a problem: {message}",
    errorToken: "Missing or wrong access token: enter the server's token in Settings",
    errorBusy: "The server is busy; try again shortly",
    errorUnavailable: "The server cannot write now (it may be shutting down)",
    errorTooLarge: "The request is too large: the story or the lore is too long",
    errorTooSlow: "The request came too slowly and timed out",
    errorInternal: "The server failed: {message}",
    loreNoEntries: "no lorebook entries found (expected 'entries', 'worldinfo' or 'character_book')",
    loreNotList: "the lorebook entries are not a list",
    loreEntryNotObject: "entry {n} is not an object",
    loreEntryNoKeys: "entry {n} has no keys",
    loreEntryNoText: "entry {n} has no text",
    loreBadJson: "not valid JSON ({detail})",
    loreLineFormat: "line {n}: write it as 'key, key: text'",
    loreLineNoKeys: "line {n} has no keys",
    loreLineNoText: "line {n} has no text",
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

/** Seconds as people read them: one decimal under 10 ("1.2"), whole seconds above ("12"). */
export function formatSeconds(seconds) {
  const value = Number(seconds);
  if (!Number.isFinite(value)) return "?";
  if (value < 10) return Math.max(0.1, value).toFixed(1);
  return String(Math.round(value));
}

/** A setting's or field's name in an error message. */
function fieldName(language, name) {
  return WORDS[language]?.[`name_${name}`] ?? WORDS[language]?.[name] ?? WORDS.en[`name_${name}`] ?? name;
}

/**
 * An API error (api.js ApiError: status, type, param, message) in the page's language. `ranges` (GET /api/info's)
 * and `limits` ({memory_chars, note_chars, stop: {strings, chars}}) give the bounds to name, `sent` the values the
 * request carried; an error nothing here describes keeps the server's own message.
 */
export function errorText(language, error, { ranges = {}, limits = {}, sent = {} } = {}) {
  const say = (key, values) => t(language, key, values);
  const name = String(error.param || "").replace(/^settings\./, "");
  const value = sent[name];
  const given = typeof value === "number" ? say("errorGiven", { value }) : "";
  if (error.type === "network_error") return say("unreachable");
  if (error.type === "stream_error") return say("streamBroken");
  const byStatus = { 401: "errorToken", 408: "errorTooSlow", 413: "errorTooLarge", 429: "errorBusy",
    503: "errorUnavailable" }[error.status];
  if (byStatus) return say(byStatus);
  if (error.status >= 500) return say("errorInternal", { message: error.message });
  const range = ranges[name];
  if (range) {
    const open = range.max === null || range.max === undefined;
    const key = `error${range.integer ? "Integer" : ""}${open ? "AtLeast" : "Range"}`;
    return say(key, { name: fieldName(language, name), min: range.min, max: range.max, given });
  }
  if (name === "text" || name === "prompt") return say("emptyText");
  if (name === "memory" || name === "note") {
    return say("errorTooLong", { name: fieldName(language, name), n: [...String(value ?? "")].length,
      max: limits[`${name}_chars`] ?? "?" });
  }
  if (name === "stop") return say("errorStop", { max: limits.stop?.strings ?? 4, chars: limits.stop?.chars ?? 256 });
  if (name === "lore" || name === "lore_scan") return say("errorLore", { message: error.message });
  if (name === "ban") return say("errorBan", { message: error.message });
  return say("serverError", { message: error.message });
}
