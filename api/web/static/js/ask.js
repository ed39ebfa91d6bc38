// The Ask screen: a conversation with streamed answers, citations that open their passage, and a stop button.
//
// Each question is sent with the earlier turns of the conversation on screen (``history``), the most recent ones
// that fit HISTORY_CHARS, so a follow-up ("and when did it open?") is understood; the server rewrites it into a
// question that stands alone and says so.

import { ApiError, streamEvents } from "./api.js";
import { openPassage } from "./sources.js";
import { $, describe, el, fileName } from "./ui.js";

const CITATION = /\[(\s*\d+(?:\s*,\s*\d+)*\s*)\]/g;

const HISTORY_CHARS = 6000; // earlier turns sent with a question: the server keeps what fits the model anyway
const HISTORY_MESSAGES = 20;

let controller = null; // the AbortController of the answer being streamed
let turns = []; // the answered turns on screen, oldest first: { question, text }

export function initAsk() {
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("stop-button").addEventListener("click", () => controller?.abort());
}

// Forget everything shown (the key was refused: nothing of the documents may stay on screen).
export function clearConversation() {
  controller?.abort();
  turns = [];
  $("conversation").replaceChildren();
  $("conversation-empty").hidden = false;
}

export function setCollections(collections) {
  const select = $("collection");
  const current = select.value || "default";
  // Only the collections the key sees (the server lists no others); "default" stands in before there are any.
  const names = collections.length ? collections.map((c) => c.name) : ["default"];
  select.replaceChildren(...names.map((name) => el("option", { value: name, textContent: name })));
  select.value = names.includes(current) ? current : names.includes("default") ? "default" : names[0];
}

async function ask() {
  const question = $("question").value.trim();
  if (!question || controller) return;
  $("conversation-empty").hidden = true;
  const answerText = el("div", { className: "answer-text" });
  const answer = el("li", { className: "turn answer", attrs: { "aria-busy": "true" } },
    el("p", { className: "who", textContent: "Answer" }), answerText);
  $("conversation").append(el("li", { className: "turn question" },
    el("p", { className: "who", textContent: "You" }), el("p", { textContent: question })), answer);
  const turn = { question, text: "", result: null };
  $("question").value = "";
  controller = new AbortController();
  $("stop-button").disabled = false;
  $("ask-button").disabled = true;
  answer.scrollIntoView({ block: "nearest" });
  try {
    const body = { question, collection: $("collection").value, stream: true, history: recentHistory() };
    await streamEvents("/v1/query", body,
      controller.signal, (name, data) => {
        if (name === "token") {
          turn.text += data.text;
          answerText.textContent = turn.text;
        } else if (name === "done") {
          turn.result = data;
        } else if (name === "error") {
          throw new ApiError(0, `The answer failed: ${data.error.message}`);
        }
      });
    if (!turn.result) throw new ApiError(0, "The connection closed before the answer was complete.");
    const streamed = turn.text;
    turn.text = turn.result.text ?? turn.text; // its citations checked, and the verdict applied (kind)
    renderAnswer(answer, answerText, turn, streamed);
    turns.push({ question, text: turn.text });
  } catch (error) {
    answer.classList.add(error.name === "AbortError" ? "stopped" : "failed");
    answer.append(el("p", {
      className: error.name === "AbortError" ? "note" : "error",
      textContent: error.name === "AbortError" ? "Stopped." : describe(error),
    }));
  } finally {
    answer.setAttribute("aria-busy", "false");
    controller.abort(); // after an error event the response may still be open: let it go
    controller = null;
    $("stop-button").disabled = true;
    $("ask-button").disabled = false;
    $("question").focus();
  }
}

// The most recent turns, as messages, while they stay under HISTORY_CHARS and HISTORY_MESSAGES.
function recentHistory() {
  const history = [];
  let chars = 0;
  for (const { question, text } of [...turns].reverse()) {
    chars += question.length + text.length;
    if (chars > HISTORY_CHARS || history.length + 2 > HISTORY_MESSAGES) break;
    history.unshift({ role: "user", content: question }, { role: "assistant", content: text });
  }
  return history;
}

// What the service did with the model's answer (``kind``): shown as it was written, replaced by the documents' own
// sentences, or no answer at all. A replaced answer says so, since its first words were streamed on screen.
const VERDICTS = {
  generated: { who: "Answer", note: "" },
  extractive: { who: "Quoted from the documents",
    note: "The model's answer was not supported well enough to show; these are the documents' own words." },
  abstained: { who: "No answer in the documents", note: "" },
};

function renderAnswer(answer, answerText, turn, streamed) {
  const { sources, kind, confidence, usage, rewritten, question, groundedness } = turn.result;
  const byNumber = new Map(sources.map((s) => [s.number, s]));
  const verdict = VERDICTS[kind] ?? VERDICTS.generated;
  answer.classList.add(kind);
  answer.dataset.kind = kind;
  answer.querySelector(".who").textContent = verdict.who;
  answerText.replaceChildren(...linkCitations(turn, byNumber));
  if (kind !== "generated" && streamed.trim() && streamed.trim() !== turn.text) {
    answer.append(el("p", { className: "note verdict", textContent: verdict.note
      || "The model's answer was not supported by the documents, so it is not shown." }));
  }
  if (sources.length) {
    answer.append(el("p", { className: "sources-title", textContent: "Sources" }),
      el("ol", { className: "sources" }, sources.map((source) => sourceItem(source, turn))));
  }
  if (rewritten) answer.append(el("p", { className: "meta", textContent: `Searched for: ${question}` }));
  const checked = groundedness == null ? "" : ` · ${Math.round(groundedness * 100)}% of sentences supported`;
  const sure = confidence == null ? "" : ` · confidence ${Math.round(confidence * 100)}%`;
  answer.append(el("p", {
    className: "meta",
    textContent: `${usage.completion_tokens} tokens written · ${usage.chunks_used} passages read${checked}${sure}`,
  }));
}

function sourceItem(source, turn) {
  const name = fileName(source.document) + (source.kind === "summary" ? " (summary)" : "");
  return el("li", {}, citeButton(source, turn), " ", el("span", { className: "source-name", textContent: name }),
    el("span", { className: "source-snippet", textContent: ` ${source.text.slice(0, 140)}…` }));
}

function citeButton(source, turn) {
  const button = el("button", {
    type: "button", className: "cite", textContent: `[${source.number}]`,
    attrs: { "aria-label": `Source ${source.number}: ${fileName(source.document)}`, "aria-haspopup": "dialog" },
  });
  button.addEventListener("click", () => openPassage(source, turn.text, turn.question));
  return button;
}

// The answer's text with each cited number that names a source turned into a button ([1, 2] gives two).
function linkCitations(turn, byNumber) {
  const { text } = turn;
  const nodes = [];
  let cursor = 0;
  for (const match of text.matchAll(CITATION)) {
    nodes.push(text.slice(cursor, match.index));
    const numbers = match[1].split(",").map((n) => Number(n.trim()));
    if (numbers.every((n) => byNumber.has(n))) {
      numbers.forEach((n, i) => nodes.push(i ? " " : "", citeButton(byNumber.get(n), turn)));
    } else {
      nodes.push(match[0]);
    }
    cursor = match.index + match[0].length;
  }
  nodes.push(text.slice(cursor));
  return nodes;
}
