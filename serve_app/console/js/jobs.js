// Jobs: the tenant's jobs with live status and progress (from each job's event stream),
// cancel, retry, and a job's results with seed and revised prompt.

import { ApiError, call, stream } from "./api.js";
import { t } from "./i18n.js";
import { clearError, el, figure, setStatus, showCode, showError } from "./ui.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
// Browsers open few connections per host; streams beyond these wait for a refresh.
const MAX_FOLLOWED = 3;
// Reconnecting a job's event stream: soon after one that ended on time, with a growing
// wait after one that failed, and giving up (with the error shown) after a few in a row.
const RECONNECT_MS = 100;
const RETRY_MS = 500;
const MAX_STREAM_FAILURES = 5;
const panel = document.getElementById("panel-jobs");
const rows = panel.querySelector("[data-jobs]");
const detail = panel.querySelector("[data-detail]");
const followed = new Map(); // job id -> AbortController
const jobs = new Map(); // job id -> the last job object seen
let opened = null;

export function setUpJobs() {
  panel.querySelector('[data-action="refresh"]').addEventListener("click", refreshJobs);
  panel.querySelector('select[name="status"]').addEventListener("change", refreshJobs);
  document.addEventListener("languagechange", () => {
    for (const job of jobs.values()) render(job);
  });
}

export function openJobs() {
  document.querySelector('[data-tab="jobs"]').click();
}

export async function refreshJobs() {
  clearError();
  const status = panel.querySelector('select[name="status"]').value;
  const path = `/v1/jobs?limit=50${status ? `&status=${status}` : ""}`;
  try {
    const list = await call("GET", path);
    const known = new Map(jobs);
    rows.replaceChildren();
    jobs.clear();
    // Newest first, as listed: each new row goes on top, so the oldest is rendered first.
    for (const job of [...list.data].reverse()) render(latest(known.get(job.id), job));
    setStatus(panel, list.data.length ? t("jobs.count", { count: list.data.length }) : t("jobs.none"));
    for (const job of list.data) if (!TERMINAL.has(jobs.get(job.id).status)) followJob(jobs.get(job.id));
  } catch (failure) {
    showError(failure, panel);
  }
}

/** A list fetched while a job ran can arrive after the job's event stream said it ended;
 * the end stands (the stream resumes after it and would not say it again). */
function latest(known, listed) {
  return known && TERMINAL.has(known.status) && !TERMINAL.has(listed.status) ? known : listed;
}

/** Shows `job` and follows its events until it ends. */
export function followJob(job) {
  render(job);
  if (TERMINAL.has(job.status) || followed.has(job.id) || followed.size >= MAX_FOLLOWED) return;
  const controller = new AbortController();
  followed.set(job.id, controller);
  watch(job.id, controller.signal).finally(() => followed.delete(job.id));
}

async function watch(id, signal) {
  let after = 0;
  let failures = 0;
  // A stream ends after the service's event_stream_s, or drops (a proxy, a lost replica):
  // pick up after the last event seen, waiting a little longer after each failure.
  while (!signal.aborted) {
    try {
      await stream("GET", `/v1/jobs/${id}/events?after=${after}`, undefined, ({ event, data, id: seq }) => {
        if (seq) after = Number(seq);
        failures = 0;
        const job = { ...jobs.get(id) };
        if (event === "progress") job.progress = data;
        if (event === "queue") job.queue_position = data.queue_position;
        // The event's own status is the job's: the object it carries never contradicts it.
        if (event === "status") Object.assign(job, data.job || {}, { status: data.status });
        render(job);
      }, { signal });
    } catch (failure) {
      if (failure.name === "AbortError") return;
      failures += 1;
      if (!transient(failure) || failures > MAX_STREAM_FAILURES) {
        showError(failure, panel);
        return;
      }
    }
    if (TERMINAL.has(jobs.get(id)?.status)) return;
    await pause(failures ? RETRY_MS * 2 ** (failures - 1) : RECONNECT_MS, signal);
  }
}

/** A dropped connection or a busy service: worth another try; a refusal is not. */
function transient(failure) {
  return !(failure instanceof ApiError) || failure.status === 0 || failure.status === 429 || failure.status >= 500;
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function render(job) {
  jobs.set(job.id, job);
  const progress = job.progress ? Math.round((100 * job.progress.step) / job.progress.total) : TERMINAL.has(job.status) && job.status === "succeeded" ? 100 : 0;
  const bar = el("progress", { max: 100, value: progress, "aria-label": t("jobs.progress") });
  const actions = el("td", { class: "job-actions" },
    el("button", { type: "button", "data-open": job.id, text: t("jobs.open") }));
  if (!TERMINAL.has(job.status)) actions.append(el("button", { type: "button", "data-cancel": job.id, text: t("jobs.cancel") }));
  if (job.status === "failed" || job.status === "canceled") actions.append(el("button", { type: "button", "data-retry": job.id, text: t("jobs.retry") }));
  const row = el("tr", { "data-job": job.id, "data-status": job.status },
    el("td", { class: "mono", text: job.id }),
    el("td", { text: job.type }),
    el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
    el("td", {}, bar, el("span", { class: "muted", text: job.progress ? ` ${job.progress.step}/${job.progress.total}` : job.queue_position ? ` #${job.queue_position}` : "" })),
    el("td", { text: new Date(job.created_at * 1000).toLocaleTimeString() }),
    actions);
  actions.querySelector("[data-open]").addEventListener("click", () => openJob(job.id));
  actions.querySelector("[data-cancel]")?.addEventListener("click", () => cancelJob(job.id));
  actions.querySelector("[data-retry]")?.addEventListener("click", () => retryJob(job.id));
  const old = rows.querySelector(`tr[data-job="${CSS.escape(job.id)}"]`);
  if (old) old.replaceWith(row);
  else rows.prepend(row);
  if (opened === job.id && TERMINAL.has(job.status)) showJob(job);
}

async function openJob(id) {
  clearError();
  opened = id;
  const request = { kind: "json", method: "GET", path: `/v1/jobs/${id}` };
  showCode(detail, request);
  try {
    showJob(await call("GET", request.path));
  } catch (failure) {
    showError(failure, panel);
  }
}

function showJob(job) {
  detail.hidden = false;
  detail.querySelector("[data-detail-title]").textContent = `${job.id} · ${job.status}`;
  const error = detail.querySelector("[data-detail-error]");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.message}${job.error.code ? ` (${job.error.code})` : ""}` : "";
  const gallery = detail.querySelector("[data-gallery]");
  const result = job.result;
  gallery.replaceChildren();
  if (result?.images) {
    result.images.forEach((image, index) => gallery.append(figure({
      src: image.url,
      seed: image.seed,
      revisedPrompt: result.revised_prompt,
      name: `${job.id}-${index}.${result.output_format}`,
      width: image.width,
      height: image.height,
    })));
  } else if (result?.completion) {
    gallery.append(el("pre", { class: "answer", text: result.completion.choices[0].message.content }));
  }
}

async function cancelJob(id) {
  clearError();
  const request = { kind: "json", method: "DELETE", path: `/v1/jobs/${id}` };
  showCode(detail, request);
  detail.hidden = false;
  try {
    followed.get(id)?.abort();
    render(await call("DELETE", request.path));
  } catch (failure) {
    showError(failure, panel);
  }
}

async function retryJob(id) {
  clearError();
  const request = { kind: "json", method: "POST", path: `/v1/jobs/${id}/retry` };
  showCode(detail, request);
  detail.hidden = false;
  try {
    const job = await call("POST", request.path);
    setStatus(panel, t("jobs.retried", { id, new: job.id }));
    followJob(job);
  } catch (failure) {
    showError(failure, panel);
  }
}
