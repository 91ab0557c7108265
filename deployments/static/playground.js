// The playground: the form, reference images and their mask, LoRA adapters, progress, results and this page's history.

import { ApiError, buildRequest, listModels, requestImages, requestImagesStream } from "./api.js";
import { AdapterPicker, adaptersLabel } from "./adapters.js";
import { MaskPainter } from "./mask.js";

const $ = (id) => document.getElementById(id);
const FORMATS = {
  png: { mime: "image/png", ext: "png", label: "PNG" },
  jpeg: { mime: "image/jpeg", ext: "jpg", label: "JPEG" },
  webp: { mime: "image/webp", ext: "webp", label: "WebP" },
};
// Offered after the model's warm-up shapes, where the server's limits allow them.
const SIZE_PRESETS = [[1024, 1024], [1152, 896], [896, 1152], [1344, 768], [768, 1344], [512, 512]];
const HISTORY_LIMIT = 50; // results kept on the page; older ones are dropped and their memory freed
const KEY_STORAGE = "flux2-playground.api-key";

const state = {
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  models: new Map(), // id -> card of GET /v1/models, base models only (an adapter's card is picked as a LoRA)
  refs: [], // {file, url}
  maskRef: null, // the reference the mask painter shows
  maskReady: Promise.resolve(),
  controller: null,
  timer: null,
  started: 0,
  previewUrl: null,
  beforeUrl: null,
  history: [], // results, newest first: {url, blob, name, format, prompt, seed, size, lora, ...timings, beforeFile}
  current: null, // the history entry on show
};

const painter = new MaskPainter({
  image: $("mask-image"),
  canvas: $("mask-canvas"),
  cursor: $("mask-cursor"),
  sizeInput: $("brush-size"),
  sizeOutput: $("brush-size-value"),
  onChange: showMaskState,
});

const adapters = new AdapterPicker({
  section: $("adapters-section"),
  rows: $("adapters-rows"),
  add: $("adapters-add"),
  hint: $("adapters-hint"),
});

// ---------------------------------------------------------------- models, limits and the demo banner

function selectedModel() {
  return state.models.get($("model").value) || null;
}

function describeWeights(weights, id) {
  if (weights === "random-tiny") {
    return `"${id}" is the tiny offline model with random weights: its images are noise. ` +
      "It exercises the API and this page, not image quality.";
  }
  return `"${id}" runs a full-size architecture with random weights (benchmark mode): its images are noise.`;
}

function updateBanner(weights, id) {
  const demo = Boolean(weights) && weights !== "pretrained";
  $("demo-banner").hidden = !demo;
  if (demo) $("demo-banner-text").textContent = describeWeights(weights, id);
}

function gcd(a, b) {
  return b ? gcd(b, a % b) : a;
}

function sizeOption(width, height) {
  const d = gcd(width, height);
  const ratio = width / d <= 21 && height / d <= 21 ? ` (${width / d}:${height / d})` : "";
  return new Option(`${width} × ${height}${ratio}`, `${width}x${height}`);
}

function optionGroup(label, sizes) {
  const group = document.createElement("optgroup");
  group.label = label;
  group.append(...sizes.map(([w, h]) => sizeOption(w, h)));
  return group;
}

/** Size choices: the model's warm-up shapes (served without compiling) first, then presets within the limits. */
function renderSizes(model) {
  const select = $("size");
  const previous = select.value;
  const limits = model && model.limits;
  const warm = [];
  for (const { width, height } of (model && model.warmup_shapes) || []) {
    if (!warm.some(([w, h]) => w === width && h === height)) warm.push([width, height]);
  }
  const fits = ([w, h]) => !limits ||
    (Math.min(w, h) >= limits.min_side && Math.max(w, h) <= limits.max_side && w * h <= limits.max_output_pixels);
  const others = SIZE_PRESETS.filter((s) => fits(s) && !warm.some(([w, h]) => w === s[0] && h === s[1]));
  select.replaceChildren(new Option("Auto", "auto"));
  if (warm.length) select.append(optionGroup("Warmed up", warm));
  if (others.length) select.append(optionGroup("Other sizes", others));
  select.append(new Option("Custom…", "custom"));
  select.value = [...select.options].some((o) => o.value === previous) ? previous : "auto";
  $("custom-size").hidden = select.value !== "custom";
}

/** Bound the controls by the server's limits, so that the page offers only what the server accepts. */
function applyLimits(limits) {
  const bound = (id, min, max) => {
    const input = $(id);
    if (min != null) input.min = String(min);
    if (max != null) input.max = String(max);
    else input.removeAttribute("max");
    clampInput(input);
  };
  bound("n", 1, limits && limits.max_n);
  bound("steps", 1, limits && limits.max_steps);
  for (const id of ["width", "height"]) bound(id, limits ? Math.ceil(limits.min_side / 16) * 16 : 16, limits && limits.max_side);
  if (limits) $("prompt").maxLength = limits.max_prompt_chars;
  const refs = maxRefs();
  $("refs-hint").textContent = `PNG, JPEG or WebP${refs != null ? `, up to ${refs} images` : ""}. ` +
    "You can also paste. Leave empty for text-to-image.";
}

function clampInput(input) {
  const raw = input.value.trim();
  if (raw === "" || !Number.isFinite(Number(raw))) return;
  const value = Number(raw);
  const max = input.max === "" ? Infinity : Number(input.max);
  const min = input.min === "" ? -Infinity : Number(input.min);
  if (value > max || value < min) input.value = String(Math.min(max, Math.max(min, value)));
}

function maxRefs() {
  const model = selectedModel();
  return model && model.limits ? model.limits.max_reference_images : null;
}

function onModelChange() {
  const model = selectedModel();
  $("steps").placeholder = model && model.default_steps ? `${model.default_steps} (default)` : "default";
  $("guidance").placeholder = model && model.default_guidance_scale != null
    ? `${model.default_guidance_scale} (default)` : "default";
  if (model && model.default_size) {
    const [width, height] = model.default_size.split("x");
    $("width").value = width;
    $("height").value = height;
  }
  renderSizes(model);
  applyLimits(model ? model.limits : null);
  adapters.setModel(model);
  updateBanner(model ? model.weights : null, model ? model.id : "");
}

async function loadModels() {
  const status = $("service-status");
  const select = $("model");
  try {
    const entries = (await listModels(state.apiKey)).filter((entry) => entry.parent == null);
    $("auth-form").hidden = true;
    select.replaceChildren();
    for (const entry of entries) {
      state.models.set(entry.id, entry);
      const family = entry.family ? ` · FLUX.2 ${entry.family}` : "";
      const demo = entry.is_demo ? " · demo weights" : "";
      select.append(new Option(`${entry.id}${family}${demo}`, entry.id));
    }
    if (entries.length === 0) select.append(new Option("Server default", ""));
    status.textContent = `${entries.length} model${entries.length === 1 ? "" : "s"} available`;
    status.dataset.state = "ok";
  } catch (err) {
    state.models.clear();
    select.replaceChildren(new Option("Server default", ""));
    status.textContent = err.status === 401 ? "API key required" : "Model list unavailable";
    status.dataset.state = "down";
    showError(err, "Could not load the model list");
    if (err.status === 401) askForKey();
  }
  onModelChange();
}

function askForKey() {
  $("auth-form").hidden = false;
  $("api-key").focus();
}

function setupAuth() {
  $("api-key").value = state.apiKey;
  $("auth-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.apiKey = $("api-key").value.trim();
    if (state.apiKey) sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
    clearError();
    await loadModels();
  });
}

// ---------------------------------------------------------------- reference images and the mask

function addFiles(files) {
  const limit = maxRefs();
  const room = limit == null ? files.length : Math.max(0, limit - state.refs.length);
  const accepted = [...files].slice(0, room);
  for (const file of accepted) state.refs.push({ file, url: URL.createObjectURL(file) });
  if (accepted.length < files.length) {
    showError(new Error(`This server takes at most ${limit} reference images; ${files.length - accepted.length} ` +
      "not added."), "Too many reference images");
  }
  renderRefs();
}

function removeRef(index) {
  const [ref] = state.refs.splice(index, 1);
  if (ref) URL.revokeObjectURL(ref.url);
  renderRefs();
  const buttons = $("thumbs").querySelectorAll("button.remove");
  (buttons[Math.min(index, buttons.length - 1)] || $("file-input")).focus();
}

/** Reference 1 becomes `file` (an earlier result), the others stay; its mask goes along when `keepMask`. */
function replaceFirstRef(file, keepMask) {
  const ref = { file, url: URL.createObjectURL(file) };
  if (state.refs.length) URL.revokeObjectURL(state.refs[0].url);
  state.refs.splice(0, 1, ref);
  renderRefs(keepMask);
}

function renderRefs(keepMask = false) {
  const list = $("thumbs");
  list.replaceChildren();
  state.refs.forEach((ref, i) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.alt = `Reference ${i + 1}: ${ref.file.name}`;
    img.src = ref.url;
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = ref.file.name;
    caption.title = ref.file.name;
    img.addEventListener("load", () => {
      caption.textContent = `${img.naturalWidth}×${img.naturalHeight} · ${ref.file.name}`;
    });
    img.addEventListener("error", () => {
      const broken = document.createElement("div");
      broken.className = "broken";
      broken.textContent = "No preview";
      img.replaceWith(broken);
    });
    const order = document.createElement("span");
    order.className = "order";
    order.textContent = String(i + 1);
    order.setAttribute("aria-hidden", "true");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove reference ${i + 1} (${ref.file.name})`);
    remove.addEventListener("click", () => removeRef(i));
    item.append(img, order, remove, caption);
    list.append(item);
  });
  $("submit").textContent = state.refs.length === 0 ? "Generate" : "Edit";
  syncMask(keepMask);
  showMode();
}

/** The mask painter follows reference 1: a new first image starts a blank mask unless told to keep it. */
function syncMask(keep) {
  const first = state.refs[0] || null;
  $("mask-section").hidden = !first;
  if (first === state.maskRef) return;
  state.maskRef = first;
  if (first) {
    state.maskReady = painter.setImage(first.url, keep).catch(() => {
      // Not decodable here (the server will say why when it is sent), or superseded by another image.
      if (state.maskRef === first) $("mask-section").hidden = true;
    });
  }
}

function showMode() {
  const n = state.refs.length;
  const masked = n > 0 && painter.paintedCount > 0 ? ", masked" : "";
  $("mode").innerHTML = n === 0
    ? "Mode: <strong>text-to-image</strong>"
    : `Mode: <strong>edit</strong> with ${n} reference image${n === 1 ? "" : "s"}${masked}`;
}

function showMaskState() {
  const painted = painter.paintedCount;
  const share = painter.mask.length ? (100 * painted) / painter.mask.length : 0;
  $("mask-status").textContent = painted
    ? `${share.toFixed(1)}% of the first image painted: only that part may change.`
    : "Nothing painted: the whole image may change.";
  $("mask-undo").disabled = painter.undoStack.length === 0;
  $("keep-mask-label").hidden = painted === 0;
  showMode();
}

function setupMask() {
  const setTool = (erasing) => {
    painter.setErasing(erasing);
    $("mask-paint").setAttribute("aria-pressed", String(!erasing));
    $("mask-erase").setAttribute("aria-pressed", String(erasing));
  };
  $("mask-paint").addEventListener("click", () => setTool(false));
  $("mask-erase").addEventListener("click", () => setTool(true));
  $("mask-invert").addEventListener("click", () => painter.invert());
  $("mask-clear").addEventListener("click", () => painter.clear());
  $("mask-undo").addEventListener("click", () => painter.undo());
  $("mask-section").addEventListener("keydown", (e) => {
    if (e.key.toLowerCase() === "z" && (e.ctrlKey || e.metaKey) && !e.shiftKey) {
      e.preventDefault();
      painter.undo();
    }
  });
  const input = $("mask-file");
  input.addEventListener("change", async () => {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    clearError();
    try {
      await state.maskReady;
      await painter.loadFile(file);
    } catch (err) {
      showError(err, "Mask not loaded");
    }
  });
}

function setupDropzone() {
  const zone = $("dropzone");
  const input = $("file-input");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    addFiles(e.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  window.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
}

// ---------------------------------------------------------------- form → request parameters

function formParams() {
  const params = { prompt: $("prompt").value, output_format: $("output-format").value };
  if ($("model").value) params.model = $("model").value;
  const chosen = adapters.chosen();
  if (chosen.length) params.lora = chosen;
  const size = $("size").value;
  params.size = size === "custom" ? `${$("width").value.trim()}x${$("height").value.trim()}` : size;
  const optional = [["n", "n"], ["steps", "num_inference_steps"], ["seed", "seed"], ["guidance", "guidance_scale"]];
  for (const [id, key] of optional) {
    const raw = $(id).value.trim();
    if (raw === "") continue;
    // An integer past 2^53 (seeds go to 2^62) would lose digits as a JS number: send its digits as a string.
    params[key] = Number.isSafeInteger(Number(raw)) || key === "guidance_scale" ? Number(raw) : raw;
  }
  return params;
}

// ---------------------------------------------------------------- progress and errors

function showError(err, title = "Request failed") {
  const box = $("error");
  box.replaceChildren();
  const heading = document.createElement("p");
  heading.className = "title";
  heading.textContent = title;
  const message = document.createElement("p");
  message.className = "message";
  message.id = "error-message";
  message.textContent = err && err.message ? err.message : String(err);
  box.append(heading, message);
  const parts = [];
  if (err && err.status) parts.push(`HTTP ${err.status}`);
  if (err && err.code) parts.push(`code: ${err.code}`);
  if (err && err.param) parts.push(`param: ${err.param}`);
  if (parts.length) {
    const details = document.createElement("p");
    details.className = "details";
    details.textContent = parts.join(" · ");
    box.append(details);
  }
}

function clearError() {
  $("error").replaceChildren();
}

function tick() {
  const seconds = (performance.now() - state.started) / 1000;
  $("elapsed").textContent = `${seconds.toFixed(1)} s`;
}

function startProgress(label) {
  state.started = performance.now();
  const bar = $("progress-bar");
  bar.removeAttribute("value"); // indeterminate until the server reports steps
  bar.removeAttribute("aria-valuetext");
  $("progress-label").textContent = label;
  $("preview").hidden = true;
  $("progress").hidden = false;
  $("empty").hidden = true;
  $("stage").setAttribute("aria-busy", "true");
  $("submit").disabled = true;
  $("cancel").hidden = false;
  tick();
  state.timer = setInterval(tick, 100);
}

function setStepProgress(step, total) {
  if (!(total > 0)) return;
  const bar = $("progress-bar");
  bar.max = total;
  bar.value = Math.min(step, total);
  bar.setAttribute("aria-valuetext", `step ${step} of ${total}`);
  $("progress-label").textContent = `Step ${step} of ${total}`;
}

function showPartial(b64, format, index) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(b64ToBlob(b64, (FORMATS[format] || FORMATS.png).mime));
  $("preview-image").src = state.previewUrl;
  $("preview-label").textContent = `Preview ${Number(index) + 1}`;
  $("preview").hidden = false;
}

function stopProgress() {
  clearInterval(state.timer);
  state.timer = null;
  tick();
  $("progress").hidden = true;
  $("stage").removeAttribute("aria-busy");
  $("submit").disabled = false;
  $("cancel").hidden = true;
  if ($("result").hidden) $("empty").hidden = false;
}

// ---------------------------------------------------------------- results and this page's history

function b64ToBlob(b64, mime) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: mime });
}

function addMeta(list, name, value) {
  if (value == null || value === "") return;
  const row = document.createElement("div");
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  row.append(dt, dd);
  list.append(row);
}

/** A duration for the meta list, or null (the row is left out) when the server did not report it. */
function formatMs(ms) {
  if (ms == null || ms === "") return null;
  const value = Number(ms);
  if (!Number.isFinite(value)) return null;
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

/** One history entry per image of the outcome; image i was made with seed + i. */
function addResults(outcome, params, beforeFile, roundTripMs) {
  const format = FORMATS[outcome.format] || FORMATS.png;
  const { images, ...meta } = outcome;
  const entries = images.map((b64, i) => {
    const blob = b64ToBlob(b64, format.mime);
    const seed = outcome.seed == null ? null : String(BigInt(outcome.seed) + BigInt(i));
    return {
      ...meta,
      url: URL.createObjectURL(blob),
      blob,
      name: `flux2-${seed || "image"}.${format.ext}`,
      format,
      seed,
      prompt: params.prompt,
      // The server's name for the adapters; a stream has no headers, so then the page's own name for what it sent.
      lora: meta.lora ?? adaptersLabel(params.lora || []),
      beforeFile,
      roundTripMs,
    };
  });
  state.history.unshift(...entries);
  for (const dropped of state.history.splice(HISTORY_LIMIT)) URL.revokeObjectURL(dropped.url);
  renderHistory();
  return entries[0];
}

function renderHistory() {
  const list = $("history-list");
  list.replaceChildren();
  for (const entry of state.history) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.title = entry.prompt;
    button.setAttribute("aria-current", String(entry === state.current));
    const img = document.createElement("img");
    img.src = entry.url;
    img.alt = "";
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = entry.prompt;
    const seed = document.createElement("span");
    seed.className = "seed";
    seed.textContent = entry.seed == null ? entry.size || "" : `seed ${entry.seed}`;
    button.append(img, prompt, seed);
    if (entry.lora) {
      const label = document.createElement("span");
      label.className = "adapters";
      label.textContent = entry.lora;
      button.append(label);
    }
    button.addEventListener("click", () => showEntry(entry));
    item.append(button);
    list.append(item);
  }
  $("history").hidden = state.history.length === 0;
}

async function showEntry(entry) {
  state.current = entry;
  const compare = $("compare");
  if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
  state.beforeUrl = entry.beforeFile ? URL.createObjectURL(entry.beforeFile) : null;
  if (state.beforeUrl) $("before-image").src = state.beforeUrl;
  else $("before-image").removeAttribute("src");
  compare.classList.toggle("with-before", Boolean(state.beforeUrl));
  $("compare-slider").value = "50";
  compare.style.setProperty("--split", "50%");

  const meta = $("meta");
  meta.replaceChildren();
  addMeta(meta, "Size", entry.size);
  addMeta(meta, "Seed", entry.seed);
  addMeta(meta, "Steps", entry.steps);
  addMeta(meta, "Model", entry.model);
  addMeta(meta, "LoRA", entry.lora);
  addMeta(meta, "Generate", formatMs(entry.generateMs));
  addMeta(meta, "Denoising", formatMs(entry.denoiseMs));
  addMeta(meta, "Round trip", formatMs(entry.roundTripMs));
  $("reuse-seed").hidden = !entry.seed;

  const link = $("download");
  link.href = entry.url;
  link.download = entry.name;
  link.textContent = `Download ${entry.format.label}`;
  for (const [i, item] of [...$("history-list").children].entries()) {
    item.firstChild.setAttribute("aria-current", String(state.history[i] === entry));
  }
  $("result").hidden = false;
  $("empty").hidden = true;
  if (entry.weights) updateBanner(entry.weights, entry.model || $("model").value);

  const img = $("result-image");
  img.src = entry.url;
  try {
    await img.decode();
  } catch {
    return;
  }
  const ratio = img.naturalWidth / img.naturalHeight;
  compare.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
  compare.style.width = `min(100%, calc(68vh * ${ratio}))`;
}

/** The result on show becomes reference 1, so that the next edit starts from it. */
function editCurrentResult() {
  const entry = state.current;
  if (!entry || state.controller) return;
  const file = new File([entry.blob], entry.name, { type: entry.blob.type });
  replaceFirstRef(file, $("keep-mask").checked);
  $("announce").textContent = `${entry.name} is now reference image 1.`;
  $("prompt").focus();
}

// ---------------------------------------------------------------- submit

async function submit(event) {
  event.preventDefault();
  if (state.controller) return;
  clearError();
  if (!$("prompt").value.trim()) {
    showError(new Error("Enter a prompt first."), "Missing prompt");
    $("prompt").focus();
    return;
  }
  const params = formParams();
  const refs = state.refs.map((ref) => ref.file);
  await state.maskReady;
  const mask = refs.length ? await painter.toFile() : null;
  const model = state.models.get(params.model || "");
  const streaming = Boolean(model && model.streaming);
  const fields = streaming ? { ...params, stream: true, partial_images: 2 } : params;
  const request = buildRequest(fields, refs, mask, state.apiKey);
  state.controller = new AbortController();
  startProgress(request.kind === "edit" ? "Editing…" : "Generating…");
  try {
    const outcome = streaming
      ? await requestImagesStream(request, state.controller.signal, { onPartial: showPartial, onProgress: setStepProgress })
      : await requestImages(request, state.controller.signal);
    const entry = addResults(outcome, params, refs[0] || null, performance.now() - state.started);
    await showEntry(entry);
    $("announce").textContent = `Image ready: ${entry.size || ""}, seed ${entry.seed || "unknown"}.`;
  } catch (err) {
    if (err.name === "AbortError") showError(new Error("The request was cancelled."), "Cancelled");
    else if (err instanceof ApiError) showError(err, err.code === "network_error" ? "Network error" : "Request failed");
    else showError(err, "Something went wrong");
    if (err.status === 401) askForKey();
  } finally {
    state.controller = null;
    stopProgress();
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  setupAuth();
  setupDropzone();
  setupMask();
  renderRefs();
  $("form").addEventListener("submit", submit);
  $("form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("form").requestSubmit();
    }
  });
  $("cancel").addEventListener("click", () => state.controller && state.controller.abort());
  $("model").addEventListener("change", onModelChange);
  $("size").addEventListener("change", () => {
    $("custom-size").hidden = $("size").value !== "custom";
  });
  for (const id of ["n", "steps", "width", "height"]) $(id).addEventListener("change", () => clampInput($(id)));
  $("compare-slider").addEventListener("input", (e) => {
    $("compare").style.setProperty("--split", `${e.target.value}%`);
  });
  $("reuse-seed").addEventListener("click", () => {
    if (state.current && state.current.seed) $("seed").value = state.current.seed;
    $("seed").focus();
  });
  $("edit-result").addEventListener("click", editCurrentResult);
  loadModels();
}

init();
