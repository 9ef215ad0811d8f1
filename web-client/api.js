// Talking to the ai-writer server: GET /api/info, GET /healthz and the streaming POST /api/continue.

/** An error the server answered with ({error: {message, type, param}}), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(message, { status = 0, type = "network_error", param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.param = param;
  }
}

function headers(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function send(path, options) {
  try {
    return await fetch(path, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(error.message || String(error));
  }
}

/** The server's JSON error body as an ApiError (or a plain one when the body is not ours). */
async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall through
  }
  const error = body && body.error;
  const message = error && error.message ? error.message : `HTTP ${response.status} ${response.statusText}`;
  return new ApiError(message, { status: response.status, type: error?.type, param: error?.param ?? null });
}

/** GET /api/info: the model, the limits and the default settings. */
export async function getInfo(token) {
  const response = await send("api/info", { headers: headers(token), cache: "no-store" });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** GET /healthz: true when the server answers. */
export async function isHealthy() {
  try {
    const response = await fetch("healthz", { cache: "no-store" });
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * POST /api/continue and read its event stream; `onEvent(name, data)` is called for every
 * chunk, finish and done event. Resolves with the done event's data; rejects with an ApiError
 * (an HTTP error, or an `error` event), or with an AbortError when `signal` aborts.
 */
export async function streamContinue(body, { token, signal, onEvent }) {
  const response = await send("api/continue", {
    method: "POST",
    headers: headers(token, { "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.getReader();
  const parser = new EventStreamParser();
  const decoder = new TextDecoder();
  let done = null;
  for (;;) {
    let part;
    try {
      part = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(error.message || String(error), { type: "stream_error" });
    }
    const text = part.done ? decoder.decode() : decoder.decode(part.value, { stream: true });
    for (const event of parser.push(text)) {
      const data = JSON.parse(event.data);
      if (event.name === "error") {
        const error = data.error || {};
        throw new ApiError(error.message || "generation failed", { status: 200, type: error.type, param: error.param });
      }
      if (event.name === "done") done = data;
      onEvent(event.name, data);
    }
    if (part.done) break;
  }
  if (done === null) throw new ApiError("the stream ended before the continuation was done", { type: "stream_error" });
  return done;
}

/** Splits a text/event-stream into events ({name, data}) as its text arrives in pieces. */
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.carriageReturn = false; // the last piece ended in "\r": the next may start with its "\n"
  }

  /** Feed the next piece of text; returns the events it completed. */
  push(text) {
    let piece = this.carriageReturn ? `\r${text}` : text;
    this.carriageReturn = piece.endsWith("\r");
    if (this.carriageReturn) piece = piece.slice(0, -1);
    this.buffer += piece.replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) events.push(event);
    }
    return events;
  }
}

function parseBlock(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: data.join("\n") } : null;
}
