"""What every benchmark script shares: offline model loading, the repository on ``sys.path``, the shared data folder,
and collapsing chunk hits to a document ranking.

Scripts run as ``python bench/<name>.py``, so this module is importable as ``_common`` and must be imported before
anything from the repository.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def doc_ranking(paths: Iterable[str]) -> list[str]:
    """Document names (file stems) in order of first appearance: a ranking of chunks becomes one of documents."""
    ranking: dict[str, None] = {}
    for path in paths:
        ranking.setdefault(Path(path).stem, None)
    return list(ranking)
