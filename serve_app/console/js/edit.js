// Edit: drop or pick an image, paint where it may change, say what to change, and
// compare before and after. The mask follows OpenAI's convention: the painted area is
// transparent (may change), the rest opaque (kept as it was).

import { call } from "./api.js";
import { t } from "./i18n.js";
import { blobToDataUrl, clearError, dataUrl, seconds, setStatus, showCode, showError } from "./ui.js";

const panel = document.getElementById("panel-edit");
const form = document.getElementById("edit-form");
const picture = document.getElementById("edit-image");
const mask = document.getElementById("edit-mask");
const wrap = panel.querySelector(".canvas-wrap");
const tools = panel.querySelector(".mask-tools");
let source = null; // the picked image as a PNG Blob
let painted = false;

export function setUpEdit() {
  form.image.addEventListener("change", () => form.image.files[0] && load(form.image.files[0]));
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) load(file);
  });
  form.querySelector('[data-action="clear-mask"]').addEventListener("click", clearMask);
  setUpBrush();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    edit();
  });
}

async function load(file) {
  clearError();
  const bitmap = await createImageBitmap(file);
  for (const canvas of [picture, mask]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  picture.getContext("2d").drawImage(bitmap, 0, 0);
  clearMask();
  source = await new Promise((resolve) => picture.toBlob(resolve, "image/png"));
  wrap.hidden = false;
  tools.hidden = false;
}

function clearMask() {
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  painted = false;
}

function setUpBrush() {
  const context = () => mask.getContext("2d");
  let last = null;
  const point = (event) => {
    const box = mask.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * mask.width,
      y: ((event.clientY - box.top) / box.height) * mask.height,
    };
  };
  const paint = (event) => {
    const here = point(event);
    const brush = context();
    const scale = mask.width / mask.getBoundingClientRect().width;
    brush.strokeStyle = brush.fillStyle = "rgb(255, 64, 64)";
    brush.lineCap = brush.lineJoin = "round";
    brush.lineWidth = Number(form.brush.value) * scale;
    brush.beginPath();
    brush.moveTo((last || here).x, (last || here).y);
    brush.lineTo(here.x, here.y);
    brush.stroke();
    last = here;
    painted = true;
  };
  mask.addEventListener("pointerdown", (event) => {
    mask.setPointerCapture(event.pointerId);
    last = null;
    paint(event);
  });
  mask.addEventListener("pointermove", (event) => {
    if (mask.hasPointerCapture(event.pointerId)) paint(event);
  });
  mask.addEventListener("pointerup", () => (last = null));
}

/** The mask as the API takes it: opaque where kept, transparent where painted. */
function maskPng() {
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  const context = out.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, out.width, out.height);
  context.globalCompositeOperation = "destination-out";
  context.drawImage(mask, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

async function edit() {
  clearError();
  if (!source) {
    setStatus(panel, t("edit.no_image"));
    return;
  }
  const files = { "image.png": source };
  if (painted) files["mask.png"] = await maskPng();
  const body = { model: form.model.value, prompt: form.prompt.value.trim() };
  if (form.seed.value !== "") body.seed = Number(form.seed.value);
  if (form.steps.value !== "") body.steps = Number(form.steps.value);
  const json = { ...body, images: [{ image_url: await blobToDataUrl(files["image.png"]) }] };
  if (files["mask.png"]) json.mask = { image_url: await blobToDataUrl(files["mask.png"]) };
  showCode(panel, { kind: "edit", method: "POST", path: "/v1/images/edits", body, files });
  const started = performance.now();
  setStatus(panel, t("status.sending"));
  try {
    const result = await call("POST", "/v1/images/edits", json);
    const compare = panel.querySelector("[data-compare]");
    compare.querySelector("[data-before]").src = URL.createObjectURL(source);
    const after = compare.querySelector("[data-after]");
    after.src = dataUrl(result.data[0].b64_json, result.output_format);
    after.dataset.seed = result.data[0].seed;
    compare.hidden = false;
    setStatus(panel, t("status.done", { seconds: seconds(started) }));
  } catch (failure) {
    showError(failure, panel);
  }
}
