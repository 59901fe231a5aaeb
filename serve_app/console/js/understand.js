// Understand: an image and a question to a vision-chat model; in JSON-audit mode the
// answer is asked for as a JSON object and shown field by field.

import { call } from "./api.js";
import { t } from "./i18n.js";
import { blobToDataUrl, clearError, el, seconds, setStatus, showCode, showError } from "./ui.js";

const panel = document.getElementById("panel-understand");
const form = document.getElementById("understand-form");
// An e-commerce audit: the service enforces it token by token, so the answer parses.
const AUDIT_SCHEMA = {
  type: "object",
  properties: {
    verdict: { type: "string", enum: ["approve", "reject", "review"] },
    product_visible: { type: "boolean" },
    has_text_or_watermark: { type: "boolean" },
    issues: { type: "array", items: { type: "string", maxLength: 40 }, maxItems: 3 },
  },
  required: ["verdict", "product_visible", "has_text_or_watermark", "issues"],
  additionalProperties: false,
};

export function setUpUnderstand() {
  form.schema.value = JSON.stringify(AUDIT_SCHEMA, null, 2);
  form.json.addEventListener("change", () => {
    panel.querySelector("[data-schema]").hidden = !form.json.checked;
  });
  form.image.addEventListener("change", () => {
    const thumb = panel.querySelector("[data-thumb]");
    const file = form.image.files[0];
    thumb.hidden = !file;
    if (file) thumb.src = URL.createObjectURL(file);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
}

async function ask() {
  clearError();
  const file = form.image.files[0];
  const files = file ? { [fileName(file)]: file } : {};
  const content = [];
  for (const name of Object.keys(files)) content.push({ type: "image_url", image_url: { url: `@file:${name}` } });
  content.push({ type: "text", text: form.question.value.trim() });
  const body = {
    model: form.model.value,
    messages: [{ role: "user", content }],
    max_tokens: Number(form.max_tokens.value) || undefined,
  };
  if (form.json.checked) {
    try {
      body.response_format = responseFormat();
    } catch (failure) {
      setStatus(panel, t("understand.bad_schema", { message: failure.message }));
      return;
    }
  }
  showCode(panel, { kind: "chat", method: "POST", path: "/v1/chat/completions", body, files });
  // What is sent: the same body, the picture inline as a data URL.
  const sent = structuredClone(body);
  for (const part of sent.messages[0].content) {
    if (part.type === "image_url") part.image_url.url = await blobToDataUrl(files[part.image_url.url.slice(6)]);
  }
  const answer = panel.querySelector("[data-answer]");
  const table = panel.querySelector("[data-fields]");
  answer.hidden = table.hidden = true;
  const started = performance.now();
  setStatus(panel, t("status.sending"));
  try {
    const completion = await call("POST", "/v1/chat/completions", sent);
    const text = completion.choices[0].message.content || "";
    answer.textContent = text;
    answer.hidden = false;
    if (form.json.checked) showFields(text, table);
    setStatus(panel, t("status.done", { seconds: seconds(started) }));
  } catch (failure) {
    showError(failure, panel);
  }
}

function responseFormat() {
  const text = form.schema.value.trim();
  if (!text) return { type: "json_object" };
  return { type: "json_schema", json_schema: { name: "audit", strict: true, schema: JSON.parse(text) } };
}

function showFields(text, table) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    setStatus(panel, t("understand.not_json"));
    return;
  }
  const rows = [];
  const walk = (value, path) => {
    if (value !== null && typeof value === "object" && Object.keys(value).length) {
      for (const [key, inner] of Object.entries(value)) walk(inner, path ? `${path}.${key}` : key);
    } else {
      rows.push(el("tr", {}, el("th", { text: path || "(value)" }), el("td", { text: JSON.stringify(value) })));
    }
  };
  walk(parsed, "");
  table.querySelector("tbody").replaceChildren(...rows);
  table.hidden = false;
}

function fileName(file) {
  const extension = { "image/jpeg": "jpg", "image/webp": "webp" }[file.type] || "png";
  return `photo.${extension}`;
}
