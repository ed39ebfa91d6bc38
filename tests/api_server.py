"""A real ``rag serve`` (uvicorn) in a subprocess on 127.0.0.1, for the API tests and the load benchmark.

The server is started exactly as an operator would (``python -m rag.cli serve --data-dir D --host H --port P``,
configured by ``RAG_*`` environment variables), so the tests cover the CLI entry, the settings parsing from the
environment (lists as JSON), the lifespan and uvicorn itself, not just the app object.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Self

import httpx

REPO = Path(__file__).resolve().parents[1]
SMALL_LLM = "bundled:smollm2-135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(models_dir: Path | None = None, **settings: Any) -> dict[str, str]:
    """Environment for a test server: the small LLM, short answers, and ``RAG_<NAME>`` for each setting
    (lists and dicts JSON-encoded, which is how pydantic-settings reads them)."""
    # RAG_MODELS_DIR (the test session's shared model exports) is kept; every other RAG_ setting is this server's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k == "RAG_MODELS_DIR"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["RAG_LLM_MODEL"] = SMALL_LLM
    env["RAG_MAX_NEW_TOKENS"] = "8"
    env["RAG_LLM_THREADS"] = "1"  # see tests/conftest.py one_torch_thread: one thread holds on a busy 2-core machine
    env["RAG_SUMMARIZE"] = "off"  # see tests/conftest.py: a test that wants the background pass passes summarize=True
    if "api_keys" not in settings:
        env["RAG_AUTH"] = "off"  # a server without keys must say so (rag serve refuses to start otherwise)
    if models_dir is not None:
        env["RAG_MODELS_DIR"] = str(models_dir)
    for key, value in settings.items():
        env[f"RAG_{key.upper()}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return env


class ApiServer:
    """Start, wait for readiness, stop. ``url`` is the base URL; the server log is kept for failure messages."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = Path(data_dir)
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self, timeout_s: float = 240.0) -> Self:
        cmd = [sys.executable, "-m", "rag.cli", "-v", "serve", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan closes jobs and the store
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 180.0,
             until: tuple[str, ...] = ("done", "failed", "cancelled", "interrupted")) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until its state is one of ``until``."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in until:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:.0f}s: {job}")
        time.sleep(0.2)
