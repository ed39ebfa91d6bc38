"""An OpenAI-compatible chat server (vLLM, TGI, llama.cpp server, ...) as an :class:`~rag.models.llm.LLM`.

Token counts decide whether a request fits, so they come from the server itself where it can say: vLLM's
``POST {root}/tokenize`` counts a chat request exactly as it will be rendered (``{"model", "messages"}``) or plain
text (``{"model", "prompt"}``) and reports ``max_model_len``. A server without ``/tokenize`` is counted with a local
tokenizer (``settings.llm_tokenizer``, else the bundled Qwen tokenizer) and ``settings.llm_token_margin`` tokens are
added to every prompt count (``count_messages``), since another tokenizer or chat template can be off. Plain-text
counts (``count_tokens``) carry no margin: they only size passages, and the budgeter re-checks the whole prompt with
``count_messages`` before anything is sent.

The context window is, in order: ``settings.context_window``, ``/tokenize``'s ``max_model_len``, the ``/v1/models``
entry's ``max_model_len``; otherwise a clear error asks for ``RAG_CONTEXT_WINDOW``.

The server is probed lazily (first count or generation), so constructing the backend never blocks on the network.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from rag.models.llm import LLM, Generation, Message, TextStream
from rag.models.sources import resolve_tokenizer_source
from rag.models.tokens import HFTokenCounter

if TYPE_CHECKING:
    from rag.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_FALLBACK_TOKENIZER = "bundled:qwen2.5-coder-0.5b"


class LLMServerError(RuntimeError):
    """The OpenAI-compatible server answered with an error or something unreadable."""


def split_base_url(base_url: str) -> tuple[str, str]:
    """``http://h:8000/v1`` or ``http://h:8000`` → (``http://h:8000/v1``, ``http://h:8000``)."""
    base = base_url.rstrip("/")
    root = base.removesuffix("/v1")
    return root + "/v1", root


class OpenAILLM(LLM):
    """Chat completions over HTTP; exact token counts from vLLM's /tokenize, else local tokenizer + margin."""

    def __init__(self, settings: Settings, *, timeout_s: float = 600.0) -> None:
        if not settings.llm_base_url:
            raise ValueError("the openai backend needs RAG_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        self.settings = settings
        self.api_base, self.root = split_base_url(settings.llm_base_url)
        headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0), follow_redirects=True
        )
        # A ``bundled:`` name (the default setting) is only used if the server lists it (this service's own API
        # does); otherwise the server's first model is taken.
        self._model: str | None = None if settings.llm_model.startswith("bundled:") else settings.llm_model
        self._probe_lock = threading.Lock()
        self._probed = False
        self._server_tokenize = False
        self._server_detokenize = True  # assumed until a call fails
        self._max_model_len: int | None = None
        self._models_cache: list[dict[str, Any]] | None = None
        self._local: HFTokenCounter | None = None
        self._window: int | None = settings.context_window

    # --- server discovery -----------------------------------------------------------------------
    @property
    def name(self) -> str:  # type: ignore[override]
        if self._model is None:
            ids = [str(m.get("id")) for m in self._models()]
            if not ids:
                raise LLMServerError(f"{self.api_base}/models lists no model; set RAG_LLM_MODEL")
            self._model = self.settings.llm_model if self.settings.llm_model in ids else ids[0]
        return self._model

    def _models(self) -> list[dict[str, Any]]:
        if self._models_cache is None:
            data = self._json("GET", f"{self.api_base}/models")
            self._models_cache = list(data.get("data", []))
        return self._models_cache

    def _probe(self) -> None:
        """Find out once whether the server tokenizes for us, and its max_model_len."""
        if self._probed:
            return
        with self._probe_lock:
            if self._probed:
                return
            try:
                response = self._http.post(
                    f"{self.root}/tokenize", json={"model": self.name, "prompt": "ping", "add_special_tokens": False}
                )
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                body = None
            if isinstance(body, dict) and ("count" in body or "tokens" in body):
                self._server_tokenize = True
                self._max_model_len = body.get("max_model_len")
                log.info("%s: exact token counts from %s/tokenize", self.api_base, self.root)
            else:
                spec = self.settings.llm_tokenizer or DEFAULT_FALLBACK_TOKENIZER
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_source(spec, self.settings.models_root))
                self._local = HFTokenCounter(tokenizer, 0, name=spec, margin=self.settings.llm_token_margin)
                log.warning(
                    "%s has no /tokenize: counting with local tokenizer %s + %d tokens of margin",
                    self.api_base,
                    spec,
                    self.settings.llm_token_margin,
                )
            self._probed = True

    @property
    def context_window(self) -> int:  # type: ignore[override]
        if self._window is None:
            self._probe()
            window = self._max_model_len
            if window is None:
                try:
                    for entry in self._models():
                        if entry.get("id") == self.name and entry.get("max_model_len"):
                            window = int(entry["max_model_len"])
                except LLMServerError as exc:
                    log.warning("cannot read the model list of %s: %s", self.api_base, exc)
            if window is None:
                raise ValueError(
                    f"cannot tell the context window of {self.name!r} at {self.api_base}: "
                    "set RAG_CONTEXT_WINDOW to the server's maximum context length"
                )
            self._window = int(window)
        return self._window

    @property
    def exact_counts(self) -> bool:
        """True when counts come from the server's own tokenizer (no margin needed)."""
        self._probe()
        return self._server_tokenize

    # --- HTTP helpers ---------------------------------------------------------------------------
    def _json(self, method: str, url: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, url, json=payload)
        except httpx.HTTPError as exc:
            raise LLMServerError(f"{method} {url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise LLMServerError(f"{method} {url} → {response.status_code}: {response.text[:500]}")
        try:
            return response.json()
        except ValueError as exc:
            raise LLMServerError(f"{method} {url} returned non-JSON: {response.text[:200]}") from exc

    def _tokenize(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"{self.root}/tokenize", {"model": self.name, **payload})

    # --- counting -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        self._probe()
        if self._server_tokenize:
            body = self._tokenize({"prompt": text, "add_special_tokens": False})
            return int(body.get("count", len(body.get("tokens", []))))
        assert self._local is not None
        return self._local.count_tokens(text)

    def count_messages(self, messages: Sequence[Message]) -> int:
        self._probe()
        if self._server_tokenize:
            body = self._tokenize({"messages": list(messages), "add_generation_prompt": True})
            return int(body.get("count", len(body.get("tokens", []))))
        assert self._local is not None
        return self._local.count_messages(messages)  # margin included

    def truncate(self, text: str, max_tokens: int) -> str:
        self._probe()
        if max_tokens <= 0:
            return ""
        if not self._server_tokenize:
            assert self._local is not None
            return self._local.truncate(text, max_tokens)
        tokens = self._tokenize({"prompt": text, "add_special_tokens": False}).get("tokens")
        if isinstance(tokens, list) and len(tokens) <= max_tokens:
            return text
        if isinstance(tokens, list) and self._server_detokenize:
            try:
                body = self._json(
                    "POST", f"{self.root}/detokenize", {"model": self.name, "tokens": tokens[:max_tokens]}
                )
                return self._truncate_by_search(str(body["prompt"]), max_tokens)  # re-checked: text can re-merge
            except (LLMServerError, KeyError):
                self._server_detokenize = False
        return self._truncate_by_search(text, max_tokens)

    def _truncate_by_search(self, text: str, max_tokens: int) -> str:
        """Longest character prefix whose (server) count fits: a binary search, O(log n) count calls."""
        if self.count_tokens(text) <= max_tokens:
            return text
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo]

    # --- generation -----------------------------------------------------------------------------
    def _payload(
        self, messages: Sequence[Message], max_new_tokens: int, temperature: float, top_p: float, stream: bool
    ) -> tuple[dict[str, Any], int]:
        prompt_tokens = self.count_messages(messages)
        self.check_fits(prompt_tokens, max_new_tokens)
        payload: dict[str, Any] = {
            "model": self.name,
            "messages": list(messages),
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": stream,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload, prompt_tokens

    def generate(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> Generation:
        payload, prompt_tokens = self._payload(messages, max_new_tokens, temperature, top_p, stream=False)
        body = self._json("POST", f"{self.api_base}/chat/completions", payload)
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMServerError(f"unexpected chat completion: {str(body)[:300]}") from exc
        usage = body.get("usage") or {}
        return Generation(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens),
            completion_tokens=int(usage.get("completion_tokens") or self.count_tokens(text)),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def stream(
        self, messages: Sequence[Message], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        alternative: str | None = None,
    ) -> TextStream:
        payload, prompt_tokens = self._payload(messages, max_new_tokens, temperature, top_p, stream=True)
        return TextStream(self._stream(payload, prompt_tokens))

    def _stream(self, payload: dict[str, Any], prompt_tokens: int) -> Generator[str, None, Generation]:
        url = f"{self.api_base}/chat/completions"
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        finish = "stop"
        for attempt in (0, 1):
            with self._http.stream("POST", url, json=payload) as response:
                if response.status_code == 400 and attempt == 0 and "stream_options" in payload:
                    payload = {k: v for k, v in payload.items() if k != "stream_options"}  # older servers
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise LLMServerError(f"POST {url} → {response.status_code}: {response.text[:500]}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise LLMServerError(f"unreadable stream event: {data[:200]}") from exc
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            pieces.append(piece)
                            yield piece
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
            break
        text = "".join(pieces)
        return Generation(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens),
            completion_tokens=int(usage.get("completion_tokens") or (self.count_tokens(text) if text else 0)),
            finish_reason=finish,
        )
