// Which words of a cited passage to highlight.
//
// No span verification exists yet (nothing checks which words of a passage support a claim), so this is a stand-in:
// the words of the passage that also occur in the answer's sentence(s) citing it are highlighted, ignoring stop
// words; when that sentence shares no word with the passage ("The source of the answer is [1]." from a small
// model), the question's words are used instead. It shows where the overlap is; it does not prove support.

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

// The words to highlight in ``passage`` cited as source ``number`` of ``answer`` to ``question``, and where they
// come from: "sentence" (the citing sentence) or "question" (the fallback).
export function supportTerms(passage, answer, number, question) {
  const inPassage = termsOf(passage);
  const fromSentence = [...termsOf(citingText(answer, number))].filter((t) => inPassage.has(t));
  if (fromSentence.length) return { terms: new Set(fromSentence), from: "sentence" };
  return { terms: termsOf(question), from: "question" };
}

// The passage as text nodes, with runs of supporting words (and the spaces between them) inside <mark>.
export function highlighted(passage, terms) {
  const fragment = document.createDocumentFragment();
  let cursor = 0;
  let run = null; // [start, end] of the current run of marked words
  const flushRun = () => {
    if (!run) return;
    fragment.append(passage.slice(cursor, run[0]));
    const mark = document.createElement("mark");
    mark.textContent = passage.slice(run[0], run[1]);
    fragment.append(mark);
    cursor = run[1];
    run = null;
  };
  for (const match of passage.matchAll(WORD)) {
    const start = match.index;
    const end = start + match[0].length;
    if (isTerm(match[0]) && terms.has(stem(match[0]))) {
      if (run && /^[\s,;:-]*$/.test(passage.slice(run[1], start))) run[1] = end;
      else {
        flushRun();
        run = [start, end];
      }
    }
  }
  flushRun();
  fragment.append(passage.slice(cursor));
  return fragment;
}
