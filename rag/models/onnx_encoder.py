"""The embedder on ONNX Runtime: int8 for documents (the CPU default, about twice PyTorch fp32), fp32 for queries.

Why: on a 2-core AVX2 CPU, embedding is nearly all of ingestion time. Measured on 800 SciFact abstracts (truncated
to 256 word pieces, 2 threads, median of 3; ``bench/embed_backends.py``): PyTorch fp32 3.5k tokens/s, ONNX fp32
3.9k, ONNX int8 with per-channel weights 6.8k, at a mean cosine of 0.994 to the fp32 vectors. Per-tensor int8
weights were as fast but lossy (cosine 0.937), so weights are quantised per channel.

Activations are quantised per tensor at run time, so int8 is noisiest on very short texts (cosine 0.98 for
"hello world") — which is what queries are. A query is one short sequence and costs milliseconds in fp32 either
way, so queries always run on the fp32 graph (identical to PyTorch, cosine 1.000) and only documents, where the
throughput matters, take int8.

The sentence-transformers model is exported once (transformer → ONNX fp32, BERT graphs fused, plus a dynamic int8
quantisation of its MatMul weights) into ``<models_dir>/onnx-…`` with its tokenizer and pooling mode, by
:func:`build_once`; later loads read only that folder (no PyTorch model in memory). Pooling and normalisation run
in numpy. Only models made of Transformer + mean/CLS Pooling (+ Normalize) are exported; anything else raises
:class:`OnnxExportError` and the caller stays on PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from rag.models.build_once import build_once
from rag.models.fast_tokenizer import backend_copy

log = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]
_FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
_EXPORT_VERSION = 2  # bump when the export recipe changes, so old folders are not reused
_META = "rag_onnx.json"


MIN_FILL = 0.7
"""A batch ends before a text shorter than this share of the batch's longest (in characters)."""


def _batches(order: list[int], lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` (longest first) of at most ``batch_size``, cut where padding would waste more
    than ``1 - MIN_FILL`` of a row. Why: a queue task embeds the few chunks of its files in one call, and one batch
    of mixed lengths padded to the longest cost 1.3x the in-process pipeline's time per chunk (SciFact abstracts,
    bench/workers.py), where hundreds of sorted chunks fill batches of similar lengths."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or lengths[i] < MIN_FILL * lengths[batch[0]]):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


class OnnxExportError(RuntimeError):
    """The model cannot be exported to ONNX (unsupported module layout)."""


def export_dir(model_path: str, root: Path) -> Path:
    """Where the export of ``model_path`` lives: keyed by its resolved path and the recipe version."""
    key = hashlib.sha256(f"{model_path}|{_EXPORT_VERSION}".encode()).hexdigest()[:10]
    return Path(root) / f"onnx-{Path(model_path).parent.name}-{Path(model_path).name}-{key}"


def _pooling_mode(model) -> str:
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise OnnxExportError(f"modules {names}: only Transformer + Pooling (+ Normalize) are exported")
    mode = model[1].get_config_dict().get("pooling_mode")
    if mode not in ("mean", "cls"):
        raise OnnxExportError(f"pooling mode {mode!r}: only mean and cls are exported")
    return str(mode)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _write_export(tmp: Path, model_path: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    pooling = _pooling_mode(model)
    transformer = model[0].auto_model.eval()
    # eager attention exports to plain ops; sdpa can trace to a graph that ignores the padding mask.
    transformer.set_attn_implementation("eager")
    inputs = [n for n in model.tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(inputs, args, strict=True))).last_hidden_state

    # A padded example, so tracing records the masked path (an all-ones mask can be traced as "no mask").
    example = model.tokenizer(["a short one", "a somewhat longer example sentence"], padding=True, return_tensors="pt")
    fp32 = tmp / _FILES["fp32"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about negative gather indices and a padding check traced as a constant; neither applies
        # here (the mask always spans the sequence) and tests/test_embedder.py compares padded batches to PyTorch.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            LastHidden(),
            tuple(example[n] for n in inputs),
            str(fp32),
            input_names=inputs,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles BERT's dynamic shapes
        )
    _fuse_bert(fp32, transformer.config)
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropMessage("pre-processing before quantization")  # logged on the root logger on every call
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            str(fp32), str(tmp / _FILES["int8"]), weight_type=QuantType.QInt8, per_channel=True,
            # the fused operators are in the com.microsoft domain, which ONNX shape inference cannot type
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice)
    model.tokenizer.save_pretrained(str(tmp))
    meta = {"source": model_path, "pooling": pooling, "max_seq_length": int(model.max_seq_length), "inputs": inputs}
    (tmp / _META).write_text(json.dumps(meta))


def _fuse_bert(path: Path, config) -> None:
    """Fuse a BERT graph in place with ONNX Runtime's transformer optimizer (one Attention, SkipLayerNorm and
    BiasGelu operator per layer instead of dozens of small ones), before quantisation.

    Why: measured with ``bench/embed_backends.py``-style runs on 400 SciFact abstracts, int8 documents went from
    5.2-5.8k to 5.6-6.1k tokens/s (+4-8%, two runs, each fused graph faster than the unfused one beside it), at the
    same cosine to PyTorch. Other architectures are left unfused: the optimizer's patterns are BERT's.
    """
    if getattr(config, "model_type", None) != "bert":
        return
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(
        str(path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    fused.save_model_to_file(str(path))
    log.info("onnx export fused: %s", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})


def ensure_export(model_path: str, root: Path) -> Path:
    """The export folder of ``model_path``, built on first use (about 10 s for MiniLM on 2 cores)."""
    return build_once(export_dir(model_path, root), lambda tmp: _write_export(tmp, model_path), source=model_path, what="onnx")


class OnnxEncoder:
    """Encodes texts with an exported model. ONNX Runtime sessions are thread-safe and the tokenizer backend is
    configured once and then only read, so no lock is needed."""

    def __init__(self, folder: Path, document_precision: Precision) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        meta = json.loads((folder / _META).read_text())
        self.pooling: str = meta["pooling"]
        self.max_tokens: int = meta["max_seq_length"]
        self.inputs: list[str] = meta["inputs"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._batcher = backend_copy(self.tokenizer, truncate_to=self.max_tokens, pad=True)
        def session(precision: Precision, *, spin: bool) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.inter_op_num_threads = 1
            # After a query's one short run, spinning threads would hold the cores that FAISS and tantivy need
            # next (1M chunks: IVF scan 6 ms alone, 14 ms right after a spinning query run); batches of
            # documents keep them busy between runs, so they spin as usual.
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            return ort.InferenceSession(str(folder / _FILES[precision]), options, providers=["CPUExecutionProvider"])

        self.document_session = session(document_precision, spin=True)
        self.query_session = session("fp32", spin=False)
        self.dim = int(self.query_session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int, *, query: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Texts are batched longest first, and a batch ends early where the next
        text is much shorter than its first, so each batch has little padding (see :func:`_batches`)."""
        session = self.query_session if query else self.document_session
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for idx in _batches(order, [len(t) for t in texts], batch_size):
            encodings = self._batcher.encode_batch([texts[i] for i in idx])
            batch = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            hidden = session.run(None, {name: batch[name] for name in self.inputs})[0]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            out[idx] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out
