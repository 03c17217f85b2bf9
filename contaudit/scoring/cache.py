"""Resumable cache of finished item scores.

One cache file holds the scores of one (model fingerprint, scoring settings, kind)
key, one JSON object per line: ``{"h": item hash, "v": {metric: value}}``. Lines are
appended and fsynced after every batch, so a killed run loses at most the batch in
flight; a torn last line is cut off when the file is next opened. Beside it,
``<name>.key.json`` records the key in readable form. Everything is plain JSON: a
cache never executes code on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from contaudit.manifest import write_json_atomic

CACHE_FORMAT = 1


def text_hash(*parts: str) -> str:
    """SHA-256 naming an item's scored content (its text, or prefix and suffix)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:32]


class ScoreCache:
    """Append-only JSON Lines store of item scores for one key.

    ``directory=None`` gives a cache that remembers nothing (for ``--no-cache``).
    """

    def __init__(self, directory: str | Path | None, key: dict):
        self.key = {"format": CACHE_FORMAT, **key}
        self.path: Path | None = None
        if directory is not None:
            directory = Path(directory)
            name = f"{self.key.get('kind', 'scores')}-{key_hash(self.key)}"
            self.path = directory / f"{name}.jsonl"
            key_path = directory / f"{name}.key.json"
            if not key_path.exists():
                write_json_atomic(key_path, self.key)

    def load(self) -> dict[str, dict]:
        """Scores already stored, by item hash; cuts a torn last line off the file."""
        if self.path is None or not self.path.exists():
            return {}
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a run was killed while writing a line
            with open(self.path, "r+b") as f:
                f.truncate(complete)
        found = {}
        for line in data[:complete].splitlines():
            try:
                entry = json.loads(line)
                found[entry["h"]] = entry["v"]
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line only costs rescoring that item
        return found

    def add(self, entries: dict[str, dict]) -> None:
        """Append ``entries`` (item hash -> scores) and flush them to disk."""
        if self.path is None or not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"h": h, "v": v}, ensure_ascii=False) + "\n" for h, v in entries.items())
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
