# The API image: `rag serve` on port 8000, data in /data. Generation normally runs elsewhere (vLLM over HTTP,
# RAG_LLM_BACKEND=openai, see docker-compose.yml); embedding runs here on the CPU. It needs RAG_API_KEYS (or RAG_AUTH=off).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAG_DATA_DIR=/data

WORKDIR /app

# torch first, from the CPU index: PyPI's default Linux wheel is the multi-GB CUDA build, which this image
# (embedding only; the GPU is vLLM's) does not need. The version matches the pin in pyproject.toml.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Dependencies change less often than code: install them in their own layer from the project metadata.
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
RUN pip install . \
    && useradd --create-home --uid 10001 rag \
    && mkdir -p /data \
    && chown rag:rag /data

USER rag
VOLUME ["/data"]
EXPOSE 8000

# Ready = store reachable and embedder loaded (GET /readyz); python is there, curl is not.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=5)"]

CMD ["rag", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8000"]
