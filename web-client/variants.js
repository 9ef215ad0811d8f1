// The side-by-side cards that N variants stream into; a click on a finished card picks it.

export class VariantCards {
  constructor(section, container, onPick) {
    this.section = section;
    this.container = container;
    this.onPick = onPick;
    this.cards = [];
  }

  /** Show `count` empty cards titled by `title(n)` (n from 1). */
  open(count, title) {
    this.container.replaceChildren();
    this.cards = [];
    for (let index = 0; index < count; index += 1) {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "card";
      card.disabled = true;
      card.dataset.variant = String(index);
      const heading = document.createElement("span");
      heading.className = "card-title";
      heading.textContent = title(index + 1);
      const body = document.createElement("span");
      body.className = "card-text";
      card.append(heading, body);
      card.addEventListener("click", () => this.onPick(index, this.cards[index].text));
      this.container.append(card);
      this.cards.push({ element: card, body, text: "" });
    }
    this.section.hidden = false;
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

  retitle(title) {
    this.cards.forEach((card, index) => {
      card.element.querySelector(".card-title").textContent = title(index + 1);
    });
  }

  close() {
    this.section.hidden = true;
    this.container.replaceChildren();
    this.cards = [];
  }
}
