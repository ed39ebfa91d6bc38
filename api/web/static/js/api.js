// The HTTP API as the page uses it: the bearer key, errors turned into plain words, and Server-Sent Events over
// fetch (EventSource cannot POST a question or send an Authorization header).

const KEY_NAME = "rag.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// The key lives in sessionStorage (this tab) unless the person asked to be remembered (localStorage).
export const apiKey = {
  get: () => sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "",
  set(value, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(KEY_NAME, value);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
    localStorage.removeItem(KEY_NAME);
  },
};

const unauthorizedListeners = [];

// Called with the error whenever the server refuses the key, wherever the request came from.
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

const LEADS = {
  400: "The server could not do that.",
  401: "The API key was refused.",
  403: "Not allowed.",
  404: "Not found.",
  409: "That conflicts with the current state.",
  413: "That is too large for the server.",
  415: "The server does not accept that kind of request.",
  422: "The request was not accepted.",
  429: "The server is busy; try again shortly.",
  503: "The server is not ready; try again shortly.",
};

// The server's own message when it sent one (they are written for people), else a sentence for the status.
function plainWords(status, message) {
  if (status === 401 || !message) {
    return LEADS[status] || (status >= 500 ? "The server failed." : `The server answered ${status}.`);
  }
  const sentence = message.charAt(0).toUpperCase() + message.slice(1);
  return /[.!?)]$/.test(sentence) ? sentence : `${sentence}.`;
}

async function errorOf(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body?.error?.message || (typeof body?.detail === "string" ? body.detail : "");
  } catch {
    // not JSON (a proxy's error page, say): the status alone has to do
  }
  const error = new ApiError(response.status, plainWords(response.status, message));
  if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
  return error;
}

async function send(path, { method = "GET", json, form, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The server could not be reached. Check that it is running, then try again.");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export const api = {
  get: async (path) => (await send(path)).json(),
  post: async (path, json) => (await send(path, { method: "POST", json })).json(),
  upload: async (path, form) => (await send(path, { method: "POST", form })).json(),
  delete: async (path) => (await send(path, { method: "DELETE" })).json(),
};

// POST ``json`` and call ``onEvent(name, data)`` for each event of the SSE answer, as it arrives. The server
// frames events as ``event: NAME\ndata: JSON\n\n`` (api/streaming.py); ``signal`` aborts the request.
export async function streamEvents(path, json, signal, onEvent) {
  const response = await send(path, { method: "POST", json, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event.name, event.data);
      end = buffer.indexOf("\n\n");
    }
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon === 0) continue; // a comment (keep-alive)
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}
