// Prompt editor for "SAM Video Mask (OCD)": shows the key frame inside the node and turns
// clicks into Segment Anything prompts.
//   left click = object point, right click = background point, drag = box,
//   Undo / Clear buttons, ◀ ▶ choose the key frame, "mask" toggles the result overlay.
// The prompts live in the node's "prompts" widget (JSON, see ocd/sam_video.py), so they are
// saved with the workflow and reloaded with it; this editor only reads and writes that value.
// Frames come from the node's last run (ui "ocd_frames", and "ocd_overlays" with the mask), from the
// "no prompt yet" message the node sends before failing (event "ocd.sam_frames"), or from an
// upstream node that previews images (e.g. Load Image).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "OCD_SAMVideoMask";
const PROMPTS = "prompts";
const EDITOR = "ocd_sam_editor";
const DRAG_MIN = 6; // canvas pixels before a press becomes a box drag
const EMPTY = { frame: 0, width: 0, height: 0, points: [], labels: [], box: null };

function viewUrl(item) {
  const q = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder ?? "", type: item.type ?? "temp" });
  return api.apiURL(`/view?${q}&rand=${Math.random()}`);
}

function loadImage(src) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = src;
  });
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.className = "ocd-sam-button";
  Object.assign(b.style, {
    padding: "1px 6px", fontSize: "11px", cursor: "pointer", borderRadius: "4px",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #222)",
    color: "var(--input-text, #ddd)",
  });
  b.addEventListener("click", (e) => { e.preventDefault(); e.stopPropagation(); onClick(); });
  return b;
}

class SamPromptEditor {
  constructor(node) {
    this.node = node;
    this.frames = [];     // raw frames (Image) by index
    this.overlays = [];   // mask overlays (Image) by index, after a run
    this.showMask = true;
    this.history = [];    // previous prompt states, for Undo
    this.drag = null;     // {x0, y0, x1, y1, button} in canvas pixels while pressing

    this.root = document.createElement("div");
    this.root.className = "ocd-sam-editor";
    Object.assign(this.root.style, { display: "flex", flexDirection: "column", gap: "3px", width: "100%", height: "100%" });
    const bar = document.createElement("div");
    Object.assign(bar.style, { display: "flex", gap: "4px", alignItems: "center", fontSize: "11px", color: "var(--input-text, #ddd)" });
    this.frameLabel = document.createElement("span");
    this.maskToggle = document.createElement("input");
    this.maskToggle.type = "checkbox";
    this.maskToggle.checked = true;
    this.maskToggle.title = "Show the mask of the last run";
    this.maskToggle.addEventListener("change", () => { this.showMask = this.maskToggle.checked; this.draw(); });
    const maskLabel = document.createElement("label");
    maskLabel.append(this.maskToggle, " mask");
    bar.append(
      button("Undo", "Remove the last point or box", () => this.undo()),
      button("Clear", "Remove all points and the box", () => this.clear()),
      button("◀", "Previous key frame", () => this.setFrame(this.prompts().frame - 1)),
      this.frameLabel,
      button("▶", "Next key frame", () => this.setFrame(this.prompts().frame + 1)),
      maskLabel,
    );
    this.canvas = document.createElement("canvas");
    this.canvas.className = "ocd-sam-canvas";
    Object.assign(this.canvas.style, { flex: "1 1 auto", width: "100%", minHeight: "120px", cursor: "crosshair", background: "#111", borderRadius: "4px" });
    this.root.append(bar, this.canvas);

    this.canvas.addEventListener("contextmenu", (e) => { e.preventDefault(); e.stopPropagation(); });
    this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  // ---- prompt state (the widget value is the single source of truth) ----
  widget() { return this.node.widgets?.find((w) => w.name === PROMPTS); }

  prompts() {
    try {
      return { ...EMPTY, ...JSON.parse(this.widget()?.value || "{}") };
    } catch {
      return { ...EMPTY };
    }
  }

  write(next, remember = true) {
    const w = this.widget();
    if (!w) return;
    if (remember) this.history.push(w.value);
    w.value = JSON.stringify(next);
    w.callback?.(w.value);
    this.node.graph?.setDirtyCanvas?.(true, true);
    this.draw();
  }

  undo() {
    const w = this.widget();
    if (!w) return;
    if (this.history.length) {
      this.write(JSON.parse(this.history.pop() || "{}"), false);
      return;
    }
    const p = this.prompts(); // nothing recorded (e.g. just loaded): drop the newest thing
    if (p.points.length) { p.points.pop(); p.labels.pop(); } else p.box = null;
    this.write(p, false);
  }

  clear() { this.write({ ...this.prompts(), points: [], labels: [], box: null }); }

  setFrame(index) {
    const count = Math.max(this.frames.length, 1);
    const frame = Math.min(Math.max(0, index), count - 1);
    this.write({ ...this.prompts(), frame });
  }

  // ---- images ----
  async setFrames(frameItems, overlayItems) {
    const frames = await Promise.all((frameItems ?? []).map((f) => loadImage(viewUrl(f))));
    const overlays = await Promise.all((overlayItems ?? []).map((f) => loadImage(viewUrl(f))));
    this.frames = frames;
    this.overlays = overlays;
    this.draw();
  }

  upstreamImage() {
    // an upstream node that previews images (Load Image, Preview Image...) gives a key frame
    const input = this.node.inputs?.find((i) => i.name === "images");
    if (input?.link == null) return null;
    const link = this.node.graph?.links?.[input.link] ?? this.node.graph?.links?.get?.(input.link);
    const origin = link && this.node.graph.getNodeById(link.origin_id);
    const img = origin?.imgs?.[0];
    return img?.complete && img.naturalWidth ? img : null;
  }

  currentImage() {
    const frame = this.prompts().frame;
    if (this.showMask && this.overlays[frame]) return this.overlays[frame];
    return this.frames[frame] ?? this.upstreamImage();
  }

  layout(img) {
    const cw = this.canvas.width, ch = this.canvas.height;
    const scale = Math.min(cw / img.naturalWidth, ch / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    return { scale, x: (cw - w) / 2, y: (ch - h) / 2, w, h };
  }

  // canvas pixels <-> pixels of the image the prompts refer to
  toImage(cx, cy, img) {
    const l = this.layout(img);
    return [(cx - l.x) / l.scale, (cy - l.y) / l.scale];
  }

  eventPos(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  // ---- mouse ----
  onDown(e) {
    e.preventDefault();
    e.stopPropagation();
    if (e.button !== 0 && e.button !== 2) return;
    const [x, y] = this.eventPos(e);
    this.drag = { x0: x, y0: y, x1: x, y1: y, button: e.button, moved: false };
    this.canvas.setPointerCapture?.(e.pointerId);
  }

  onMove(e) {
    if (!this.drag) return;
    e.preventDefault();
    e.stopPropagation();
    const [x, y] = this.eventPos(e);
    Object.assign(this.drag, { x1: x, y1: y });
    if (Math.hypot(x - this.drag.x0, y - this.drag.y0) >= DRAG_MIN) this.drag.moved = true;
    this.draw();
  }

  onUp(e) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    e.preventDefault();
    e.stopPropagation();
    const img = this.currentImage();
    if (!img) { this.draw(); return; }
    const W = img.naturalWidth, H = img.naturalHeight;
    const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
    const p = this.prompts();
    p.width = W;
    p.height = H;
    if (drag.moved && drag.button === 0) {
      const [ax, ay] = this.toImage(drag.x0, drag.y0, img);
      const [bx, by] = this.toImage(drag.x1, drag.y1, img);
      p.box = [clamp(Math.min(ax, bx), W), clamp(Math.min(ay, by), H), clamp(Math.max(ax, bx), W), clamp(Math.max(ay, by), H)]
        .map((v) => Math.round(v * 10) / 10);
    } else {
      const [ix, iy] = this.toImage(drag.x0, drag.y0, img);
      if (ix < 0 || iy < 0 || ix > W || iy > H) { this.draw(); return; } // outside the frame
      p.points = [...p.points, [Math.round(ix * 10) / 10, Math.round(iy * 10) / 10]];
      p.labels = [...(p.labels ?? []), drag.button === 2 ? 0 : 1];
    }
    this.write(p);
  }

  // ---- drawing ----
  draw() {
    const c = this.canvas;
    const r = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    const p = this.prompts();
    const count = this.frames.length;
    this.frameLabel.textContent = count ? `frame ${p.frame + 1}/${count}` : `frame ${p.frame + 1}`;
    const img = this.currentImage();
    if (!img) {
      ctx.fillStyle = "#aaa";
      ctx.font = `${12 * dpr}px sans-serif`;
      ctx.textAlign = "center";
      ctx.fillText("Queue the workflow once to show the key frame here,", c.width / 2, c.height / 2 - 8 * dpr);
      ctx.fillText("then click on the object.", c.width / 2, c.height / 2 + 10 * dpr);
      return;
    }
    const l = this.layout(img);
    ctx.drawImage(img, l.x, l.y, l.w, l.h);
    const sx = (v) => l.x + v * l.scale * (p.width ? img.naturalWidth / p.width : 1);
    const sy = (v) => l.y + v * l.scale * (p.height ? img.naturalHeight / p.height : 1);
    ctx.lineWidth = 2 * dpr;
    if (p.box) {
      ctx.strokeStyle = "#ffd400";
      ctx.strokeRect(sx(p.box[0]), sy(p.box[1]), sx(p.box[2]) - sx(p.box[0]), sy(p.box[3]) - sy(p.box[1]));
    }
    p.points.forEach(([x, y], i) => {
      ctx.beginPath();
      ctx.arc(sx(x), sy(y), 5 * dpr, 0, Math.PI * 2);
      ctx.fillStyle = p.labels?.[i] === 0 ? "#ff3b3b" : "#2ee65a";
      ctx.fill();
      ctx.strokeStyle = "#000";
      ctx.stroke();
    });
    if (this.drag?.moved && this.drag.button === 0) {
      ctx.setLineDash([4 * dpr, 3 * dpr]);
      ctx.strokeStyle = "#ffd400";
      ctx.strokeRect(this.drag.x0, this.drag.y0, this.drag.x1 - this.drag.x0, this.drag.y1 - this.drag.y0);
      ctx.setLineDash([]);
    }
  }
}

app.registerExtension({
  name: "OCD.SAMEditor",
  setup() {
    // the node found no prompt: it sent its frames before failing, so the user can click
    api.addEventListener("ocd.sam_frames", ({ detail }) => {
      const node = app.graph?.getNodeById?.(Number(detail?.node)) ?? app.graph?.getNodeById?.(detail?.node);
      node?.ocdSamEditor?.setFrames(detail.frames, []);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const editor = new SamPromptEditor(this);
      this.ocdSamEditor = editor;
      this.addDOMWidget(EDITOR, EDITOR, editor.root, {
        serialize: false, // the prompts widget carries the state; workflows keep their layout
        hideOnZoom: false,
        getMinHeight: () => 220,
      });
      const prompts = editor.widget();
      if (prompts) {
        const callback = prompts.callback;
        prompts.callback = function () { const out = callback?.apply(this, arguments); editor.draw(); return out; };
      }
      this.setSize([Math.max(this.size[0], 360), Math.max(this.size[1], 360)]);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.ocd_frames) this.ocdSamEditor?.setFrames(message.ocd_frames, message.ocd_overlays);
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      this.ocdSamEditor?.draw(); // a loaded workflow: show its saved prompts
      return r;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function () {
      const r = onDrawForeground?.apply(this, arguments);
      const ed = this.ocdSamEditor;
      if (ed && !ed.frames.length) {
        const up = ed.upstreamImage();
        if (up !== ed.lastUpstream) { ed.lastUpstream = up; ed.draw(); }
      }
      return r;
    };
  },
});
