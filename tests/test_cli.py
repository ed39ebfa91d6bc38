"""The `rag` command as a user runs it: a real subprocess over a real data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def rag_cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: PLW1510 - the tests read the return code themselves
        [sys.executable, "-m", "rag.cli", *args, "--data-dir", str(data_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=None if env is None else {**os.environ, **env},
    )


def test_ingest_search_docs_delete(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = REPO / "docs"
    out = rag_cli("ingest", str(docs), "--json", data_dir=data)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"]["added"] == len(list(docs.glob("*.md")))

    again = json.loads(rag_cli("ingest", str(docs), "--json", data_dir=data).stdout)
    assert again["counts"]["unchanged"] == report["counts"]["added"]

    hits = json.loads(rag_cli("search", "what happens to a renamed file", "--json", "-k", "3", data_dir=data).stdout)
    assert hits[0]["document"].endswith("ingestion.md") and "rename" in hits[0]["text"]

    listing = json.loads(rag_cli("docs", "--json", data_dir=data).stdout)
    assert {Path(d["path"]).name for d in listing} == {p.name for p in docs.glob("*.md")}

    text = rag_cli("search", "bm25 stemming", data_dir=data)
    assert text.returncode == 0 and "querying.md" in text.stdout
    assert "DEBUG" not in text.stderr and "Loading weights" not in text.stderr  # libraries stay quiet

    gone = rag_cli("delete", str(listing[0]["id"]), data_dir=data)
    assert gone.returncode == 0
    missing = rag_cli("delete", "999999", data_dir=data)
    assert missing.returncode == 1 and "no document" in missing.stderr


def test_ingest_returns_with_summaries_pending_and_wait_writes_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = REPO / "docs"
    n = len(list(docs.glob("*.md")))
    extractive = {"RAG_SUMMARIZE": "on", "RAG_SUMMARY_METHOD": "extractive"}
    out = rag_cli("ingest", str(docs), data_dir=data, env=extractive)
    assert out.returncode == 0, out.stderr
    assert f"summaries: {n} pending" in " ".join(out.stdout.split())
    waited = rag_cli("ingest", str(docs), "--wait", data_dir=data, env=extractive)
    assert waited.returncode == 0, waited.stderr
    assert f"summaries: {n} extractive" in waited.stdout
    listing = json.loads(rag_cli("docs", "--json", data_dir=data).stdout)
    assert {d["summary_state"] for d in listing} == {"extractive"} and all(d["summary"] for d in listing)
