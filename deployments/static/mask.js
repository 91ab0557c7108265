// The mask painter: a brush over the first reference image. The mask is kept at the image's natural size,
// one byte a pixel (1 = editable), whatever size the image is shown at, and exported as the OpenAI mask:
// a PNG whose alpha is 0 where the edit may change pixels and 255 elsewhere.

// Painted pixels on the overlay canvas (the CSS shows it at reduced opacity), as one RGBA word.
const TINT = new Uint32Array(new Uint8ClampedArray([255, 0, 110, 255]).buffer)[0];
const UNDO_DEPTH = 30;

/**
 * Set every pixel whose centre lies within `radius` of the segment (x0, y0)-(x1, y1) to `value`.
 * Pixel-exact and unantialiased, so the exported mask is exactly the brush's footprint.
 * Returns the touched box [left, top, right, bottom) or null.
 */
export function stampSegment(mask, width, height, x0, y0, x1, y1, radius, value) {
  const left = Math.max(0, Math.floor(Math.min(x0, x1) - radius));
  const top = Math.max(0, Math.floor(Math.min(y0, y1) - radius));
  const right = Math.min(width, Math.ceil(Math.max(x0, x1) + radius) + 1);
  const bottom = Math.min(height, Math.ceil(Math.max(y0, y1) + radius) + 1);
  if (left >= right || top >= bottom) return null;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const length2 = dx * dx + dy * dy;
  const r2 = radius * radius;
  for (let y = top; y < bottom; y++) {
    const cy = y + 0.5;
    for (let x = left; x < right; x++) {
      const cx = x + 0.5;
      const t = length2 > 0 ? Math.min(1, Math.max(0, ((cx - x0) * dx + (cy - y0) * dy) / length2)) : 0;
      const ex = cx - (x0 + t * dx);
      const ey = cy - (y0 + t * dy);
      if (ex * ex + ey * ey <= r2) mask[y * width + x] = value;
    }
  }
  return [left, top, right, bottom];
}

/** Nearest-neighbour resize of a mask, for keeping it on an image of another size. */
function resizeMask(mask, width, height, newWidth, newHeight) {
  const out = new Uint8Array(newWidth * newHeight);
  for (let y = 0; y < newHeight; y++) {
    const row = Math.floor((y * height) / newHeight) * width;
    for (let x = 0; x < newWidth; x++) out[y * newWidth + x] = mask[row + Math.floor((x * width) / newWidth)];
  }
  return out;
}

export class MaskPainter {
  /** onChange() runs after every change of the mask (a stroke ends, undo, clear, invert, a new image). */
  constructor({ image, canvas, cursor, sizeInput, sizeOutput, onChange }) {
    Object.assign(this, { image, canvas, cursor, sizeInput, sizeOutput, onChange });
    this.ctx = canvas.getContext("2d");
    this.width = 0;
    this.height = 0;
    this.mask = new Uint8Array(0);
    this.undoStack = [];
    this.erasing = false;
    this.stroke = null; // the last point of the stroke under way, in image pixels
    this.keyPoint = null; // the keyboard brush position, in image pixels
    this.keyStroke = false; // Shift + arrows are painting
    this.bindPointer();
    this.bindKeys();
    sizeInput.addEventListener("input", () => this.showSize());
  }

  get radius() {
    return Number(this.sizeInput.value) / 2;
  }

  get paintedCount() {
    let count = 0;
    for (const value of this.mask) count += value;
    return count;
  }

  /** Show `url` (the first reference) and start a blank mask at its size, or keep the current one, resized. */
  async setImage(url, keep = false) {
    const previous = keep && this.paintedCount ? [this.mask, this.width, this.height] : null;
    // Empty until the image decodes: a broken one leaves no mask of an earlier image behind.
    this.width = 0;
    this.height = 0;
    this.mask = new Uint8Array(0);
    this.undoStack = [];
    this.image.src = url;
    await this.image.decode();
    const width = this.image.naturalWidth;
    const height = this.image.naturalHeight;
    this.width = width;
    this.height = height;
    this.canvas.width = width;
    this.canvas.height = height;
    this.pixels = this.ctx.createImageData(width, height);
    this.words = new Uint32Array(this.pixels.data.buffer);
    this.mask = previous ? resizeMask(...previous, width, height) : new Uint8Array(width * height);
    const longest = Math.max(width, height);
    this.sizeInput.max = String(Math.max(8, Math.round(longest / 3)));
    if (!previous) this.sizeInput.value = String(Math.max(2, Math.round(longest / 12)));
    this.showSize();
    this.render();
    this.onChange();
  }

  /** Load an uploaded mask file (OpenAI semantics: alpha 0 = editable); it must match the image's size. */
  async loadFile(file) {
    const bitmap = await createImageBitmap(file, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
    if (bitmap.width !== this.width || bitmap.height !== this.height) {
      throw new Error(
        `The mask is ${bitmap.width}×${bitmap.height}, the first image ${this.width}×${this.height}: they must match.`,
      );
    }
    const scratch = new OffscreenCanvas(this.width, this.height).getContext("2d");
    scratch.drawImage(bitmap, 0, 0);
    const rgba = scratch.getImageData(0, 0, this.width, this.height).data;
    this.remember();
    for (let i = 0; i < this.mask.length; i++) this.mask[i] = rgba[4 * i + 3] === 0 ? 1 : 0;
    this.changed();
  }

  /** The OpenAI mask as a PNG File, or null when nothing is painted (then the whole image may change). */
  async toFile() {
    if (!this.paintedCount) return null;
    const canvas = new OffscreenCanvas(this.width, this.height);
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(this.width, this.height);
    for (let i = 0; i < this.mask.length; i++) out.data[4 * i + 3] = this.mask[i] ? 0 : 255;
    ctx.putImageData(out, 0, 0);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    return new File([blob], "mask.png", { type: "image/png" });
  }

  setErasing(erasing) {
    this.erasing = erasing;
    this.cursor.classList.toggle("erase", erasing);
  }

  clear() {
    if (!this.paintedCount) return;
    this.remember();
    this.mask.fill(0);
    this.changed();
  }

  invert() {
    this.remember();
    for (let i = 0; i < this.mask.length; i++) this.mask[i] ^= 1;
    this.changed();
  }

  undo() {
    const previous = this.undoStack.pop();
    if (!previous) return;
    this.mask = previous;
    this.changed();
  }

  // ------------------------------------------------------------ internals

  remember() {
    this.undoStack.push(this.mask.slice());
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
  }

  changed() {
    this.render();
    this.onChange();
  }

  /** Copy the mask into the overlay's pixels, the box [left, top, right, bottom) only when given. */
  render(box = [0, 0, this.width, this.height]) {
    const [left, top, right, bottom] = box;
    for (let y = top; y < bottom; y++) {
      for (let i = y * this.width + left; i < y * this.width + right; i++) this.words[i] = this.mask[i] ? TINT : 0;
    }
    this.ctx.putImageData(this.pixels, 0, 0, left, top, right - left, bottom - top);
  }

  paint(from, to) {
    const box = stampSegment(
      this.mask, this.width, this.height, from[0], from[1], to[0], to[1], this.radius, this.erasing ? 0 : 1,
    );
    if (box) this.render(box);
  }

  /** A pointer position in image pixels: the canvas may be shown at any size. */
  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * this.width) / rect.width,
      ((event.clientY - rect.top) * this.height) / rect.height,
    ];
  }

  /** Place the brush outline at an image position, drawn at the size it paints. */
  showCursor(point) {
    const scale = this.canvas.getBoundingClientRect().width / this.width;
    const diameter = `${2 * this.radius * scale}px`;
    Object.assign(this.cursor.style, {
      left: `${point[0] * scale}px`, top: `${point[1] * scale}px`, width: diameter, height: diameter,
    });
    this.cursor.hidden = false;
  }

  showSize() {
    this.sizeOutput.textContent = `${this.sizeInput.value} px`;
    if (this.keyPoint) this.showCursor(this.keyPoint);
  }

  bindPointer() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || !this.width) return;
      event.preventDefault();
      canvas.focus({ preventScroll: true });
      canvas.setPointerCapture(event.pointerId);
      this.remember();
      this.stroke = this.toImage(event);
      this.paint(this.stroke, this.stroke);
    });
    canvas.addEventListener("pointermove", (event) => {
      const point = this.toImage(event);
      this.keyPoint = null;
      this.showCursor(point);
      if (!this.stroke) return;
      this.paint(this.stroke, point);
      this.stroke = point;
    });
    const end = () => {
      if (!this.stroke) return;
      this.stroke = null;
      this.onChange();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("pointerleave", () => {
      if (!this.stroke && !this.keyPoint) this.cursor.hidden = true;
    });
  }

  bindKeys() {
    const canvas = this.canvas;
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    canvas.addEventListener("focus", () => {
      if (!canvas.matches(":focus-visible")) return; // focused by a pointer, which places the brush itself
      this.keyPoint = this.keyPoint || [this.width / 2, this.height / 2];
      this.showCursor(this.keyPoint);
    });
    canvas.addEventListener("blur", () => {
      this.keyPoint = null;
      this.cursor.hidden = true;
    });
    canvas.addEventListener("keydown", (event) => {
      if (!this.width) return;
      const from = this.keyPoint || [this.width / 2, this.height / 2];
      const move = moves[event.key];
      if (move) {
        const step = Math.max(1, Math.round(this.radius / 2));
        this.keyPoint = [
          Math.min(this.width, Math.max(0, from[0] + move[0] * step)),
          Math.min(this.height, Math.max(0, from[1] + move[1] * step)),
        ];
        if (event.shiftKey) {
          if (!this.keyStroke) this.remember(); // one undo step for a whole Shift + arrows stroke
          this.keyStroke = true;
          this.paint(from, this.keyPoint);
          this.onChange();
        }
      } else if (event.key === " " || event.key === "Enter") {
        this.keyPoint = from;
        this.remember();
        this.paint(from, from);
        this.onChange();
      } else if (event.key === "[" || event.key === "]") {
        this.keyPoint = from;
        const delta = event.key === "]" ? 2 : -2;
        this.sizeInput.value = String(Number(this.sizeInput.value) + delta); // the range clamps it
      } else {
        return;
      }
      event.preventDefault();
      this.showSize(); // redraws the brush outline at its place and size
    });
    canvas.addEventListener("keyup", (event) => {
      if (event.key === "Shift") this.keyStroke = false;
    });
  }
}
