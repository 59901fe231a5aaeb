// Calls to this service: the key from this tab's session, JSON in and out, server-sent
// events read from fetch (EventSource cannot send a key), and the error envelope.

import { t } from "./i18n.js";

const KEY = "console.key";
const STATUS_OF_TYPE = {
  invalid_request_error: 400,
  authentication_error: 401,
  permission_error: 403,
  not_found_error: 404,
  conflict_error: 409,
  rate_limit_error: 429,
  request_cancelled: 499,
  service_unavailable_error: 503,
  timeout_error: 504,
};
// The app's root, whatever route prefix it is served under (the page is <root>/console).
export const API_ROOT = new URL("./", location.href);

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), API_ROOT).toString();
}

/** A refusal or failure, with the service's envelope when it sent one. */
export class ApiError extends Error {
  constructor(status, error, requestId) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.error = error || null;
    this.requestId = requestId || null;
  }
}

function headers(json) {
  const result = {};
  const key = apiKey();
  if (key) result.Authorization = `Bearer ${key}`;
  if (json) result["Content-Type"] = "application/json";
  return result;
}

async function send(method, path, body, signal) {
  let response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (failure) {
    if (failure.name === "AbortError") throw failure;
    throw new ApiError(0, null, null);
  }
  if (!response.ok) {
    let envelope = null;
    try {
      envelope = (await response.json()).error;
    } catch {
      // not JSON: a proxy's page, say
    }
    throw new ApiError(response.status, envelope, response.headers.get("x-request-id"));
  }
  return response;
}

export async function call(method, path, body, { signal } = {}) {
  const response = await send(method, path, body, signal);
  return response.json();
}

/**
 * Read server-sent events: onEvent({event, data, id}) for each, data parsed as JSON.
 * An `error` event carries the envelope and ends the stream as an ApiError.
 */
export async function stream(method, path, body, onEvent, { signal } = {}) {
  const response = await send(method, path, body, signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseEvent(block);
      if (event === null) continue;
      if (event.data === "[DONE]") return;
      const data = JSON.parse(event.data);
      if (event.event === "error") {
        // After the first event the status is 200 already: the envelope's type says what.
        const status = STATUS_OF_TYPE[data.error?.type] ?? 500;
        throw new ApiError(status, data.error, response.headers.get("x-request-id"));
      }
      onEvent({ ...event, data });
    }
  }
}

function parseEvent(block) {
  const event = { event: "message", data: "", id: null };
  let hasData = false;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
    else if (field === "data") {
      event.data += (hasData ? "\n" : "") + value;
      hasData = true;
    }
  }
  return hasData ? event : null;
}

/** What a person should read for a failure: a sentence in their language, then the
 * service's own message, the field it names and the request id. */
export function describe(failure) {
  if (!(failure instanceof ApiError)) return String(failure?.message || failure);
  if (failure.status === 0) return t("error.network");
  const status = String(failure.status);
  const lines = [t(`error.${status}`) === `error.${status}` ? "" : t(`error.${status}`)];
  if (failure.error?.message) lines.push(`${t("error.prefix")} ${failure.error.message}`);
  if (failure.error?.param) lines.push(t("error.field", { param: failure.error.param }));
  if (failure.requestId) lines.push(t("error.request_id", { id: failure.requestId }));
  return lines.filter(Boolean).join("\n");
}
