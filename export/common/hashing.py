"""The one file digest of the package: the sidecar's ``sha256``, the fine-tune pack and its state-dict shards."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's bytes (streamed by ``hashlib.file_digest``)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
