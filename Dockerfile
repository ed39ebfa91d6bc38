# The API image: `rag serve` on port 8000, data in /data. Generation normally runs elsewhere (vLLM over HTTP,
# RAG_LLM_BACKEND=openai, see docker-compose.yml); embedding runs here on the CPU. It needs RAG_API_KEYS (or RAG_AUTH=off).
# llama.cpp is compiled in a stage of its own (the compiler stays out of the image), for every x86 CPU generation with
# the best chosen at run time (GGML_CPU_ALL_VARIANTS): the build machine's -march=native would die with SIGILL on an
# older CPU.
FROM python:3.11-slim AS llamacpp
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" \
    pip wheel --no-cache-dir --no-deps -w /wheels llama-cpp-python==0.3.36

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
# llama.cpp (a local model on the CPU), built in the stage above; libgomp is its OpenMP runtime. tesseract-ocr: OCR
# at about a fifth of the CPU of the bundled RapidOCR (docs/ingestion.md), which RAG_OCR=auto uses when it is absent.
COPY --from=llamacpp /wheels /wheels
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 tesseract-ocr && rm -rf /var/lib/apt/lists/* \
    && pip install /wheels/*.whl \
    && pip install ".[llamacpp]" \
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
