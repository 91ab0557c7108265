// The service's HTTP API as the playground uses it: requests, errors, JSON and streamed (SSE) responses.

export class ApiError extends Error {
  constructor(message, { status = 0, type = null, code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    Object.assign(this, { status, type, code, param });
  }
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The service's error shape {"error": {message, type, param, code}} as an ApiError. */
function apiError(response, body) {
  const err = body && typeof body === "object" ? body.error : null;
  const message = err && err.message ? err.message : `HTTP ${response.status} ${response.statusText}`.trim();
  return new ApiError(message, {
    status: response.status,
    type: err ? err.type : null,
    code: err ? err.code : null,
    param: err ? err.param : null,
  });
}

/** What the response headers say about the run (streamed responses carry only model and seed). */
function responseMeta(response) {
  const h = response.headers;
  return {
    model: h.get("x-model"),
    weights: h.get("x-model-weights"),
    seed: h.get("x-seed"),
    lora: h.get("x-lora"),
    steps: h.get("x-num-inference-steps"),
    generateMs: h.get("x-generate-ms"),
    totalMs: h.get("x-total-ms"),
    denoiseMs: null,
  };
}

/** API paths relative to the page, which index.html keeps at the app root with a trailing slash. */
export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

/** Authorization for servers configured with API keys (the page itself is always open). */
function authHeaders(apiKey) {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

/** The request: JSON generations without images, multipart edits with them (mask: a File or null). */
export function buildRequest(fields, refs, mask, apiKey) {
  if (refs.length === 0) {
    return {
      kind: "generation",
      url: apiUrl("v1/images/generations"),
      init: {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders(apiKey) },
        body: JSON.stringify(fields),
      },
    };
  }
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    // A list of objects (lora) as the openai client flattens it: key[][field], repeated in the list's order.
    if (Array.isArray(value)) {
      for (const item of value) {
        for (const [field, v] of Object.entries(item)) form.append(`${key}[][${field}]`, String(v));
      }
    } else {
      form.append(key, String(value));
    }
  }
  for (const file of refs) form.append("image[]", file, file.name);
  if (mask) form.append("mask", mask, mask.name);
  const init = { method: "POST", headers: authHeaders(apiKey), body: form };
  return { kind: "edit", url: apiUrl("v1/images/edits"), init };
}

/** fetch, with a network failure turned into an ApiError that says so (an abort stays an AbortError). */
async function send(url, init, signal) {
  try {
    return await fetch(url, { ...init, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`Could not reach the server (${err.message}).`, { code: "network_error" });
  }
}

/** GET /v1/models: the model cards, limits and warm-up shapes included. */
export async function listModels(apiKey) {
  const response = await send(apiUrl("v1/models"), { headers: authHeaders(apiKey) });
  const body = await readJson(response);
  if (!response.ok) throw apiError(response, body);
  return (body && body.data) || [];
}

/** Non-streaming call: one JSON ImagesResponse. */
export async function requestImages(request, signal) {
  const response = await send(request.url, request.init, signal);
  const body = await readJson(response);
  if (!response.ok) throw apiError(response, body);
  if (!body || !Array.isArray(body.data) || body.data.length === 0) {
    throw new ApiError("the server answered without an image", { status: response.status });
  }
  return {
    ...responseMeta(response),
    images: body.data.map((item) => item.b64_json),
    format: body.output_format,
    size: body.size,
  };
}

/**
 * Streaming call (stream=true, server-sent events), used for models whose GET /v1/models entry says
 * "streaming": true. Events, as in the OpenAI Images API:
 *   image_edit.partial_image / image_generation.partial_image  {b64_json, partial_image_index, output_format}
 *   image_edit.completed / image_generation.completed          {b64_json, size, output_format}
 *   image_edit.progress / image_generation.progress            {step, num_steps, elapsed_s} (this server's extension)
 *   error                                                      {error: {message, type, param, code}}
 * A stream has no timing headers: the last progress event's elapsed_s (the server's clock, from the first
 * denoising step to the last) becomes denoiseMs.
 */
export async function requestImagesStream(request, signal, { onPartial, onProgress }) {
  const response = await send(request.url, request.init, signal);
  if (!response.ok) throw apiError(response, await readJson(response));
  const prefix = request.kind === "edit" ? "image_edit." : "image_generation.";
  const outcome = { ...responseMeta(response), images: [], format: null, size: null };

  const handle = (eventName, data) => {
    if (data === "[DONE]") return;
    const event = JSON.parse(data);
    const type = event.type || eventName;
    if (type === "error") {
      const err = event.error || {};
      throw new ApiError(err.message || "the stream reported an error", { ...err, status: response.status });
    } else if (type === prefix + "progress") {
      if (Number.isFinite(event.elapsed_s)) outcome.denoiseMs = event.elapsed_s * 1000;
      if (event.num_steps) outcome.steps = outcome.steps || String(event.num_steps);
      onProgress(event.step, event.num_steps);
    } else if (type === prefix + "partial_image") {
      onPartial(event.b64_json, event.output_format, event.partial_image_index);
    } else if (type === prefix + "completed") {
      outcome.images.push(event.b64_json);
      outcome.format = event.output_format || outcome.format;
      outcome.size = event.size || outcome.size;
    }
  };

  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const flush = (block) => {
    let eventName = "message";
    const data = [];
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") eventName = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) handle(eventName, data.join("\n"));
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
      buffer = blocks.pop();
      blocks.forEach(flush);
    }
    if (buffer.trim()) flush(buffer);
  } catch (err) {
    reader.cancel().catch(() => {}); // an error event or a bad event: stop reading, close the stream
    throw err;
  }
  if (outcome.images.length === 0) throw new ApiError("the stream ended before the image was complete");
  return outcome;
}
