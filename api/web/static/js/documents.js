// The Documents screen: upload files (picked or dropped, several at once) or ingest a server folder, watch each
// job's progress, see the folders the server watches, and list and delete documents.

import { api } from "./api.js";
import { $, confirmAction, describe, el, fileName, formatBytes, plural, showError } from "./ui.js";

const FINISHED = new Set(["done", "failed", "cancelled", "interrupted"]);
const POLL_MS = 500;
const SUMMARY_POLL_MS = 3000;
const WATCH_POLL_MS = 3000;

let picked = []; // File objects chosen or dropped, not uploaded yet
let onChange = () => {}; // called when a job finishes or a document is deleted: reloads documents and collections
const watched = new Set(); // job ids being polled

export function initDocuments(changed) {
  onChange = changed;
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    pick([...event.dataTransfer.files]);
  });
  $("files").addEventListener("change", () => pick([...$("files").files]));
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    upload();
  });
  $("folder-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ingestFolder();
  });
  $("refresh-documents").addEventListener("click", () => onChange());
}

// Forget everything shown (the key was refused).
export function clearDocuments() {
  clearTimeout(summaryTimer);
  clearTimeout(watchTimer);
  picked = [];
  watched.clear();
  lastChanges = null;
  $("watch-panel").hidden = true;
  for (const id of ["doc-list", "jobs", "picked", "collection-names", "watch-list"]) $(id).replaceChildren();
  $("upload-button").disabled = true;
}

export function setCollectionNames(collections) {
  $("collection-names").replaceChildren(...collections.map((c) => el("option", { value: c.name })));
}

function pick(files) {
  const names = new Set(picked.map((f) => f.name));
  picked.push(...files.filter((f) => !names.has(f.name)));
  $("picked").replaceChildren(...picked.map((f) => el("li", {}, `${f.name} (${formatBytes(f.size)})`)));
  $("upload-button").disabled = picked.length === 0;
  $("upload-button").textContent = picked.length ? `Upload ${plural(picked.length, "file")}` : "Upload";
}

async function upload() {
  const form = new FormData();
  for (const file of picked) form.append("files", file, file.name);
  form.append("collection", $("upload-collection").value);
  form.append("summarize", String($("upload-summarize").checked));
  $("upload-button").disabled = true;
  try {
    const job = await api.upload("/v1/ingest", form);
    picked = [];
    $("files").value = "";
    pick([]);
    watchJob(job.job_id);
  } catch (error) {
    $("upload-button").disabled = false;
    showError(`The upload failed. ${describe(error)}`);
  }
}

async function ingestFolder() {
  const body = { paths: [$("folder-path").value.trim()], collection: $("upload-collection").value };
  try {
    const job = await api.post("/v1/ingest", body);
    watchJob(job.job_id);
  } catch (error) {
    showError(`The folder could not be ingested. ${describe(error)}`);
  }
}

// Show the jobs still running on the server (started before this page was opened, or from another tab).
export async function resumeJobs() {
  const { jobs } = await api.get("/v1/jobs?limit=20");
  jobs.filter((job) => !FINISHED.has(job.state)).forEach((job) => watchJob(job.job_id));
}

function watchJob(jobId) {
  if (watched.has(jobId)) return;
  watched.add(jobId);
  const card = el("li", { className: "job", data: { job: jobId } });
  $("jobs").prepend(card);
  poll(jobId, card);
}

async function poll(jobId, card) {
  if (!watched.has(jobId)) return; // cleared meanwhile
  let job;
  try {
    job = await api.get(`/v1/jobs/${jobId}`);
  } catch (error) {
    card.replaceChildren(el("p", { className: "error", textContent: `Lost track of this job. ${describe(error)}` }));
    watched.delete(jobId);
    return;
  }
  renderJob(card, job);
  if (!FINISHED.has(job.state)) {
    setTimeout(() => poll(jobId, card), POLL_MS);
    return;
  }
  watched.delete(jobId);
  onChange();
}

function renderJob(card, job) {
  card.dataset.state = job.state;
  const label = job.paths.length === 1 ? fileName(job.paths[0]) : plural(job.paths.length, "file");
  const progress = job.total
    ? el("progress", { max: job.total, value: job.processed, attrs: { "aria-label": `Progress of ${label}` } })
    : el("progress", { attrs: { "aria-label": `Progress of ${label}` } }); // indeterminate: still looking for files
  const parts = [
    el("p", { className: "job-head" }, el("strong", { textContent: label }), ` into ${job.collection} `,
      el("span", { className: `state state-${job.state}`, textContent: job.state })),
    progress,
    el("p", { className: "job-count", textContent: `${job.processed} of ${job.total || "?"} files` }),
  ];
  // While a job runs, its message names the last file it finished (api/jobs.py).
  if (!FINISHED.has(job.state) && job.message) parts.push(el("p", { className: "meta", textContent: job.message }));
  if (job.state === "done") {
    const took = job.message ? ` (${job.message})` : ""; // a finished job's message is its duration
    parts.push(el("p", { className: "meta", textContent: `${summaryOf(job.counts)}${took}` }));
  }
  else if (FINISHED.has(job.state) && job.message) {
    parts.push(el("p", { className: "error", textContent: job.message }));
  }
  if (job.errors.length) {
    parts.push(el("ul", { className: "failures" }, job.errors.map((e) =>
      el("li", {}, el("strong", { textContent: fileName(e.path) }), `: ${e.error || e.status}`))));
  }
  if (job.state === "queued" || job.state === "running") {
    const cancel = el("button", { type: "button", className: "quiet", textContent: "Cancel job" });
    cancel.addEventListener("click", () => api.post(`/v1/jobs/${job.job_id}/cancel`)
      .catch((error) => showError(`The job could not be cancelled. ${describe(error)}`)));
    parts.push(cancel);
  }
  card.replaceChildren(...parts);
}

function countWords(counts) {
  return ["added", "updated", "unchanged", "moved", "removed", "queued", "failed", "skipped"]
    .filter((k) => counts[k]).map((k) => `${counts[k]} ${k}`).join(", ");
}

function summaryOf(counts) {
  const words = countWords(counts);
  return words ? `Finished: ${words}` : "Finished: nothing to do";
}

let watchTimer = null;
let lastChanges = null; // the folders' last changes when last fetched: when one moves on, the documents are reloaded

// The folders the server watches (GET /v1/watch), fetched again every few seconds while there are any.
export async function loadWatched() {
  clearTimeout(watchTimer);
  const { folders } = await api.get("/v1/watch");
  $("watch-panel").hidden = folders.length === 0;
  $("watch-list").replaceChildren(...folders.map(folderCard));
  const changes = folders.map((f) => f.last_change || "").join("|");
  const moved = lastChanges !== null && changes !== lastChanges;
  lastChanges = changes;
  if (folders.length) {
    watchTimer = setTimeout(() => loadWatched().catch((error) => showError(describe(error))), WATCH_POLL_MS);
  }
  if (moved) onChange();
}

function folderCard(folder) {
  const facts = [
    ["Noticed by", folder.observer || "nothing yet"],
    ["Waiting", plural(folder.backlog, "change")],
    ["Last change", folder.last_change ? new Date(folder.last_change).toLocaleString() : "none yet"],
  ];
  return el("li", { className: "job watched", data: { state: folder.state } },
    el("p", { className: "job-head" }, el("strong", { textContent: folder.path }), ` into ${folder.collection} `,
      el("span", { className: `state state-${folder.state}`, textContent: folder.state })),
    el("dl", { className: "facts" }, facts.map(([k, v]) => el("div", {}, el("dt", { textContent: k }),
      el("dd", { textContent: v })))),
    el("p", { className: "meta", textContent: countWords(folder.counts) || "No changes since the server started." }),
    folder.error ? el("p", { className: "error", textContent: folder.error }) : null,
  );
}

let summaryTimer = null;

// The document list; while summaries are being written in the background, it is fetched again every few seconds.
export async function loadDocuments() {
  clearTimeout(summaryTimer);
  const { documents } = await api.get("/v1/documents");
  $("doc-empty").hidden = documents.length > 0;
  $("doc-list").replaceChildren(...documents.map(documentCard));
  if (documents.some((d) => d.summary_state === "pending")) {
    summaryTimer = setTimeout(() => loadDocuments().catch((error) => showError(describe(error))), SUMMARY_POLL_MS);
  }
}

function documentCard(doc) {
  const file = fileName(doc.path);
  const name = doc.title && doc.title !== file ? `${doc.title} (${file})` : file;
  const facts = [
    ["State", doc.status],
    ["Collection", doc.collection],
    ["Size", formatBytes(doc.size)],
    ["Passages", String(doc.chunks)],
  ];
  const remove = el("button", {
    type: "button", className: "danger quiet", textContent: "Delete", attrs: { "aria-label": `Delete ${name}` },
  });
  remove.addEventListener("click", () => deleteDocument(doc, name));
  return el("li", { className: `doc doc-${doc.status}`, data: { id: doc.id } },
    el("div", { className: "doc-head" },
      el("a", { href: `#document/${doc.id}`, className: "doc-name", textContent: name }), remove),
    el("dl", { className: "facts" }, facts.map(([k, v]) => el("div", {}, el("dt", { textContent: k }),
      el("dd", { textContent: v })))),
    doc.error ? el("p", { className: "error", textContent: `Failed: ${doc.error}` }) : null,
    summaryOfDocument(doc),
  );
}

function summaryOfDocument(doc) {
  if (doc.summary) {
    return el("p", { className: "summary" }, el("span", { className: "label", textContent: "Summary" }), doc.summary);
  }
  if (doc.summary_state === "pending") return el("p", { className: "meta", textContent: "Summary being written…" });
  if (doc.summary_state === "failed") {
    return el("p", { className: "error", textContent: `The summary failed: ${doc.summary_error || "unknown reason"}` });
  }
  return null;
}

async function deleteDocument(doc, name) {
  const sure = await confirmAction(`Delete ${name}?`,
    `It leaves the index (${plural(doc.chunks, "passage")}): answers will no longer use or cite it. ` +
    "The file itself is not touched.", "Delete");
  if (!sure) return;
  try {
    await api.delete(`/v1/documents/${doc.id}`);
  } catch (error) {
    showError(`${name} could not be deleted. ${describe(error)}`);
  }
  onChange();
}
