"""Benchmarks from the local Hugging Face datasets cache, named ``hf:DATASET[:CONFIG]:SPLIT``, read offline.

``DATASET`` is a hub id (``openai_humaneval`` or ``org/name``), ``CONFIG`` the dataset's
configuration (subset) when it has several, ``SPLIT`` a whole split::

    hf:openai_humaneval:test
    hf:openai/gsm8k:main:test
    hf:cais/mmlu:abstract_algebra:test

The split is read with ``datasets.load_dataset`` from the datasets cache
(``HF_DATASETS_CACHE``, else ``HF_HOME/datasets``) with offline mode forced for the
call, so nothing is downloaded whatever the environment says; a dataset fetched with
``huggingface-cli download --repo-type dataset`` (a snapshot in ``HF_HUB_CACHE``, else
``HF_HOME/hub``) is read from that snapshot when the datasets cache lacks it. Records
come out as the Parquet reader gives them (the raw Arrow values, ``to_pylist``), so a
split equals the JSON Lines file of the same records.

A split's identity (:func:`describe_hf_set`) is the SHA-256 of its records as canonical
JSON lines (keys sorted, UTF-8, one record per line, in split order): it changes when
any cached value changes, and not when the same data is cached again elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import decimal
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from contaudit.errors import InputError

HF_PREFIX = "hf:"
SYNTAX = "hf:DATASET:SPLIT or hf:DATASET:CONFIG:SPLIT (e.g. hf:openai_humaneval:test, hf:openai/gsm8k:main:test)"
BATCH_ROWS = 1000

_DATASET = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # name or org/name, as the hub allows
_CONFIG = re.compile(r"[^\s/:]+")
_SPLIT = re.compile(r"\w+(\.\w+)*")  # what datasets accepts as a split name


@dataclass(frozen=True)
class HubSet:
    """One split of a dataset in the local Hugging Face cache."""

    dataset: str  # "name" or "org/name"
    config: str | None
    split: str

    @property
    def source(self) -> str:
        """The ``hf:`` name this set is given by."""
        return HF_PREFIX + ":".join(p for p in (self.dataset, self.config, self.split) if p is not None)

    @property
    def fetch_command(self) -> str:
        """What fetches it where there is network (and fills the datasets cache)."""
        config = f", {self.config!r}" if self.config is not None else ""
        return (f"python -c \"import datasets; datasets.load_dataset({self.dataset!r}{config}, "
                f"split={self.split!r})\"")


def is_hf_set(path: str | Path) -> bool:
    """True when ``path`` names a cached dataset split (``hf:...``) rather than a file."""
    return str(path).startswith(HF_PREFIX)


def parse_hf_set(text: str | Path) -> HubSet:
    """The dataset, config and split of an ``hf:`` name; :class:`InputError` naming the syntax when malformed.

    >>> parse_hf_set("hf:openai/gsm8k:main:test")
    HubSet(dataset='openai/gsm8k', config='main', split='test')
    """
    text = str(text)
    body = text.removeprefix(HF_PREFIX)
    if "[" in body:
        raise InputError(f"split slices are not supported; name a whole split: {SYNTAX}", path=text)
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise InputError(f"expected {SYNTAX}", path=text)
    dataset, split = parts[0], parts[-1]
    config = parts[1] if len(parts) == 3 else None
    if not _DATASET.fullmatch(dataset):
        raise InputError(f"dataset {dataset!r} is not a hub id (name or org/name); expected {SYNTAX}", path=text)
    if config is not None and not _CONFIG.fullmatch(config):
        raise InputError(f"config {config!r} is not a config name; expected {SYNTAX}", path=text)
    if not _SPLIT.fullmatch(split):
        raise InputError(f"split {split!r} is not a split name (letters, digits, '_'); expected {SYNTAX}", path=text)
    return HubSet(dataset, config, split)


def _cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("HF_HOME", os.path.join(xdg, "huggingface"))))


def datasets_cache() -> Path:
    """The datasets cache, as ``datasets`` finds it, read from the environment now: ``HF_DATASETS_CACHE``,
    else ``HF_HOME/datasets``."""
    return Path(os.path.expanduser(os.environ.get("HF_DATASETS_CACHE") or _cache_home() / "datasets"))


def hub_cache() -> Path:
    """The hub cache that ``huggingface-cli download`` fills: ``HF_HUB_CACHE``, else ``HF_HOME/hub``."""
    return Path(os.path.expanduser(os.environ.get("HF_HUB_CACHE") or _cache_home() / "hub"))


@contextlib.contextmanager
def _offline_and_quiet() -> Iterator[None]:
    """Offline mode forced for ``datasets`` and ``huggingface_hub`` (whatever ``HF_HUB_OFFLINE`` says), their
    warnings and progress bars off; everything restored after."""
    import datasets
    import huggingface_hub.constants as hub_constants
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from datasets.utils import logging as ds_logging

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE, ds_logging.get_verbosity()
    bars_off = are_progress_bars_disabled()
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    ds_logging.set_verbosity_error()
    disable_progress_bars()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved[:2]
        ds_logging.set_verbosity(saved[2])
        if not bars_off:
            enable_progress_bars()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _cached_configs(hs: HubSet, cache: Path) -> list[str]:
    """The configs of ``hs.dataset`` prepared in the datasets cache (``ORG___NAME/CONFIG/VERSION/HASH/``)."""
    from datasets.naming import camelcase_to_snakecase

    parts = hs.dataset.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = cache / "___".join(parts)
    return sorted({p.parts[-4] for p in root.glob("*/*/*/dataset_info.json")})


def _snapshot(hs: HubSet) -> Path | None:
    """The dataset's snapshot in the hub cache (``datasets--ORG--NAME/snapshots/COMMIT``), or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hs.dataset, repo_type="dataset", cache_dir=str(hub_cache()),
                                      local_files_only=True))
    except Exception:  # not cached, or a broken cache entry: either way nothing to read there
        return None


def _not_cached(hs: HubSet) -> InputError:
    return InputError(f"dataset {hs.dataset!r} is not in the local Hugging Face cache (datasets cache "
                      f"{datasets_cache()}, hub cache {hub_cache()}; HF_DATASETS_CACHE, HF_HUB_CACHE or HF_HOME "
                      f"move them); contaudit downloads nothing: fetch it where there is network with "
                      f"{hs.fetch_command} (or huggingface-cli download --repo-type dataset {hs.dataset}) and "
                      f"copy the cache here", path=hs.source)


def _config_fits(hs: HubSet, configs: list[str]) -> bool:
    """Whether ``configs`` hold the config ``hs`` names, or exactly one when it names none."""
    return hs.config in configs if hs.config is not None else len(configs) == 1


def _config_error(hs: HubSet, configs: list[str]) -> InputError:
    if hs.config is None:
        return InputError(f"dataset {hs.dataset!r} has several configs ({', '.join(configs)}); name one, "
                          f"e.g. hf:{hs.dataset}:{configs[0]}:{hs.split}", path=hs.source)
    return InputError(f"config {hs.config!r} of dataset {hs.dataset!r} is not in the local cache; configs there: "
                      f"{', '.join(configs)}", path=hs.source)


def _load_splits(hs: HubSet):
    """Every split of the dataset's config, as ``datasets`` loads it offline (a ``DatasetDict``)."""
    import datasets

    cache = datasets_cache()
    kwargs = {"split": None, "cache_dir": str(cache), "download_mode": "reuse_cache_if_exists"}
    with _offline_and_quiet():
        configs = _cached_configs(hs, cache)
        if _config_fits(hs, configs):
            # "hf://datasets/" keeps a local directory of the same name from being read instead
            source = "hf://datasets/" + hs.dataset
        elif (snapshot := _snapshot(hs)) is not None:
            try:
                names = datasets.get_dataset_config_names(str(snapshot))
            except Exception as e:
                raise InputError(f"cannot read the hub cache's snapshot {snapshot} ({_one_line(e)})",
                                 path=hs.source) from None
            if not _config_fits(hs, names):
                raise _config_error(hs, names)
            source, kwargs["download_mode"] = str(snapshot), "reuse_dataset_if_exists"  # prepared once, then reused
        elif configs:
            raise _config_error(hs, configs)
        else:
            raise _not_cached(hs)
        try:
            return datasets.load_dataset(source, hs.config, **kwargs)
        except Exception as e:  # datasets raises many types for a damaged or foreign cache entry
            raise InputError(f"cannot read it from the local cache ({_one_line(e)})", path=hs.source) from None


def open_hf_set(path: str | Path):
    """The cached split ``path`` (``hf:...``) as a ``datasets.Dataset``, loaded offline.

    Raises :class:`InputError` (one line, naming the ``hf:`` name) for a malformed name, a
    dataset in neither cache (with how to fetch it), an unknown or unnamed config (naming
    those cached) and a missing split (naming the splits there).
    """
    hs = parse_hf_set(path)
    splits = _load_splits(hs)
    if hs.split not in splits:
        raise InputError(f"no split {hs.split!r} in the cached dataset {hs.dataset!r}; splits there: "
                         f"{', '.join(splits)}", path=hs.source)
    return splits[hs.split]


def _rows(dataset) -> Iterator[dict]:
    for batch in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
        yield from batch.to_pylist()


def iter_hf_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, record)`` (1-based) of a cached split, as :func:`contaudit.io.iter_parquet` does."""
    yield from enumerate(_rows(open_hf_set(path)), start=1)


def _json_value(value):
    """JSON for the Arrow values that are not JSON (dates, bytes, decimals, ...), only to hash them."""
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return str(value)
    return {type(value).__name__: repr(value)}  # another Arrow scalar (an interval, say): its repr is its value


def records_sha256(records) -> str:
    """SHA-256 of ``records`` as canonical JSON lines: keys sorted, UTF-8, one record and ``\\n`` per line."""
    h = hashlib.sha256()
    for rec in records:
        line = json.dumps(rec, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_value)
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def describe_hf_set(path: str | Path) -> dict:
    """What identifies a cached split, as :func:`contaudit.manifest.describe_path` does a file.

    ``sha256`` is :func:`records_sha256` of its records; ``cache_files`` are the Arrow
    files it was read from, ``size`` their bytes.
    """
    hs = parse_hf_set(path)
    dataset = open_hf_set(path)
    files = [f["filename"] for f in dataset.cache_files]
    return {"path": hs.source, "kind": "hf-dataset", "dataset": hs.dataset, "config": dataset.info.config_name,
            "split": hs.split, "rows": dataset.num_rows, "cache_files": files,
            "size": sum(os.path.getsize(f) for f in files if os.path.exists(f)),
            "sha256": records_sha256(_rows(dataset)), "sha256_of": "records (canonical JSON lines)"}
