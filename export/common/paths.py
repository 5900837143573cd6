"""Where the package, the repository and the shared data sets are (one place, whatever a module's depth)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parent
SHARED_DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "cache"
IMAGENET_LABELS = PACKAGE / "data" / "imagenet_labels.tsv"
