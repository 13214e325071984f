// The slice viewer: draws a slice (RGBA from the worker) with the painted masks and the results on top,
// zooms, and turns pointer strokes into label-map edits in image pixels (no canvas antialiasing, so the
// mask the user sees is exactly the one the model gets).

export function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class Viewer {
  /**
   * canvas: the visible canvas; app: {classes(), drawn(z), result(z), prompts(z), feedback(z), opacity(),
   * outline(), tool(), brushRadius(), activeClass(), canPaint(), beginStroke(z), endStroke(z), click(z, x, y,
   * positive), box(z, from, to)}.
   */
  constructor(canvas, app) {
    this.canvas = canvas;
    this.app = app;
    this.image = null; // {z, width, height, canvas} the slice at its own resolution
    this.overlay = document.createElement('canvas');
    this.zoom = 1;
    this.stroke = null;
    this.drag = null; // the prompt tool's press: {from, negative, box}
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
    canvas.addEventListener('pointerdown', (e) => this.pointerDown(e));
    canvas.addEventListener('pointermove', (e) => this.pointerMove(e));
    canvas.addEventListener('pointerup', (e) => this.pointerUp(e));
    canvas.addEventListener('pointercancel', (e) => this.pointerUp(e));
    // A right click is a background click with the prompt tool, not the browser's menu.
    canvas.addEventListener('contextmenu', (e) => { if (this.app.tool() === 'prompt') e.preventDefault(); });
  }

  /** Shows slice z: rgba is a Uint8Array of width * height * 4. */
  setSlice(z, width, height, rgba) {
    const base = this.image?.width === width && this.image?.height === height ? this.image.canvas : document.createElement('canvas');
    base.width = width;
    base.height = height;
    base.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length), width, height), 0, 0);
    this.image = { z, width, height, canvas: base };
    this.draw();
  }

  clear() {
    this.image = null;
    this.draw();
  }

  setZoom(zoom) {
    this.zoom = Math.min(16, Math.max(0.25, zoom));
    this.draw();
  }

  /** Canvas pixels per image pixel, and the image's top-left corner on the canvas. */
  layout() {
    const { width, height } = this.canvas;
    const fit = Math.min(width / this.image.width, height / this.image.height);
    const scale = fit * this.zoom;
    return { scale, x: (width - this.image.width * scale) / 2, y: (height - this.image.height * scale) / 2 };
  }

  renderOverlay() {
    const { width, height, z } = this.image;
    this.overlay.width = width;
    this.overlay.height = height;
    const ctx = this.overlay.getContext('2d');
    const pixels = ctx.createImageData(width, height);
    const out = pixels.data;
    const colours = new Map(this.app.classes().filter((c) => c.visible).map((c) => [c.value, hexToRgb(c.color)]));
    const result = this.app.result(z);
    const drawn = this.app.drawn(z);
    const opacity = Math.round(255 * this.app.opacity());
    const outline = this.app.outline();
    const edge = (labels, i, v) => {
      const x = i % width;
      const y = (i - x) / width;
      return x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        labels[i - 1] !== v || labels[i + 1] !== v || labels[i - width] !== v || labels[i + width] !== v;
    };
    const feedback = this.app.feedback(z);
    for (let i = 0; i < width * height; i++) {
      let v = result ? result[i] : 0;
      let alpha = opacity;
      if (v && outline && !edge(result, i, v)) v = 0;
      if (v && outline) alpha = 255;
      for (const f of feedback) if (f.mask[i]) { v = f.class; alpha = 160; }
      const d = drawn ? drawn[i] : 0;
      if (d) { v = d; alpha = 200; }
      const rgb = v && colours.get(v);
      if (!rgb) continue;
      out.set([rgb[0], rgb[1], rgb[2], alpha], i * 4);
    }
    ctx.putImageData(pixels, 0, 0);
  }

  draw() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const [w, h] = [Math.max(1, Math.floor(box.width * dpr)), Math.max(1, Math.floor(box.height * dpr))];
    if (this.canvas.width !== w || this.canvas.height !== h) [this.canvas.width, this.canvas.height] = [w, h];
    const ctx = this.canvas.getContext('2d');
    ctx.fillStyle = '#0d1117';
    ctx.fillRect(0, 0, w, h);
    if (!this.image) return;
    this.renderOverlay();
    const { scale, x, y } = this.layout();
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.image.canvas, x, y, this.image.width * scale, this.image.height * scale);
    ctx.drawImage(this.overlay, x, y, this.image.width * scale, this.image.height * scale);
    this.drawPrompts(ctx, scale, x, y);
  }

  /** The shown slice's boxes (and the one being dragged) and clicks: green on the structure, red background;
   * corrections (clicks after a run) as rings, those of earlier rounds faded. */
  drawPrompts(ctx, scale, x0, y0) {
    const at = (x, y) => [x0 + x * scale, y0 + y * scale];
    const colour = new Map(this.app.classes().map((c) => [c.value, c.color]));
    ctx.lineWidth = 2;
    const prompts = this.app.prompts(this.image.z);
    const boxes = prompts.filter((p) => p.box).map((p) => ({ box: p.box, color: colour.get(p.class) ?? '#fff' }));
    if (this.drag?.box) boxes.push({ box: this.drag.box, color: '#fff' });
    for (const { box: [bx0, by0, bx1, by1], color } of boxes) {
      ctx.strokeStyle = color;
      ctx.setLineDash([6, 4]);
      ctx.strokeRect(...at(bx0, by0), (bx1 - bx0) * scale, (by1 - by0) * scale);
    }
    ctx.setLineDash([]);
    const round = this.app.round?.() ?? 0;
    for (const p of prompts) {
      ctx.globalAlpha = (p.round ?? 0) < round ? 0.45 : 1;
      for (const c of p.clicks) {
        const [cx, cy] = at(c.x + 0.5, c.y + 0.5);
        const fill = c.positive ? '#2ecc40' : '#ff4136';
        ctx.beginPath();
        ctx.arc(cx, cy, 6, 0, 2 * Math.PI);
        ctx.fillStyle = p.round ? '#000' : fill;
        ctx.fill();
        ctx.lineWidth = p.round ? 3 : 2;
        ctx.strokeStyle = p.round ? fill : '#000';
        ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;
    ctx.lineWidth = 2;
  }

  /** The image pixel under a pointer event (may lie outside the image). */
  toImage(e) {
    const rect = this.canvas.getBoundingClientRect();
    const dpr = this.canvas.width / rect.width;
    const { scale, x, y } = this.layout();
    return [((e.clientX - rect.left) * dpr - x) / scale, ((e.clientY - rect.top) * dpr - y) / scale];
  }

  pointerDown(e) {
    if (!this.image || !this.app.canPaint()) return;
    if (this.app.tool() === 'prompt') return this.promptDown(e);
    if (e.button !== 0) return;
    this.canvas.setPointerCapture(e.pointerId);
    const labels = this.app.beginStroke(this.image.z);
    this.stroke = { labels, last: this.toImage(e) };
    this.stamp(...this.stroke.last);
    this.draw();
  }

  pointerMove(e) {
    if (this.drag) return this.promptMove(e);
    if (!this.stroke) return;
    const [x1, y1] = this.toImage(e);
    const [x0, y0] = this.stroke.last;
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0)));
    for (let s = 1; s <= steps; s++) this.stamp(x0 + ((x1 - x0) * s) / steps, y0 + ((y1 - y0) * s) / steps);
    this.stroke.last = [x1, y1];
    this.draw();
  }

  pointerUp(e) {
    if (this.drag) return this.promptUp(e);
    if (!this.stroke) return;
    this.stroke = null;
    this.app.endStroke(this.image.z);
    this.draw();
  }

  // The prompt tool: a click (left: on the structure; shift or right: background), or a drag: a box.
  promptDown(e) {
    if (e.button !== 0 && e.button !== 2) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.drag = { from: this.toImage(e), negative: e.button === 2 || e.shiftKey, box: null };
  }

  promptMove(e) {
    const [x, y] = this.toImage(e);
    const [fx, fy] = this.drag.from;
    // A drag of a few screen pixels is still a click.
    if (!this.drag.box && Math.hypot(x - fx, y - fy) * this.layout().scale < 6) return;
    this.drag.box = [Math.min(fx, x), Math.min(fy, y), Math.max(fx, x), Math.max(fy, y)];
    this.draw();
  }

  promptUp(e) {
    const { from, negative, box } = this.drag;
    this.drag = null;
    if (e?.type === 'pointercancel') return this.draw();
    if (box) this.app.box(this.image.z, from, this.toImage(e));
    else this.app.click(this.image.z, ...from, !negative);
    this.draw();
  }

  /** A disc of the brush's radius around image point (cx, cy), pixel centres inside it. */
  stamp(cx, cy) {
    const { width, height } = this.image;
    const r = this.app.brushRadius();
    const value = this.app.tool() === 'eraser' ? 0 : this.app.activeClass();
    const labels = this.stroke.labels;
    for (let y = Math.max(0, Math.floor(cy - r)); y <= Math.min(height - 1, Math.ceil(cy + r)); y++) {
      for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(width - 1, Math.ceil(cx + r)); x++) {
        if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) labels[y * width + x] = value;
      }
    }
  }
}
