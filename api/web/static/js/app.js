// The page's entry point: key gating, the screens (#ask, #documents, #document/ID[/CHUNK]) and error reporting.

import { apiKey, api, onUnauthorized } from "./api.js";
import { clearConversation, initAsk, setCollections } from "./ask.js";
import {
  clearDocuments, initDocuments, loadDocuments, loadWatched, resumeJobs, setCollectionNames,
} from "./documents.js";
import { initSources, showDocument } from "./sources.js";
import { $, clearError, describe, el, showError } from "./ui.js";

const VIEWS = ["key-view", "ask-view", "documents-view", "document-view"];
let unlocked = false; // the server answered a /v1 call with the current key (or needs none)
let lastList = "#ask"; // where the document screen's Back link leads: the screen it was opened from

function show(view) {
  for (const id of VIEWS) $(id).hidden = id !== view;
  $("loading").hidden = true;
}

// Collections and documents, fetched again after anything that changes them.
async function refresh() {
  const { collections } = await api.get("/v1/collections");
  setCollections(collections);
  setCollectionNames(collections);
  await Promise.all([loadDocuments(), loadWatched()]);
}

function route() {
  if (!unlocked) return;
  const [name, ...args] = (location.hash.slice(1) || "ask").split("/");
  for (const tab of ["ask", "documents"]) {
    const link = $(`tab-${tab}`);
    if (tab === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "document" && /^\d+$/.test(args[0] || "")) {
    show("document-view");
    $("document-back").href = lastList;
    showDocument(Number(args[0]), args[1] && Number(args[1])).catch((error) => {
      $("document-title").textContent = "This document could not be shown";
      $("document-text").replaceChildren(el("p", { className: "error", textContent: describe(error) }));
    });
  } else {
    lastList = name === "documents" ? "#documents" : "#ask";
    show(name === "documents" ? "documents-view" : "ask-view");
  }
}

async function unlock() {
  try {
    await refresh();
  } catch (error) {
    if (error.status === 401) return; // lock() has run and asked for a key
    throw error;
  }
  unlocked = true;
  $("tabs").hidden = false;
  $("forget-key").hidden = !apiKey.get();
  route();
  resumeJobs().catch((error) => showError(describe(error)));
}

// No valid key: show the key form and nothing of the documents.
function lock(reason) {
  const hadKey = Boolean(apiKey.get());
  unlocked = false;
  apiKey.clear();
  clearConversation();
  clearDocuments();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  $("tabs").hidden = true;
  $("forget-key").hidden = true;
  clearError();
  show("key-view");
  $("key-error").textContent = hadKey ? reason : ""; // a first visit without a key has nothing to apologise for
  $("key-error").hidden = !(hadKey && reason);
  $("key-input").focus();
}

async function boot() {
  window.addEventListener("error", (event) => showError(`Something went wrong in the page: ${event.message}`));
  window.addEventListener("unhandledrejection", (event) => showError(describe(event.reason)));
  onUnauthorized(() => lock("The server refused this key. Check it and try again."));
  $("banner-close").addEventListener("click", clearError);
  $("forget-key").addEventListener("click", () => lock(""));
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    apiKey.set($("key-input").value.trim(), $("key-remember").checked);
    $("key-input").value = "";
    $("key-error").hidden = true;
    try {
      await unlock();
    } catch (error) {
      $("key-error").textContent = describe(error);
      $("key-error").hidden = false;
    }
  });
  window.addEventListener("hashchange", () => {
    route();
    $("main").focus({ preventScroll: true });
  });
  initAsk();
  initSources();
  initDocuments(() => refresh().catch((error) => showError(describe(error))));
  try {
    await unlock();
  } catch (error) {
    $("loading").replaceChildren(describe(error), " ",
      el("button", {
        type: "button", className: "secondary", textContent: "Try again", onclick: () => location.reload(),
      }));
  }
}

boot();
