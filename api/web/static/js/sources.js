// A cited passage in a dialog (supporting words highlighted), and a document's whole text on its own screen.

import { api } from "./api.js";
import { highlighted, spanned, supportTerms } from "./highlight.js";
import { $, describe, el, fileName } from "./ui.js";

export function initSources() {
  const dialog = $("passage");
  $("passage-close").addEventListener("click", () => dialog.close());
  // Following the link to the whole document leaves the dialog behind.
  $("passage-document").addEventListener("click", () => dialog.close());
}

// The legend of the highlights actually shown.
function hint(marked) {
  if (!marked.sentence && !marked.question) {
    return ["No word of this passage appears in the sentence citing it or in the question."];
  }
  const parts = ["Highlighted: "];
  if (marked.sentence) parts.push(el("mark", { textContent: "words also in the sentence citing it" }));
  if (marked.sentence && marked.question) parts.push(", ");
  if (marked.question) parts.push(el("mark", { className: "question", textContent: "words also in the question" }));
  return parts;
}

function documentHref(documentId, chunkId) {
  return `#document/${documentId}/${chunkId}`;
}

// The legend of verified spans: how well the best one supports its sentence.
function spanHint(spans) {
  const best = Math.max(...spans.map((span) => span.score));
  return ["Highlighted: ", el("mark", { className: "span", textContent: "the words that support the answer" }),
    ` (checked after the answer was written; support ${best.toFixed(2)} of 1)`];
}

// Open ``source`` (an entry of the answer's ``sources``) as cited by ``answer`` to ``question``: its verified spans
// marked, or, when it has none (the answer cited nothing it could check), the words it shares with the answer. The
// stored passage is fetched for its page; the text the answer carried is shown at once, and stays if the fetch fails.
export async function openPassage(source, answer, question) {
  const dialog = $("passage");
  if (source.spans?.length) {
    $("passage-text").replaceChildren(spanned(source.text, source.spans));
    $("passage-hint").replaceChildren(...spanHint(source.spans));
  } else {
    const { fragment, marked } = highlighted(source.text, supportTerms(answer, source.number, question));
    $("passage-text").replaceChildren(fragment);
    $("passage-hint").replaceChildren(...hint(marked));
  }
  $("passage-title").textContent = `[${source.number}] ${fileName(source.document)}`;
  $("passage-meta").textContent = source.kind === "summary" ? "Summary of the document" : "";
  $("passage-document").href = documentHref(source.document_id, source.chunk_id);
  $("passage-document").hidden = false;
  $("passage-error").hidden = true;
  if (!dialog.open) dialog.showModal();
  try {
    const stored = await api.get(`/v1/chunks/${source.chunk_id}`);
    const meta = [stored.title, stored.sheet ? `sheet ${stored.sheet}` : stored.page ? `page ${stored.page}${stored.ocr ? " (OCR)" : ""}` : "", `passage ${stored.position + 1}`];
    if (stored.kind === "summary") meta[2] = "summary of the document";
    $("passage-meta").textContent = meta.filter(Boolean).join(" · ");
  } catch (error) {
    $("passage-document").hidden = error.status === 404;
    $("passage-error").textContent = error.status === 404
      ? "This passage is no longer stored: its document was deleted or changed since the answer was written."
      : describe(error);
    $("passage-error").hidden = false;
  }
}

// The document screen (``#document/ID`` or ``#document/ID/CHUNK``): its whole text, the chunk marked if given.
export async function showDocument(documentId, chunkId) {
  $("document-title").textContent = "Loading…";
  $("document-meta").textContent = "";
  $("document-text").replaceChildren();
  const doc = await api.get(`/v1/documents/${documentId}/text`);
  $("document-title").textContent = doc.title || fileName(doc.path);
  const pages = doc.page_starts.length ? ` · ${doc.page_starts.length} pages` : "";
  $("document-meta").textContent = `${doc.path}${pages}`;
  const passage = chunkId ? await passageText(chunkId) : "";
  const at = passage ? doc.text.indexOf(passage) : -1;
  if (at < 0) {
    $("document-text").textContent = doc.text;
    return;
  }
  const mark = document.createElement("mark");
  mark.textContent = passage;
  mark.tabIndex = -1;
  $("document-text").append(doc.text.slice(0, at), mark, doc.text.slice(at + passage.length));
  mark.scrollIntoView({ block: "center" });
}

async function passageText(chunkId) {
  try {
    return (await api.get(`/v1/chunks/${chunkId}`)).text;
  } catch {
    return ""; // the document is still worth showing without its passage marked
  }
}
