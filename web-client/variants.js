// The side-by-side cards that N variants stream into; a click on a finished card picks it. A rewrite of a selected
// passage puts the passage itself first, as the card that keeps it.

export class VariantCards {
  constructor(section, container, onPick) {
    this.section = section;
    this.container = container;
    this.onPick = onPick;
    this.cards = [];
    this.original = null;
  }

  /**
   * Show `count` empty cards titled by `title(n)` (n from 1); `original` ({title, text}), if given, comes first and
   * can be picked at once (onPick(-1, text)).
   */
  open(count, title, original = null) {
    this.container.replaceChildren();
    this.cards = [];
    this.original = null;
    if (original) {
      const { element, body } = this.card(original.title, "original");
      element.disabled = false;
      body.textContent = original.text;
      element.addEventListener("click", () => this.onPick(-1, original.text));
      this.original = element;
    }
    for (let index = 0; index < count; index += 1) {
      const { element, body } = this.card(title(index + 1), String(index));
      element.addEventListener("click", () => this.onPick(index, this.cards[index].text));
      this.cards.push({ element, body, text: "" });
    }
    this.section.hidden = false;
  }

  card(heading, variant) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = variant === "original" ? "card original" : "card";
    element.disabled = true;
    element.dataset.variant = variant;
    const title = document.createElement("span");
    title.className = "card-title";
    title.textContent = heading;
    const body = document.createElement("span");
    body.className = "card-text";
    element.append(title, body);
    this.container.append(element);
    return { element, body };
  }

  append(index, text) {
    const card = this.cards[index];
    if (!card) return;
    card.text += text;
    card.body.textContent = card.text;
  }

  /** A card can be picked once its variant is finished (or the request ended). */
  finish(index) {
    const card = this.cards[index];
    if (card) card.element.disabled = false;
  }

  finishAll() {
    for (const card of this.cards) card.element.disabled = false;
  }

  retitle(title, originalTitle) {
    this.cards.forEach((card, index) => {
      card.element.querySelector(".card-title").textContent = title(index + 1);
    });
    if (this.original) this.original.querySelector(".card-title").textContent = originalTitle;
  }

  get isOpen() {
    return !this.section.hidden;
  }

  close() {
    this.section.hidden = true;
    this.container.replaceChildren();
    this.cards = [];
    this.original = null;
  }
}
