"""Response synthesis: retrieved hits → a grounded, cited :class:`~rag.types.Answer`.

One module per job: :mod:`~rag.synthesis.prompts` (what the model reads), :mod:`~rag.synthesis.citations`
(``[n]`` parsed, cleaned, filtered in a stream), :mod:`~rag.synthesis.verify` (citations checked against the
passages after generation, with their supporting spans), :mod:`~rag.synthesis.conversation` (chat follow-ups
rewritten to stand alone), :mod:`~rag.synthesis.passage_order` (the order the model reads the passages in),
:mod:`~rag.synthesis.abstention` (when not to answer), :mod:`~rag.synthesis.run` (the budgeted calls every mode
shares), one module per :class:`~rag.types.SynthesisMode` (:mod:`~rag.synthesis.compact`,
:mod:`~rag.synthesis.refine`, :mod:`~rag.synthesis.tree_summarize`), and :mod:`~rag.synthesis.answering`, which
puts them together.
"""

from rag.synthesis.abstention import ABSTAIN_MESSAGE, abstain, model_abstained, should_abstain
from rag.synthesis.answering import stream_answer, synthesize
from rag.synthesis.citations import CitationFilter, clean_citations, parse_citations
from rag.synthesis.conversation import Chat, read_chat, rewrite, stands_alone
from rag.synthesis.passage_order import order_for_answer
from rag.synthesis.prompts import (
    COMPACT_TEMPLATE,
    REDUCE_TEMPLATE,
    REFINE_TEMPLATE,
    SYSTEM_PROMPT,
    hit_label,
    hits_to_passages,
)
from rag.synthesis.verify import Verification, verify_citations

__all__ = [
    "ABSTAIN_MESSAGE",
    "COMPACT_TEMPLATE",
    "REDUCE_TEMPLATE",
    "REFINE_TEMPLATE",
    "SYSTEM_PROMPT",
    "Chat",
    "CitationFilter",
    "Verification",
    "abstain",
    "clean_citations",
    "hit_label",
    "hits_to_passages",
    "model_abstained",
    "order_for_answer",
    "parse_citations",
    "read_chat",
    "rewrite",
    "should_abstain",
    "stands_alone",
    "stream_answer",
    "synthesize",
    "verify_citations",
]
