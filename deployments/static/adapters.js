// The adapter picker (LoRA): rows of an adapter and its scale, for models whose GET /v1/models card lists adapters.

const STEP = 0.05;

/** Adapters as the server's x-lora header names them ("a:0.8+b:0.5", "" for none): by name, zero scales left out. */
export function adaptersLabel(adapters) {
  return adapters
    .filter((ref) => ref.scale !== 0)
    .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
    .map((ref) => `${ref.name}:${ref.scale}`)
    .join("+");
}

export class AdapterPicker {
  constructor({ section, rows, add, hint }) {
    Object.assign(this, { section, rows, add, hint, adapters: [], max: 0, maxScale: 0, made: 0 });
    add.addEventListener("click", () => this.addRow());
  }

  /** Follow the chosen model's card: no rows to start with (the base model alone), hidden without adapters. */
  setModel(card) {
    const settings = (card && card.lora) || null; // the card's field keeps the API's name
    this.adapters = settings ? settings.adapters : [];
    this.max = settings ? Math.min(settings.max_per_request, this.adapters.length) : 0;
    this.maxScale = settings ? settings.max_scale : 0;
    this.rows.replaceChildren();
    this.section.hidden = this.adapters.length === 0;
    this.hint.textContent = `Up to ${this.max} of this model's adapters, each at a scale from ` +
      `\u2212${this.maxScale} to ${this.maxScale} (0 leaves it out). None: the base model.`;
    this.sync();
  }

  /** The chosen adapters in the rows' order, [{name, scale}]; a half-typed scale is settled first. */
  chosen() {
    return [...this.rows.children].map((row) => ({ name: row.querySelector("select").value, scale: this.settle(row) }));
  }

  addRow() {
    if (this.rows.children.length >= this.max) return;
    const used = new Set(this.chosen().map((ref) => ref.name));
    const id = `adapter-${++this.made}`; // never reused, so a label stays with its row when another is removed
    const row = document.createElement("li");
    const label = document.createElement("label");
    label.htmlFor = `${id}-name`;
    const select = document.createElement("select");
    select.id = label.htmlFor;
    select.append(...this.adapters.map((name) => new Option(name, name)));
    select.value = this.adapters.find((name) => !used.has(name));
    const bounds = { min: String(-this.maxScale), max: String(this.maxScale), step: String(STEP) };
    const slider = Object.assign(document.createElement("input"), { type: "range", ...bounds, value: "1" });
    const number = Object.assign(document.createElement("input"), { type: "number", ...bounds, inputMode: "decimal" });
    number.value = slider.value; // 1, or max_scale where that is below 1
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "remove" });
    remove.textContent = "×";
    slider.addEventListener("input", () => {
      number.value = slider.value;
    });
    number.addEventListener("change", () => this.settle(row));
    select.addEventListener("change", () => this.sync());
    remove.addEventListener("click", () => this.removeRow(row));
    row.append(label, select, slider, number, remove);
    this.rows.append(row);
    this.sync();
    select.focus();
  }

  removeRow(row) {
    const index = [...this.rows.children].indexOf(row);
    row.remove();
    this.sync();
    const next = this.rows.children[Math.min(index, this.rows.children.length - 1)];
    (next ? next.querySelector("select") : this.add).focus();
  }

  /** The typed scale, within ±max_scale and on the slider's steps so both agree; the slider's if unreadable. */
  settle(row) {
    const slider = row.querySelector("input[type=range]");
    const number = row.querySelector("input[type=number]");
    const raw = number.value.trim();
    const typed = raw === "" ? NaN : Number(raw);
    if (Number.isFinite(typed)) {
      const bounded = Math.min(this.maxScale, Math.max(-this.maxScale, typed));
      slider.value = String(Number((Math.round(bounded / STEP) * STEP).toFixed(2)));
    }
    number.value = slider.value;
    return Number(slider.value);
  }

  /** Numbered names, each adapter chosen at most once (the server refuses a repeat), and no row past the limit. */
  sync() {
    const rows = [...this.rows.children];
    const names = rows.map((row) => row.querySelector("select").value);
    rows.forEach((row, i) => {
      const name = `Adapter ${i + 1}`;
      row.querySelector("label").textContent = name;
      row.querySelector("input[type=range]").setAttribute("aria-label", `${name} scale`);
      row.querySelector("input[type=number]").setAttribute("aria-label", `${name} scale value`);
      row.querySelector("button").setAttribute("aria-label", `Remove adapter ${i + 1} (${names[i]})`);
      for (const option of row.querySelector("select").options) {
        option.disabled = names.some((other, j) => j !== i && other === option.value);
      }
    });
    this.add.disabled = rows.length >= this.max;
  }
}
