"""The ``rag`` command as an operator meets it (issue 16, items 8 and 9): settings typed as a person types them, a
bad setting or a full / read-only disk ending in one line rather than a traceback, a warning when serving beyond
this machine without keys, and a compose file that will not publish the API without a key.

Every case runs the real ``rag`` executable in a subprocess. The disk cases mount a tmpfs (full) or a read-only
bind mount in a private mount namespace (``unshare``), and are skipped where the machine does not allow that.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rag.settings import Settings
from tests.api_server import free_port
from tests.conftest import REPO

RAG = str(Path(sys.executable).with_name("rag"))
RICH_TRACEBACK = "Traceback (most recent call last) ─"  # the title of typer's traceback panel


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without RAG_ settings (but the shared models folder), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k == "RAG_MODELS_DIR"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", COLUMNS="80")
    env.update(settings)
    return env


def rag(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RAG, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _in_namespace(script: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``script`` (sh) in a private user + mount namespace, where mounting a tmpfs or a read-only bind is allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _assert_one_line_error(out: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr
    assert RICH_TRACEBACK not in out.stderr and "Traceback" not in out.stdout, out.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# --- item 8: settings -------------------------------------------------------------------------------------------
def test_list_settings_typed_as_plain_values(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "drafts").mkdir(parents=True)
    (docs / "keep.txt").write_text("Lock gates raise boats between two water levels of a canal.")
    (docs / "old.skip.txt").write_text("This one matches an ignore pattern.")
    (docs / "drafts" / "wip.txt").write_text("This one sits in an ignored folder.")
    env = _env(RAG_IGNORE_PATTERNS="*.skip.txt, drafts", RAG_ALLOWED_ROOTS="/srv/docs", RAG_API_KEYS="abc",
               RAG_CORS_ORIGINS="https://a.example,https://b.example")
    out = rag("ingest", str(docs), "--json", "--data-dir", str(tmp_path / "data"), env=env)
    assert out.returncode == 0, out.stderr
    assert [Path(f["path"]).name for f in json.loads(out.stdout)["files"]] == ["keep.txt"]


def test_list_settings_split_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_API_KEYS", " k1 , k2,")
    monkeypatch.setenv("RAG_ALLOWED_ROOTS", "/srv/docs")
    monkeypatch.setenv("RAG_CORS_ORIGINS", '["https://a.example"]')
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"] and settings.allowed_roots == [Path("/srv/docs")]
    assert settings.cors_origins == ["https://a.example"]


@pytest.mark.parametrize(("command", "variable", "value", "expected"), [
    (["serve"], "RAG_API_KEYS", "[s3cret", "a value or a comma-separated list"),
    (["serve"], "RAG_MAX_FILE_MB", "abc", "a number > 0"),
    (["ask", "what?"], "RAG_DEVICE", "tpu", "one of auto, cpu, cuda"),
    (["ingest", "."], "RAG_TOP_K", "many", "a whole number"),
    (["docs"], "RAG_SUMMARIZE", "maybe", "true or false"),
    (["worker"], "RAG_ALLOWED_ROOTS", '["unclosed', "a value or a comma-separated list"),
])
def test_a_bad_setting_is_one_line(tmp_path: Path, command: list[str], variable: str, value: str,
                                   expected: str) -> None:
    out = rag(*command, "--data-dir", str(tmp_path / "data"), env=_env(**{variable: value}), timeout=120)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    line = _assert_one_line_error(out, 2, f"invalid setting {variable}:", f"expected {expected}")
    assert "s3cret" not in line  # a value may be a key: never echoed


# --- item 9: full and read-only disks ---------------------------------------------------------------------------
def _corpus(folder: Path, files: int) -> Path:
    folder.mkdir()
    for i in range(files):
        (folder / f"note-{i:03d}.txt").write_text(f"Note {i} on orchards, rivers and the spring weather. " * 30)
    return folder


def test_full_disk_ends_in_one_line(tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "docs", 80)
    mount = tmp_path / "disk"
    mount.mkdir()
    script = f'mount -t tmpfs -o size=400k tmpfs "{mount}" && exec "{RAG}" ingest "{docs}" --data-dir "{mount}/data"'
    out = _in_namespace(script, _env())
    line = _assert_one_line_error(out, 1)
    assert "No space left on device" in line or "disk is full" in line, line


def test_read_only_data_dir_ends_in_one_line(tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "docs", 3)
    data = tmp_path / "data"
    assert rag("ingest", str(docs), "--data-dir", str(data), env=_env()).returncode == 0
    (docs / "new.txt").write_text("A new note about hedgerows and the birds that nest in them.")
    script = (f'mount --bind "{data}" "{data}" && mount -o remount,bind,ro "{data}" && '
              f'exec "{RAG}" ingest "{docs}" --data-dir "{data}"')
    out = _in_namespace(script, _env())
    line = _assert_one_line_error(out, 1)
    assert re.search(r"read-only|readonly|unable to open database", line, re.IGNORECASE), line


def test_rag_ingest_finishes_with_the_other_files_when_one_fails(tmp_path: Path) -> None:
    """Issue 32: a 12 MB prose text made `rag ingest` exit 1 with 0 documents (NLTK's TimeoutError out of the
    chunker). Here its chunking runs past the file's budget (RAG_PARSE_TIMEOUT_S=2; it takes ~6 s): that file fails
    with its reason, the others are stored, and the command succeeds."""
    from tests.test_robust_ingest import prose

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a_small.txt").write_text("Mount Etna is an active stratovolcano on the east coast of Sicily.")
    (docs / "large.txt").write_text(prose(12 * 2**20))
    (docs / "z_small.txt").write_text("The Strait of Messina separates Sicily from the Italian mainland.")
    out = rag("ingest", str(docs), "--data-dir", str(tmp_path / "data"), "--json", env=_env(RAG_PARSE_TIMEOUT_S="2"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    assert by_name["a_small.txt"]["status"] == by_name["z_small.txt"]["status"] == "added"
    assert by_name["large.txt"]["status"] == "failed"
    assert "parsing and chunking took longer than 2 s" in by_name["large.txt"]["error"]


# --- item 9: serving beyond this machine ------------------------------------------------------------------------
def _serve_until(env: dict[str, str], data: Path, host: str, marker: str, timeout_s: float = 180) -> str:
    """Start ``rag serve`` and return its log up to the line containing ``marker`` (then stop it)."""
    cmd = [RAG, "serve", "--data-dir", str(data), "--host", host, "--port", str(free_port())]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    try:
        assert proc.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while marker not in seen and time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=1):
                seen += proc.stderr.readline()
        assert marker in seen, seen
        return seen
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serving_off_loopback_without_keys_warns(tmp_path: Path) -> None:
    log = _serve_until(_env(RAG_AUTH="off"), tmp_path / "data", "0.0.0.0", "without API keys")
    warning = next(line for line in log.splitlines() if "without API keys" in line)
    assert warning.startswith("WARNING") and "0.0.0.0" in warning and "RAG_API_KEYS" in warning


@pytest.mark.parametrize("keys", ["", ",", "[]", None])
def test_an_empty_key_list_is_refused_at_start_up(tmp_path: Path, keys: str | None) -> None:
    """Issue 32: RAG_API_KEYS='' / ',' / '[]' (or unset) silently served an open API; now only RAG_AUTH=off does."""
    env = _env() if keys is None else _env(RAG_API_KEYS=keys)
    out = rag("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), env=env, timeout=120)
    line = _assert_one_line_error(out, 2, "RAG_API_KEYS holds no key", "RAG_AUTH=off")
    assert line == ("error: RAG_API_KEYS holds no key and none was made with `rag keys create`: set one key or a "
                    "comma-separated list, or RAG_AUTH=off to serve the API without authentication")


def test_serving_with_keys_does_not_warn(tmp_path: Path) -> None:
    log = _serve_until(_env(RAG_API_KEYS="k1"), tmp_path / "data", "0.0.0.0", "Application startup complete")
    assert "without API keys" not in log


def test_compose_requires_an_api_key() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    published = {name: svc for name, svc in compose["services"].items()
                 if "RAG_API_KEYS" in (svc.get("environment") or {})}
    assert published, "no service configures RAG_API_KEYS"
    for name, svc in published.items():
        env = svc["environment"]
        assert re.fullmatch(r"\$\{RAG_API_KEYS:\?[^}]+\}", env["RAG_API_KEYS"]), (name, env["RAG_API_KEYS"])
        # What compose would pass (a key given, defaults for the rest) is read by Settings as typed.
        values = {k: _interpolate(str(v)) for k, v in env.items() if k.startswith("RAG_")}
        settings = Settings.model_validate({k.removeprefix("RAG_").lower(): v for k, v in values.items()})
        assert settings.api_keys == ["change-me"], name


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR:?message}`` as compose would fill them with RAG_API_KEYS set."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name == "RAG_API_KEYS":
            return "change-me"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)
