// The console's start: language, the key box, the tabs, and the catalog once a key is set.

import { apiKey, setApiKey } from "./api.js";
import { loadCatalog } from "./catalog.js";
import { setUpEdit } from "./edit.js";
import { setUpGenerate } from "./generate.js";
import { setLanguage, t, translate } from "./i18n.js";
import { refreshJobs, setUpJobs } from "./jobs.js";
import { setUpUnderstand } from "./understand.js";
import { clearError, showError } from "./ui.js";

const TABS = ["generate", "edit", "understand", "jobs"];

function showTab(name) {
  if (!TABS.includes(name)) name = "generate";
  for (const tab of TABS) {
    document.getElementById(`panel-${tab}`).hidden = tab !== name;
    document.querySelector(`[data-tab="${tab}"]`).setAttribute("aria-selected", String(tab === name));
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "jobs") refreshJobs();
}

function showKeyState() {
  document.getElementById("key-state").textContent = apiKey() ? t("key.set") : t("key.none");
}

async function reload() {
  clearError();
  showKeyState();
  try {
    await loadCatalog();
  } catch (failure) {
    showError(failure);
  }
}

translate();
setUpGenerate();
setUpEdit();
setUpUnderstand();
setUpJobs();

for (const button of document.querySelectorAll("[data-lang]")) {
  button.addEventListener("click", () => setLanguage(button.dataset.lang));
}
document.addEventListener("languagechange", showKeyState);
for (const button of document.querySelectorAll("[data-tab]")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  setApiKey(input.value.trim());
  input.value = "";
  reload();
});

addEventListener("hashchange", () => showTab(location.hash.slice(1)));
showTab(location.hash.slice(1));
reload();
