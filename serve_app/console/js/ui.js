// Small DOM helpers every screen shares: elements, the status line, the error banner,
// image galleries and the "this request as code" panel.

import { describe } from "./api.js";
import { curlFor, pythonFor } from "./snippets.js";
import { t, translate } from "./i18n.js";

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function setStatus(panel, text) {
  panel.querySelector("[data-status]").textContent = text || "";
}

let shownFailure = null;

/** Shows a failure in the page banner (and the panel's status line), in words. */
export function showError(failure, panel) {
  const banner = document.getElementById("banner");
  shownFailure = failure;
  banner.textContent = describe(failure);
  banner.hidden = false;
  if (panel) setStatus(panel, "");
}

export function clearError() {
  const banner = document.getElementById("banner");
  shownFailure = null;
  banner.hidden = true;
  banner.textContent = "";
}

// The banner's words follow the language switch.
document.addEventListener("languagechange", () => {
  if (shownFailure) document.getElementById("banner").textContent = describe(shownFailure);
});

export function dataUrl(b64, format = "png") {
  return `data:image/${format === "jpeg" ? "jpeg" : format};base64,${b64}`;
}

/** One result image: the picture, its seed, a download link and the revised prompt. */
export function figure({ src, seed, revisedPrompt, name, width, height }) {
  const caption = el("figcaption", {},
    el("span", { class: "seed", text: t("result.seed", { seed }) }),
    " · ",
    el("a", { href: src, download: name, text: t("result.download") }),
  );
  if (revisedPrompt) {
    caption.append(el("details", {}, el("summary", { text: t("result.revised") }), el("p", { text: revisedPrompt })));
  }
  return el("figure", { class: "result", "data-seed": seed },
    el("img", { src, alt: `seed ${seed}`, width, height }), caption);
}

/** The panel's code block for `request`, with copy buttons and the files it reads. */
export function showCode(panel, request) {
  const box = panel.querySelector("[data-code]");
  box.replaceChildren(document.getElementById("code-template").content.cloneNode(true));
  translate(box);
  const snippets = { curl: curlFor(request), python: pythonFor(request) };
  for (const [kind, text] of Object.entries(snippets)) {
    box.querySelector(`[data-snippet="${kind}"]`).textContent = text;
    const pre = box.querySelector(`[data-snippet="${kind}"]`);
    box.querySelector(`[data-copy="${kind}"]`).addEventListener("click", async (event) => {
      await copy(text, pre);
      event.target.textContent = t("code.copied");
    });
  }
  const files = Object.entries(request.files || {});
  if (files.length) {
    const list = box.querySelector(".files");
    list.append(el("span", { "data-i18n": "code.files", text: t("code.files") }), " ");
    for (const [name, blob] of files) {
      list.append(el("a", { href: URL.createObjectURL(blob), download: name, "data-file": name, text: name }), " ");
    }
  }
  box.hidden = false;
}

/** The clipboard API where the page is a secure context (https, localhost); elsewhere
 * (plain http on a LAN address) the snippet is selected and copied the old way. */
async function copy(text, pre) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const range = document.createRange();
  range.selectNodeContents(pre);
  getSelection().removeAllRanges();
  getSelection().addRange(range);
  document.execCommand("copy");
}

export function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export function seconds(started) {
  return ((performance.now() - started) / 1000).toFixed(1);
}
