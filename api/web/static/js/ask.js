// The Ask screen: a conversation with streamed answers, citations that open their passage, and a stop button.
//
// The conversation stays on screen, but each question is sent on its own: POST /v1/query takes a question and
// no earlier turns yet. When the API learns conversations, the earlier turns are the ones in #conversation.

import { ApiError, streamEvents } from "./api.js";
import { openPassage } from "./sources.js";
import { $, describe, el, fileName } from "./ui.js";

const CITATION = /\[(\s*\d+(?:\s*,\s*\d+)*\s*)\]/g;

let controller = null; // the AbortController of the answer being streamed

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
  $("conversation").replaceChildren();
  $("conversation-empty").hidden = false;
}

export function setCollections(collections) {
  const select = $("collection");
  const current = select.value || "default";
  const names = collections.map((c) => c.name);
  if (!names.includes("default")) names.unshift("default");
  select.replaceChildren(...names.map((name) => el("option", { value: name, textContent: name })));
  select.value = names.includes(current) ? current : "default";
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
    await streamEvents("/v1/query", { question, collection: $("collection").value, stream: true },
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
    renderAnswer(answer, answerText, turn);
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

function renderAnswer(answer, answerText, turn) {
  const { sources, abstained, usage } = turn.result;
  const byNumber = new Map(sources.map((s) => [s.number, s]));
  if (abstained) {
    answer.classList.add("abstained");
    answer.querySelector(".who").textContent = "No answer in the documents";
  }
  answerText.replaceChildren(...linkCitations(turn, byNumber));
  if (sources.length) {
    answer.append(el("p", { className: "sources-title", textContent: "Sources" }),
      el("ol", { className: "sources" }, sources.map((source) => sourceItem(source, turn))));
  }
  answer.append(el("p", {
    className: "meta",
    textContent: `${usage.completion_tokens} tokens written · ${usage.chunks_used} passages read`,
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
