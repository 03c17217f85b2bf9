"""The on-disk format of a corpus index and reading it back.

An index is a directory with ``manifest.json`` (how it was built) and ``items.jsonl``
(one line per benchmark item: its corpus evidence and status). The manifest is written
last, so a directory without one is not a finished index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contaudit.errors import InputError, ManifestMismatchError, json_problem
from contaudit.manifest import INDEX_MANIFEST, read_json
from contaudit.text import NORMALIZATION

INDEX_FORMAT = "contaudit-index/1"


@dataclass
class CorpusIndex:
    """A finished index: its manifest and per-item records (in benchmark order)."""

    path: Path
    manifest: dict
    items: list[dict]

    def by_id(self) -> dict[str, dict]:
        return {it["id"]: it for it in self.items}


def load_index(path: str | Path) -> CorpusIndex:
    """Read an index directory written by :func:`contaudit.index.build_index`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("not an index directory (run `contaudit index` first)", path=path)
    manifest_path = path / INDEX_MANIFEST
    if not manifest_path.exists():
        if path.with_name(path.name + ".partial").is_dir():  # a build stages there and publishes when done
            raise InputError(f"the index was not finished ({path.name}.partial holds its build): rerun "
                             f"`contaudit index` with the same --out to resume", path=path)
        raise InputError(f"not an index directory: no {INDEX_MANIFEST} (an index is the folder `contaudit index "
                         f"--out` writes)", path=path)
    manifest = read_json(manifest_path)
    if manifest.get("format") != INDEX_FORMAT:
        raise ManifestMismatchError(f"{manifest_path}: format {manifest.get('format')!r} is not {INDEX_FORMAT!r}; "
                                    "rebuild the index with this version of contaudit")
    if manifest.get("parameters", {}).get("normalization") != NORMALIZATION:
        raise ManifestMismatchError(f"{manifest_path}: built with normalization "
                                    f"{manifest.get('parameters', {}).get('normalization')!r}, this version uses "
                                    f"{NORMALIZATION!r}; rebuild the index")
    items = []
    items_path = path / "items.jsonl"
    try:
        with open(items_path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                rec = json.loads(line)
                missing = [k for k in ("id", "status", "n_words", "text") if k not in rec]
                if missing:
                    raise InputError(f"missing field(s) {missing}", path=items_path, record=line_no)
                items.append(rec)
    except FileNotFoundError:
        raise InputError("missing items.jsonl", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON ({json_problem(e)})", path=items_path, record=line_no) from None
    expected = manifest.get("counts", {}).get("items")
    if expected is not None and expected != len(items):
        raise ManifestMismatchError(f"{items_path}: {len(items)} items but the manifest says {expected}")
    return CorpusIndex(path, manifest, items)
