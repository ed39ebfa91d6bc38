"""The ``rag`` command line: typer for arguments, rich for progress and tables. Holds no logic of its own."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from rag.settings import Settings, describe_settings_error

if TYPE_CHECKING:
    from rag.engine import RAG
    from rag.types import Answer, WatchStatus

log = logging.getLogger(__name__)
console = Console()
err = Console(stderr=True)


def _say_error(message: str) -> None:
    """One line on stderr, never wrapped at the terminal's width: scripts and people grep it."""
    err.print(f"error: {message}", soft_wrap=True, markup=False, highlight=False)


def _environment_failure(exc: OSError | DBAPIError) -> str:
    """The one-line reason for a failure of the machine rather than of the code: a full or read-only disk,
    missing permissions, a database that cannot be written (a bug keeps its traceback)."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    reason = str(exc.orig).strip()
    return f"the database failed: {reason.splitlines()[0] if reason else type(exc.orig).__name__}"


class _App(typer.Typer):
    """The typer app, whose failures of the environment end in one line on stderr (exit 1), not a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (OSError, DBAPIError) as exc:
            log.info("details of the failure", exc_info=exc)  # shown with --verbose
            _say_error(_environment_failure(exc))
            raise SystemExit(1) from None


app = _App(help="Retrieval-augmented question answering over your own documents.", no_args_is_help=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", "-d", help="Data directory (env RAG_DATA_DIR).", show_default=False)
]
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment and the options; a bad value ends the command in one line naming it."""
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        _say_error(describe_settings_error(exc))
        raise typer.Exit(2) from None


def _rag(data_dir: Path | None, **overrides: Any) -> RAG:
    settings = _settings(data_dir, **overrides)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rag.engine import RAG

    return RAG(settings=settings)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"), console=err, transient=False,
    )


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # the CLI draws its own progress; transformers' "Loading weights" bars are noise beside it
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.")],
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    summarize: Annotated[
        bool | None, typer.Option("--summarize/--no-summarize", help="Summarise new and changed documents in the "
                                  "background (default: RAG_SUMMARIZE, on).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Also wait until every document has a summary.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index new and changed files, skip unchanged ones, drop files gone from the folders.

    Returns once the chunks are searchable; summaries follow in the background (`--wait` waits for them here).
    With RAG_BROKER_URL set, the files become tasks for `rag worker` processes and this command follows the job."""
    rag = _rag(data_dir)
    try:
        if rag.settings.broker_url:
            _follow_job(rag, rag.submit(paths, collection, summarize=summarize), as_json)
        else:
            _ingest_here(rag, paths, collection, summarize, as_json)
        if wait and (rag.settings.summarize if summarize is None else summarize):
            _wait_for_summaries(rag, collection)
    finally:
        rag.close()


def _ingest_here(rag: RAG, paths: list[Path], collection: str, summarize: bool | None, as_json: bool) -> None:
    with _progress() as bar:
        task = bar.add_task("ingest", total=None, current="")

        def progress(done: int, total: int, path: str) -> None:
            bar.update(task, completed=done, total=total, current=Path(path).name[-40:])

        report = rag.ingest(paths, collection, summarize=summarize, progress=progress)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        counts = ", ".join(f"{n} {k}" for k, n in report.counts().items())
        console.print(f"[bold]{report.collection}[/]: {counts} in {report.elapsed_s:.1f}s")
        for f in report.failures:
            console.print(f"  [red]{f.status}[/] {f.path}: {f.error}")
        if report.summaries_pending:
            console.print(f"summaries: {report.summaries_pending} pending, written in the background by `rag serve` "
                          "(or now: `rag ingest --wait`, `rag summarize`)")


def _wait_for_summaries(rag: RAG, collection: str) -> None:
    with _progress() as bar:
        task = bar.add_task("summaries", total=None, current="")
        states = rag.wait_for_summaries(
            collection, progress=lambda done, total, _path: bar.update(task, completed=done, total=total)
        )
    console.print("summaries: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))


@app.command()
def watch(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Folders to keep in line with the collection (default: the folders of RAG_WATCH).", exists=True,
        file_okay=False, show_default=False)] = None,
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    observer: Annotated[str | None, typer.Option(
        help="auto | native | polling (env RAG_WATCH_OBSERVER): polling for network mounts.", show_default=False)] = None,
    summarize: Annotated[
        bool | None, typer.Option("--summarize/--no-summarize", help="Summarise new and changed documents in the "
                                  "background (default: RAG_SUMMARIZE, on).")
    ] = None,
) -> None:
    """Keep collections in line with folders as files are saved, moved and deleted, until Ctrl-C.

    Starts with a scan that applies what changed while nothing watched (as `rag ingest` does), then applies each
    burst of changes as one batch within about a second; a renamed or moved file keeps its chunks (nothing is
    embedded again). With RAG_BROKER_URL set, the changes become tasks for `rag worker` processes."""
    import signal
    import time

    from rich.live import Live

    overrides: dict[str, Any] = {"watch_observer": observer} if observer else {}
    if paths:
        overrides["watch"] = [{"path": p, "collection": collection} for p in paths]
    rag = _rag(data_dir, **overrides)
    if not rag.settings.watch:
        _say_error("nothing to watch: name folders (rag watch FOLDER…) or set RAG_WATCH")
        raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends it like Ctrl-C
    watcher = None
    try:
        watcher = rag.watch(summarize=summarize)
        err.print(f"watching {len(rag.settings.watch)} folder(s); Ctrl-C stops", highlight=False)
        if err.is_terminal:  # one live line per folder
            with Live(_watch_status(watcher.status()), console=err, refresh_per_second=4) as live:
                while True:
                    time.sleep(0.25)
                    live.update(_watch_status(watcher.status()))
        else:  # a log file, a service manager: the lines again whenever a state changes
            shown = None
            while True:
                states = [(st.state, st.batches, st.error) for st in watcher.status()]
                if states != shown:
                    err.print(_watch_status(watcher.status()))
                    shown = states
                time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        rag.close()  # the batch in hand ends after its current file
    if watcher is not None and not err.is_terminal:  # what was done, for the log
        err.print(_watch_status(watcher.status()))


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


_WATCH_COLOURS = {"watching": "green", "scanning": "cyan", "applying": "cyan", "missing": "yellow", "failed": "red"}


def _watch_status(statuses: list[WatchStatus]) -> Table:
    """One line per watched folder: its state, where changes go, how they are noticed, what waits, what was done."""
    from datetime import datetime

    table = Table.grid(padding=(0, 1))
    for _ in range(5):
        table.add_column(overflow="fold")  # a path is never cut short
    for st in statuses:
        facts = [st.observer or "not watched", f"backlog {st.backlog}"]
        facts.append(", ".join(f"{n} {k}" for k, n in st.counts.items()) or "no changes yet")
        if st.last_change:
            facts.append("last change " + datetime.fromisoformat(st.last_change).astimezone().strftime("%H:%M:%S"))
        if st.error:
            facts.append(st.error)
        table.add_row(f"[{_WATCH_COLOURS.get(st.state, 'white')}]{st.state}[/]", escape(st.path), "→",
                      escape(st.collection), f"[dim]{escape(' · '.join(facts))}[/]")
    return table


@app.command()
def search(
    question: str,
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    path_prefix: Annotated[str | None, typer.Option(help="Only documents under this path.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the passages retrieval finds for a question (no LLM)."""
    hits = _rag(data_dir).retrieve(question, top_k, collection, path_prefix=path_prefix)
    if as_json:
        console.print_json(json.dumps([h.to_dict() for h in hits]))
        return
    if not hits:
        console.print("no matching passages")
    for rank, h in enumerate(hits, 1):
        console.print(f"[bold]{rank}.[/] {h.document} [dim]#{h.position} {h.kind} score={h.score:.4f} cos={h.dense_score or 0:.3f}[/]")
        console.print("   " + " ".join(h.text.split())[:300])


Stream = Annotated[bool, typer.Option("--stream/--no-stream", help="Print the answer as it is written.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="LLM (env RAG_LLM_MODEL).")]
TopK = Annotated[int, typer.Option("--top-k", "-k")]
ModeOpt = Annotated[str | None, typer.Option(help="compact | refine | tree_summarize")]


@app.command()
def ask(
    question: str,
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    top_k: TopK = 5,
    mode: ModeOpt = None,
    stream: Stream = True,
    llm_model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the documents, citing its sources and the words of them that support it."""
    rag = _rag(data_dir, **_model(llm_model))
    answer = _answer(rag, [{"role": "user", "content": question}], top_k, collection, mode, stream and not as_json,
                     quiet=as_json)
    if as_json:
        console.print_json(json.dumps(answer.to_dict()))


@app.command()
def chat(
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    top_k: TopK = 5,
    mode: ModeOpt = None,
    stream: Stream = True,
    llm_model: ModelOpt = None,
) -> None:
    """Ask in turns: follow-up questions may refer to earlier ones ("and when did it open?"). An empty line,
    Ctrl-D or Ctrl-C ends the conversation."""
    rag = _rag(data_dir, **_model(llm_model))
    messages: list[dict[str, str]] = []
    while True:
        try:
            question = console.input("[bold]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not question:
            return
        messages.append({"role": "user", "content": question})
        answer = _answer(rag, messages, top_k, collection, mode, stream, quiet=False)
        messages.append({"role": "assistant", "content": answer.text})


def _model(llm_model: str | None) -> dict[str, str]:
    """The ``--model`` override, when given."""
    return {"llm_model": llm_model} if llm_model else {}


def _answer(rag: RAG, messages: list[dict[str, str]], top_k: int, collection: str, mode: str | None, stream: bool,
            *, quiet: bool) -> Answer:
    """Answer the conversation's last question, printing it (streamed when asked) with its sources unless quiet."""
    from rag.types import Answer

    if not stream:
        answer = rag.chat(messages, top_k, collection, mode=mode)
        if not quiet:
            _show_answer(answer, printed=None)
        return answer
    printed = ""
    for piece in rag.chat_stream(messages, top_k, collection, mode=mode):
        if isinstance(piece, Answer):
            _show_answer(piece, printed)
            return piece
        printed += piece
        console.print(piece, end="", soft_wrap=True, markup=False, highlight=False)
    raise RuntimeError("the answer stream ended without its answer")


_VERDICT = {
    "extractive": "the model's answer was not confident enough to show; quoted from the documents instead",
    "abstained": "the model's answer was not confident enough to show; no answer in the documents",
}


def _show_answer(answer: Answer, printed: str | None) -> None:
    """The answer (unless it was streamed as it is), the question searched when a follow-up was rewritten, each
    source with the spans that support it, groundedness and token usage."""
    if printed is None:
        console.print(answer.text, markup=False, highlight=False)
    else:
        console.print()
        if answer.kind != "generated" and printed.strip() != answer.text:  # the verdict replaced the model's text
            console.print(f"[yellow]{_VERDICT[answer.kind]}:[/]\n{escape(answer.text)}", soft_wrap=True)
        elif printed.strip() != answer.text:
            console.print(f"[dim]citations checked:[/] {escape(answer.text)}", soft_wrap=True)
    if answer.confidence is not None:
        console.print(f"[dim]{answer.kind} answer, confidence {answer.confidence:.2f}[/]")
    if answer.rewritten:
        console.print(f"[dim]searched for: {escape(answer.question)}[/]", soft_wrap=True)
    for s in answer.sources:
        page = f" sheet {s.sheet!r}" if s.sheet is not None else f" p.{s.page}" if s.page is not None else ""
        console.print(f"[dim][{s.number}] {escape(s.document)} #{s.position}{page} (score {s.score:.4f})[/]")
        for span in s.spans:
            words = " ".join(s.text[span.start:span.end].split())
            where = f"chars {span.doc_start}-{span.doc_end}" if span.doc_start is not None else "summary"
            page = (f", sheet {span.sheet!r}" if span.sheet is not None
                    else f", page {span.page}" if span.page is not None else "")
            console.print(f"    [green]“{escape(words[:300])}”[/] [dim](support {span.score:.2f}, {where}{page})[/]",
                          soft_wrap=True)
    for sentence in answer.sentences:
        if not sentence.supported:
            console.print(f"[yellow]unsupported:[/] {escape(answer.text[sentence.start:sentence.end])}", soft_wrap=True)
    u = answer.usage
    grounded = f"groundedness {answer.groundedness:.2f}; " if answer.groundedness is not None else ""
    history = f", history messages {u.history_messages} (dropped {u.history_dropped})" if u.history_messages or \
        u.history_dropped else ""
    console.print(
        f"[dim]{grounded}tokens: prompt {u.prompt_tokens} + completion {u.completion_tokens} of window "
        f"{u.context_window}; chunks used {u.chunks_used}, dropped {u.chunks_dropped}, truncated "
        f"{u.chunks_truncated}{history}[/]"
    )


@app.command()
def docs(data_dir: DataDir = None, collection: Annotated[str | None, typer.Option("--collection", "-c")] = None, as_json: JsonOpt = False) -> None:
    """List documents with their state and summary."""
    infos = _rag(data_dir).documents(collection)
    if as_json:
        console.print_json(json.dumps([d.to_dict() for d in infos]))
        return
    table = Table("id", "collection", "path", "type", "chunks", "status", "summary")
    for d in infos:
        status = d.status if d.status == "indexed" else f"[red]{d.status}[/]: {d.error}"
        summary = d.summary_state if not d.summary else (d.summary[:80] + ("…" if len(d.summary) > 80 else ""))
        if d.summary and d.summary_state == "extractive":
            summary = f"[dim](extractive)[/] {summary}"
        if d.summary_state == "failed":
            summary = f"[red]failed[/]: {d.summary_error}"
        doc_type = f"{d.doc_type} (OCR {d.ocr_pages}/{d.pages} p.)" if d.ocr_pages else d.doc_type
        table.add_row(str(d.id), d.collection, d.path, doc_type, str(d.chunks), status, summary)
    console.print(table)


@app.command()
def delete(ref: Annotated[str, typer.Argument(help="Document id or path.")], data_dir: DataDir = None) -> None:
    """Remove a document from the store and the index."""
    try:
        n = _rag(data_dir).delete(ref)
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(1) from None
    console.print(f"removed {ref} ({n} chunks)")


@app.command()
def summarize(
    data_dir: DataDir = None,
    collection: CollectionOpt = "default",
    force: Annotated[bool, typer.Option(help="Rewrite existing summaries too (e.g. after changing the model).")] = False,
) -> None:
    """Write the pending document summaries (resumable)."""
    rag = _rag(data_dir)
    with _progress() as bar:
        task = bar.add_task("summarize", total=None, current="")
        written, failed = rag.summarize(
            collection, force=force, progress=lambda d, t, p: bar.update(task, completed=d, total=t, current=Path(p).name[-40:])
        )
    console.print(f"summaries: {written} written, {failed} failed")


def _follow_job(rag: RAG, job_id: str, as_json: bool) -> None:
    """Show a queued job's progress until it ends (Ctrl-C stops watching, not the job)."""
    import time

    finished = ("done", "failed", "cancelled", "interrupted")
    with _progress() as bar:
        task = bar.add_task(f"job {job_id[:8]}", total=None, current="")
        while (job := rag.job(job_id)).state not in finished:
            last = (job.message or "").removeprefix("last file: ")
            bar.update(task, completed=job.processed, total=job.total or None, current=Path(last).name[-40:])
            time.sleep(0.5)
        bar.update(task, completed=job.processed, total=job.total or job.processed, current="")
    if as_json:
        console.print_json(json.dumps(job.to_dict()))
        return
    counts = ", ".join(f"{n} {k}" for k, n in job.counts.items())
    console.print(f"[bold]{job.collection}[/]: job {job.job_id} {job.state}: {counts}")
    for e in job.errors:
        console.print(f"  [red]{e.get('status', 'failed')}[/] {e.get('path')}: {e.get('error')}")


@app.command()
def jobs(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List ingestion jobs with their progress (in-process, another replica's, or queued on workers)."""
    rag = _rag(data_dir)
    infos = [rag.job(r.id) for r in rag.store.list_runs(limit)]
    if as_json:
        console.print_json(json.dumps([i.to_dict() for i in infos]))
        return
    table = Table("job", "state", "collection", "done", "counts", "where")
    for i in infos:
        counts = ", ".join(f"{n} {k}" for k, n in i.counts.items())
        table.add_row(i.job_id[:12], i.state, i.collection, f"{i.processed}/{i.total}", counts, i.executor)
    console.print(table)


@app.command()
def worker(
    data_dir: DataDir = None,
    threads: Annotated[int | None, typer.Option(help="Tasks at once (default: RAG_WORKER_THREADS).")] = None,
) -> None:
    """Execute queued ingestion tasks from RAG_BROKER_URL until stopped (SIGINT / SIGTERM)."""
    settings = _settings(data_dir)
    if not settings.broker_url:
        _say_error("rag worker needs a broker: set RAG_BROKER_URL (amqp://… or redis://…)")
        raise typer.Exit(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if data_dir is not None:  # the worker's engine is built from the environment, like every worker's
        os.environ["RAG_DATA_DIR"] = str(settings.data_dir)
    from ingest.queue import run_worker

    run_worker(settings, threads or settings.worker_threads)


@app.command()
def collections(data_dir: DataDir = None) -> None:
    """List collections."""
    for c in _rag(data_dir).collections():
        console.print(f"{c['name']}: {c['documents']} documents ({c['embed_model']}, {c['embed_dim']}-d)")


keys_app = typer.Typer(help="API keys: scoped to collections, with a role (reader, writer, admin).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _actor() -> str:
    """Who changes keys from the command line, for the audit log: the local user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A name for the key, unique among active keys.")],
    role: Annotated[str, typer.Option("--role", help="reader | writer | admin")] = "reader",
    collections: Annotated[str | None, typer.Option(
        "--collections", help="Comma-separated collections it may see (default: every collection).")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Valid for: 30d, 12h, 90m, 2w (default: no "
                                                "expiry).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from rag.store.keys import parse_duration

    try:
        expires_in = parse_duration(expires) if expires else None
        scope = collections.split(",") if collections is not None else None
        info, secret = _rag(data_dir).store.create_key(name, role, scope, expires_in=expires_in, actor=_actor())
    except ValueError as exc:
        _say_error(str(exc))
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps({**info.to_dict(), "key": secret}))
        return
    console.print(secret, markup=False, highlight=False)
    err.print(f"key {info.name!r} ({info.role}, {_scope(info.collections)}"
              f"{', expires ' + info.to_dict()['expires_at'] if info.expires_at else ''}): shown this once")


def _scope(collections: tuple[str, ...] | list[str] | None) -> str:
    return "every collection" if collections is None else ", ".join(collections)


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the stored keys (never their secrets); keys of RAG_API_KEYS are admin keys and not listed."""
    keys = [k.to_dict() for k in _rag(data_dir).store.list_keys(revoked=revoked)]
    if as_json:
        console.print_json(json.dumps(keys))
        return
    table = Table("name", "role", "collections", "created", "expires", "revoked")
    for k in keys:
        table.add_row(k["name"], k["role"], _scope(k["collections"]), k["created_at"] or "", k["expires_at"] or "",
                      k["revoked_at"] or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], data_dir: DataDir = None) -> None:
    """Revoke a key: every server on this database refuses it from its next request."""
    try:
        _rag(data_dir).store.revoke_key(name, actor=_actor())
    except KeyError as exc:
        _say_error(str(exc.args[0]))
        raise typer.Exit(1) from None
    console.print(f"revoked {name}")


@app.command()
def audit(
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only what this key did.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Who wrote what: ingestions, uploads, deletes, cancels through the API, and key changes."""
    entries = [e.to_dict() for e in _rag(data_dir).store.audit_log(limit, collection=collection, key=key)]
    if as_json:
        console.print_json(json.dumps(entries))
        return
    table = Table("time", "key", "action", "collection", "target", "counts")
    for e in entries:
        counts = ", ".join(f"{n} {k}" for k, n in e["counts"].items())
        table.add_row(e["at"], e["key"], e["action"], e["collection"] or "", e["target"] or "", counts)
    console.print(table)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from api.app import create_app

    settings = _settings(data_dir)
    if not settings.auth and not _is_loopback(host):
        log.warning("serving on %s without API keys (RAG_AUTH=off): anyone who can reach this address can read, add "
                    "and delete documents; set RAG_API_KEYS (one key or a comma-separated list)", host)
    try:
        app = create_app(settings)
    except ValueError as exc:  # no key with authentication on
        _say_error(str(exc))
        raise typer.Exit(2) from None
    uvicorn.run(app, host=host, port=port, log_level="info")


def _is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost may resolve anywhere)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


if __name__ == "__main__":
    app()
