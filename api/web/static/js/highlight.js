// Which words of a cited passage to highlight.
//
// A source the server verified carries spans (the sentences of the passage that support the answer): those are
// marked (``spanned``). For a source without spans (the answer cited nothing that could be checked) this is the
// stand-in: the words of the passage that also occur in the answer's sentence(s) citing it are highlighted, ignoring stop
// words. A citing sentence often shares few words with its passage ("The source is [1]." from a small model), so
// words shared only with the question are highlighted too, more lightly. This shows where the overlap is; it does
// not prove that the passage supports the sentence.

const STOP_WORDS = new Set(`a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have having
he her here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
other our ours out over own same she should so some such than that the their theirs them then there these they this
those through to too under until up very was we were what when where which while who whom why will with would you
your yours according source sources document documents passage passages answer`.split(/\s+/));

const WORD = /[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu;
const CITATION = /\[\s*\d+(?:\s*,\s*\d+)*\s*\]/g;

// A crude English stem, so "trains" matches "train" and "erupted" matches "erupts"; good enough for highlighting.
function stem(word) {
  const w = word.toLowerCase().replace(/['’]s$/, "");
  if (w.length <= 4) return w;
  return w.replace(/(?:ies|es|s|ed|ing|ly)$/, "");
}

function isTerm(word) {
  return word.length > 1 && !STOP_WORDS.has(word.toLowerCase());
}

// The sentences of ``answer`` that cite source ``number``; the whole answer when none cites it inline (the
// server lists every passage shown to the model as a source when the model cited none).
function citingText(answer, number) {
  const sentences = answer.split(/(?<=[.!?])\s+(?!\[)/);
  const citing = sentences.filter((sentence) =>
    [...sentence.matchAll(CITATION)].some((match) => match[0].match(/\d+/g).map(Number).includes(number)),
  );
  return (citing.length ? citing.join(" ") : answer).replace(CITATION, " ");
}

function termsOf(text) {
  const terms = new Set();
  for (const match of text.matchAll(WORD)) {
    if (isTerm(match[0])) terms.add(stem(match[0]));
  }
  return terms;
}

// What supports the citation of source ``number`` in ``answer`` to ``question``: the terms of the citing sentence,
// and (the fallback, shown lighter) those of the question.
export function supportTerms(answer, number, question) {
  return { sentence: termsOf(citingText(answer, number)), question: termsOf(question) };
}

// The passage as text nodes, each run of supporting words (and the spaces between them) inside one <mark>:
// plain for words of the citing sentence, class "question" for words only the question shares.
export function highlighted(passage, { sentence, question }) {
  const fragment = document.createDocumentFragment();
  let cursor = 0;
  let run = null; // { start, end, kind } of the current run of marked words
  const flushRun = () => {
    if (!run) return;
    fragment.append(passage.slice(cursor, run.start));
    const mark = document.createElement("mark");
    if (run.kind === "question") mark.className = "question";
    mark.textContent = passage.slice(run.start, run.end);
    fragment.append(mark);
    cursor = run.end;
    run = null;
  };
  const marked = { sentence: 0, question: 0 };
  for (const match of passage.matchAll(WORD)) {
    if (!isTerm(match[0])) continue;
    const term = stem(match[0]);
    const kind = sentence.has(term) ? "sentence" : question.has(term) ? "question" : null;
    if (!kind) continue;
    marked[kind] += 1;
    const start = match.index;
    const end = start + match[0].length;
    if (run && run.kind === kind && /^[\s,;:-]*$/.test(passage.slice(run.end, start))) run.end = end;
    else {
      flushRun();
      run = { start, end, kind };
    }
  }
  flushRun();
  fragment.append(passage.slice(cursor));
  return { fragment, marked };
}

// The passage with the spans the server verified (each supports a sentence of the answer) inside <mark class="span">.
export function spanned(passage, spans) {
  const fragment = document.createDocumentFragment();
  let cursor = 0;
  for (const span of [...spans].sort((a, b) => a.start - b.start)) {
    if (span.start < cursor) continue; // two sentences supported by the same words: marked once
    const mark = document.createElement("mark");
    mark.className = "span";
    mark.textContent = passage.slice(span.start, span.end);
    fragment.append(passage.slice(cursor, span.start), mark);
    cursor = span.end;
  }
  fragment.append(passage.slice(cursor));
  return fragment;
}
