// Generate: a prompt, or a template with a form built from its variables; style, brand,
// size, n, seed, negative prompt; previews streamed while it runs, or a durable job.

import { call, stream } from "./api.js";
import { model, template } from "./catalog.js";
import { t } from "./i18n.js";
import { followJob, openJobs } from "./jobs.js";
import { clearError, dataUrl, el, figure, seconds, setStatus, showCode, showError } from "./ui.js";

const PREVIEWS = 2;
const panel = document.getElementById("panel-generate");
const form = document.getElementById("generate-form");
const gallery = panel.querySelector("[data-gallery]");
const stopButton = form.querySelector('[data-action="stop"]');
let running = null;

export function setUpGenerate() {
  form.template.addEventListener("change", showTemplate);
  form.model.addEventListener("change", showModel);
  document.addEventListener("languagechange", showTemplate);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  form.querySelector('[data-action="job"]').addEventListener("click", submitJob);
  stopButton.addEventListener("click", () => running?.abort());
}

function showModel() {
  const card = model(form.model.value);
  if (!card) return;
  form.n.max = String(Math.min(9, card.max_n));
  form.steps.max = String(card.max_steps);
  form.size.placeholder = card.default_size;
  form.negative_prompt.disabled = !card.capabilities.supports_negative_prompt;
  form.previews.disabled = !card.capabilities.supports_partial_images;
  const adapters = document.getElementById("adapters");
  const offered = card.capabilities.supports_adapters ? card.adapters || [] : [];
  adapters.hidden = offered.length === 0;
  adapters.replaceChildren(adapters.querySelector("legend"), ...offered.map((adapter) =>
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "adapter", value: adapter.name || adapter }), ` ${adapter.name || adapter}`)));
}

function showTemplate() {
  const card = template(form.template.value);
  const box = document.getElementById("template-variables");
  document.getElementById("template-description").textContent = card ? card.description : "";
  box.hidden = !card;
  const legend = box.querySelector("legend");
  box.replaceChildren(legend);
  if (!card) return;
  for (const [name, variable] of Object.entries(card.variables)) {
    const input = el("input", {
      name: `var:${name}`,
      "data-variable": name,
      maxlength: variable.max_length,
      required: variable.required,
      placeholder: variable.example || variable.default || "",
    });
    box.append(el("label", {},
      el("span", { text: `${name}${variable.required ? ` (${t("field.required")})` : ""}` }),
      input,
      variable.description ? el("small", { class: "hint", text: variable.description }) : null));
  }
}

/** The request body the form says, as the API takes it (unset fields left out). */
export function generationBody() {
  const body = { model: form.model.value, prompt: form.prompt.value.trim() };
  const number = (name) => (form[name].value === "" ? undefined : Number(form[name].value));
  const text = (name) => form[name].value.trim() || undefined;
  Object.assign(body, {
    n: number("n"),
    size: text("size"),
    seed: number("seed"),
    steps: number("steps"),
    negative_prompt: form.negative_prompt.disabled ? undefined : text("negative_prompt"),
    template: text("template"),
    style: text("style"),
    brand: text("brand"),
  });
  if (body.template) {
    const variables = {};
    for (const input of form.querySelectorAll("[data-variable]")) {
      if (input.value.trim()) variables[input.dataset.variable] = input.value.trim();
    }
    body.variables = variables;
  }
  const adapters = [...form.querySelectorAll('input[name="adapter"]:checked')].map((box) => ({ name: box.value }));
  if (adapters.length) body.adapters = adapters;
  for (const [name, value] of Object.entries(body)) if (value === undefined) delete body[name];
  return body;
}

async function generate() {
  clearError();
  const body = generationBody();
  const previews = form.previews.checked && !form.previews.disabled;
  if (previews) Object.assign(body, { stream: true, partial_images: PREVIEWS });
  const request = { kind: "generate", method: "POST", path: "/v1/images/generations", body, files: {}, stream: previews };
  showCode(panel, request);
  gallery.replaceChildren();
  const slots = Array.from({ length: body.n || 1 }, (_, index) => {
    const slot = el("div", { class: "slot", "data-index": index });
    gallery.append(slot);
    return slot;
  });
  running = new AbortController();
  stopButton.hidden = false;
  const started = performance.now();
  setStatus(panel, t("status.sending"));
  try {
    if (previews) {
      await stream("POST", request.path, body, ({ data }) => {
        const slot = slots[data.index] || slots[0];
        if (data.type.endsWith("partial_image")) {
          setStatus(panel, t("status.preview", { index: data.partial_image_index + 1, image: data.index + 1 }));
          slot.replaceChildren(el("img", { class: "preview", src: dataUrl(data.b64_json, data.output_format), alt: "preview" }));
        } else {
          slot.replaceChildren(figure({
            src: dataUrl(data.b64_json, data.output_format),
            seed: data.seed,
            revisedPrompt: data.revised_prompt,
            name: `image-${data.index}.${data.output_format}`,
          }));
        }
      }, { signal: running.signal });
    } else {
      const result = await call("POST", request.path, body, { signal: running.signal });
      result.data.forEach((image, index) => slots[index].replaceChildren(figure({
        src: dataUrl(image.b64_json, result.output_format),
        seed: image.seed,
        revisedPrompt: image.revised_prompt,
        name: `image-${index}.${result.output_format || "png"}`,
      })));
    }
    setStatus(panel, t("status.done", { seconds: seconds(started) }));
  } catch (failure) {
    if (failure.name === "AbortError") setStatus(panel, t("status.stopped"));
    else showError(failure, panel);
  } finally {
    running = null;
    stopButton.hidden = true;
  }
}

async function submitJob() {
  clearError();
  if (!form.reportValidity()) return;
  const body = { type: "image_generation", request: generationBody() };
  const request = { kind: "json", method: "POST", path: "/v1/jobs", body, files: {} };
  showCode(panel, request);
  try {
    const job = await call("POST", request.path, body);
    setStatus(panel, t("jobs.created_one", { id: job.id }));
    openJobs();
    followJob(job);
  } catch (failure) {
    showError(failure, panel);
  }
}
