// What this service offers, read from the catalog routes once a key is set: models,
// templates, styles and brands, filled into every select that asks for them.

import { call } from "./api.js";
import { el } from "./ui.js";

export const catalog = { models: [], templates: [], styles: [], brands: [] };

export async function loadCatalog() {
  const [models, templates, styles] = await Promise.all([
    call("GET", "/v1/models"),
    call("GET", "/v1/templates"),
    call("GET", "/v1/styles"),
  ]);
  catalog.models = models.data;
  catalog.templates = templates.data;
  catalog.styles = styles.data;
  catalog.brands = styles.brands;
  fillSelects();
  document.dispatchEvent(new CustomEvent("catalogchange"));
}

export function model(name) {
  return catalog.models.find((card) => card.id === name) || null;
}

export function template(name) {
  return catalog.templates.find((card) => card.name === name) || null;
}

function fillSelects() {
  for (const select of document.querySelectorAll("select[data-models]")) {
    const keep = select.value;
    const cards = catalog.models.filter((card) => card.task === select.dataset.models);
    select.replaceChildren(...cards.map((card) => el("option", { value: card.id, text: card.id, title: card.description })));
    if (cards.some((card) => card.id === keep)) select.value = keep;
    select.dispatchEvent(new Event("change"));
  }
  fill(document.querySelector('#generate-form select[name="template"]'), catalog.templates, (card) => `${card.title} (${card.category})`);
  for (const select of document.querySelectorAll("select[data-catalog]")) {
    fill(select, catalog[select.dataset.catalog], (card) => card.title);
  }
}

function fill(select, cards, label) {
  const keep = select.value;
  const none = select.querySelector('option[value=""]');
  select.replaceChildren(none, ...cards.map((card) => el("option", { value: card.name, text: label(card), title: card.description })));
  select.value = cards.some((card) => card.name === keep) ? keep : "";
  select.dispatchEvent(new Event("change"));
}
