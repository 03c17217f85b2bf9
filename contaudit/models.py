"""One place for the causal LMs that contaudit scores and trains: find, fingerprint, load.

A model is a local Hugging Face directory (``config.json`` + ``*.safetensors`` or
``pytorch_model*.bin`` + tokenizer files) or a GGUF file, given by its path or as a
directory plus ``gguf_file``. Nothing is downloaded.

* :func:`resolve_model` checks a path and lists its weight files (:class:`ModelSource`).
* :func:`fingerprint` identifies a model by content (SHA-256 of its weight, config and
  tokenizer files), so a score cache keyed by it survives a moved directory but not a
  changed checkpoint; scoring and fine-tuning record the same ``id`` for one directory.
* :func:`resolve_device` and :func:`resolve_dtype` turn ``auto`` / names into torch
  objects.
* :func:`load_model` loads a model to score (:class:`LoadedModel`), on one device or
  split across several (:func:`plan_placement`: consecutive layers, balanced by bytes),
  :func:`load_base` one to train (float32, GGUF dequantized); both go through
  :func:`load_pretrained`, which turns what transformers and torch raise into a
  one-line :class:`ModelError` naming the model. :func:`load_tokenizer` loads only the
  tokenizer (for a process that drives model replicas).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from contaudit.config import device_name
from contaudit.errors import InputError
from contaudit.manifest import hash_file, write_json_atomic
from contaudit.model_files import TOKENIZER_FILES

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


class ModelError(InputError):
    """A model path that cannot be used: names the path, what is missing and the fix."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a Hugging Face directory, or a GGUF file in a directory."""

    directory: Path
    gguf_file: str | None
    weight_files: tuple[Path, ...]

    @property
    def format(self) -> str:
        return "gguf" if self.gguf_file else "huggingface"

    @property
    def display(self) -> str:
        return str(self.directory / self.gguf_file) if self.gguf_file else str(self.directory)


def _looks_like_hub_id(text: str) -> bool:
    """``org/name`` (one slash, no leading dot or slash): what ``from_pretrained`` would look up on the hub."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not text.startswith(".")


def _from_hub_cache(repo_id: str) -> Path:
    """The snapshot of ``repo_id`` in the local Hugging Face cache (never downloaded), as transformers finds it offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ModelError(f"not a local path, and the hub id {repo_id!r} is not in the local Hugging Face cache "
                         f"({HF_HUB_CACHE}); contaudit downloads nothing: fetch it where there is network "
                         f"(huggingface-cli download {repo_id}) or pass a local directory", path=repo_id) from None


def resolve_model(path: str | Path, gguf_file: str | None = None) -> ModelSource:
    """Check that ``path`` names a loadable model and list its weight files.

    ``path`` is a ``.gguf`` file, a directory with ``gguf_file`` in it, a directory
    holding exactly one ``.gguf`` file and no ``config.json``, or a Hugging Face
    directory; a hub id (``org/name``) that is not a local path resolves to its snapshot
    in the local Hugging Face cache, offline, as transformers does. Raises
    :class:`ModelError` naming the path and what is missing.
    """
    path = Path(path)
    if not path.exists() and _looks_like_hub_id(str(path)):
        path = _from_hub_cache(str(path))
    if not path.exists():
        raise ModelError("model path does not exist: no such model directory or file; pass a local Hugging Face "
                         "directory or a .gguf file (nothing is downloaded)", path=path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError("a model file must be a .gguf file; for a Hugging Face model pass its directory", path=path)
        if gguf_file is not None and gguf_file != path.name:
            raise ModelError(f"gguf_file {gguf_file!r} conflicts with the .gguf path given", path=path)
        return ModelSource(path.parent, path.name, (path,))
    if gguf_file is not None:
        target = path / gguf_file
        if not target.is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            raise ModelError(f"gguf_file {gguf_file!r} not found in the directory; .gguf files there: {ggufs}", path=path)
        return ModelSource(path, gguf_file, (target,))
    has_config = (path / "config.json").is_file()
    if not has_config:
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(path, ggufs[0].name, (ggufs[0],))
        if ggufs:
            raise ModelError(f"several .gguf files and no config.json; choose one with gguf_file "
                             f"(--gguf-file): {[p.name for p in ggufs]}", path=path)
        raise ModelError("no config.json and no .gguf file: not a Hugging Face model directory", path=path)
    for pattern in WEIGHT_PATTERNS:
        weights = tuple(sorted(path.glob(pattern)))
        if weights:
            return ModelSource(path, None, weights)
    raise ModelError("no weight files (*.safetensors or pytorch_model*.bin) beside config.json; "
                     "was the model saved with save_pretrained?", path=path)


class FileHashes:
    """SHA-256 of files, remembered on disk by (path, size, mtime) so large weights hash once.

    The store is a JSON file (``None`` keeps it in memory only).
    """

    def __init__(self, store: Path | None = None):
        self.store = store
        self._known: dict = {}
        if store is not None and store.is_file():
            try:
                self._known = json.loads(store.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._known = {}  # a damaged store only costs rehashing
        self._dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self._known.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return entry["sha256"]
        digest = hash_file(path)
        self._known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self._dirty = True
        return digest

    def save(self) -> None:
        if self.store is not None and self._dirty:
            write_json_atomic(self.store, self._known)
            self._dirty = False


# JSON settings saved beside a tokenizer that record how it was loaded, not what it does:
# transformers writes local_files_only into tokenizer_config.json when HF_HUB_OFFLINE is set.
SETTINGS_FILES = {"tokenizer_config.json": ("local_files_only",)}


def _settings_sha256(path: Path) -> str:
    """SHA-256 of a settings file without the keys that record only how it was loaded (the raw bytes
    when it is not a JSON object)."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in SETTINGS_FILES[path.name]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def fingerprint(model: ModelSource | str | Path, hashes: FileHashes | None = None, *,
                include_code: bool = False) -> dict:
    """Content fingerprint of a model (a :class:`ModelSource` or a path for :func:`resolve_model`).

    ``{"path", "gguf_file", "format", "config_sha256", "weights": [{"name", "size",
    "sha256"}], "tokenizer_files": [...], "id"}``. ``id`` hashes everything except the
    path, so it names the checkpoint's content: score caches key on it, score manifests
    and ``injection.json`` record it, and ``analyze`` compares it. With ``include_code``
    (remote code trusted) the directory's ``*.py`` files count too.
    """
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    hashes = hashes if hashes is not None else FileHashes()

    def entry(p: Path) -> dict:
        if p.name in SETTINGS_FILES:
            return {"name": p.name, "sha256": _settings_sha256(p)}
        return {"name": p.name, "size": p.stat().st_size, "sha256": hashes.sha256(p)}

    weights = [entry(p) for p in source.weight_files]
    config = source.directory / "config.json"
    config_sha = hashes.sha256(config) if source.gguf_file is None and config.is_file() else None
    others = []
    if source.gguf_file is None:
        names = [n for n in TOKENIZER_FILES if (source.directory / n).is_file()]
        if include_code:
            names += sorted(p.name for p in source.directory.glob("*.py"))
        others = [entry(source.directory / n) for n in names]
    content = {"format": source.format, "config_sha256": config_sha, "weights": weights, "tokenizer_files": others}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    hashes.save()
    return {"path": str(Path(source.display).resolve()), "gguf_file": source.gguf_file, **content, "id": digest}


def resolve_device(device: str) -> torch.device:
    """The torch device named ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises :class:`InputError` for another name, or a CUDA device torch does not see.
    """
    if device_name(device) is not None:
        raise InputError(f"`device` must be one of {list(DEVICES)} or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"`device` is {device!r} but torch sees no CUDA device; use 'cpu' or 'auto'")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise InputError(f"`device` is {device!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on GPUs that support it (else float16), float32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise InputError(f"`dtype` must be one of {['auto', *DTYPES]}, got {dtype!r}")
    return DTYPES[dtype]


@dataclass
class LoadedModel:
    """A model ready to score: the module, its tokenizer and what scoring needs to know."""

    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    context_token: int | None  # prepended to every text so its first token is scored
    context_length: int | None  # the model's maximum positions, when it states one
    fingerprint: dict = field(default_factory=dict)
    devices: tuple[str, ...] = ()  # the devices the model is split across (empty: all of it on ``device``)

    def describe_tokenizer(self) -> dict:
        tok = self.tokenizer
        return {"class": type(tok).__name__, "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id, "context_token_id": self.context_token}


def _context_length(model) -> int | None:
    config = model.config
    get_text = getattr(config, "get_text_config", None)
    config = get_text() if get_text else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _one_line(e: BaseException) -> str:
    """``Type: message`` on one line (transformers and torch raise multi-line, colored messages)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())
    return f"{type(e).__name__}: {text[:400] + ' ...' if len(text) > 400 else text}"


def _refused_pickle(source: ModelSource, e: BaseException) -> ModelError:
    """The one-line error for a pickle checkpoint that torch's weights-only loading refuses."""
    bins = [p for p in source.weight_files if p.suffix == ".bin"]
    where = bins[0] if len(bins) == 1 else source.directory / "pytorch_model*.bin"
    held = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    what = f"it holds {held.group(1)}, not only tensors" if held else _one_line(e)
    return ModelError(f"torch refuses to unpickle this checkpoint with weights-only loading ({what}); convert it to "
                      "safetensors: if you trust its source, AutoModelForCausalLM.from_pretrained(DIR, "
                      "weights_only=False).save_pretrained(DIR) writes model.safetensors beside it "
                      "(then remove the .bin)", path=where)


def _check_vocabulary(model, tokenizer, source: ModelSource) -> None:
    """Refuse a tokenizer whose ids do not all index the model's embedding (another model's tokenizer)."""
    rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
    top = max(tokenizer.get_vocab().values(), default=-1)  # the vocabulary's and the added tokens' ids
    if isinstance(rows, int) and top >= rows:
        raise ModelError(f"the tokenizer has token ids up to {top} but the model's embedding has {rows} rows "
                         f"(ids 0-{rows - 1}): the tokenizer files do not belong to these weights; use the "
                         "tokenizer the model was trained with", path=source.display)


# Files one of which a Hugging Face model directory's tokenizer is loaded from.


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    """The tokenizer of ``source`` (never from the network), checked to encode text.

    Raises :class:`ModelError` naming the model when a directory has no tokenizer files
    or transformers cannot load them, and when the tokenizer is empty.
    """
    from transformers import AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not source.gguf_file and not any((source.directory / name).exists() for name in TOKENIZER_FILES):
        raise ModelError(f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...) in the model directory; "
                         "copy the model's tokenizer files there", path=source.display)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.directory), **kwargs)
    except Exception as e:  # transformers raises many types for an unreadable tokenizer
        raise ModelError(f"cannot load the tokenizer: {_one_line(e)}", path=source.display) from None
    _check_tokenizer(tokenizer, source)
    return tokenizer


def load_pretrained(source: ModelSource, *, dtype: torch.dtype, device: torch.device,
                    trust_remote_code: bool = False, dequantize_gguf: bool = False,
                    devices: tuple[torch.device, ...] = ()):
    """``(model, tokenizer)`` from ``source`` (never from the network), on ``device`` in ``dtype``.

    With two or more ``devices`` the model is split across them instead (see
    :func:`plan_placement`): GPU weights load straight onto their GPU; on CPU devices
    the model is dispatched with accelerate's hooks all the same (the tested path).
    ``dequantize_gguf`` makes every layer of a GGUF model a dense float tensor (needed
    to train it). Raises :class:`ModelError` naming the model when transformers cannot
    load the tokenizer or the model, when torch refuses a pickle checkpoint, when the
    tokenizer has ids beyond the model's embedding, and when the model does not fit
    its devices.
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    model_kwargs = {"dtype": dtype}
    split = len(devices) > 1
    placement = None
    if split and devices[0].type == "cuda":  # placed by module before loading: weights go straight to their GPU
        placement = _plan_empty(source, dtype, devices, kwargs)
        model_kwargs["device_map"] = {name: devices[d].index or 0 for name, d in placement.items()}
    elif device.type == "cuda" and not split:
        model_kwargs["device_map"] = str(device)  # load straight onto the GPU, not through CPU memory
    if source.gguf_file and dequantize_gguf:
        from transformers import GgufConfig

        model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    # Report (rather than raise on) every weight that does not fit, so the refusal below can name them.
    model_kwargs.update(output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        try:
            model, info = AutoModelForCausalLM.from_pretrained(str(source.directory), attn_implementation="sdpa",
                                                               **model_kwargs, **kwargs)
        except ValueError as e:
            if "sdpa" not in str(e).lower():
                raise
            model, info = AutoModelForCausalLM.from_pretrained(str(source.directory), **model_kwargs, **kwargs)
    except Exception as e:  # corrupt weights, unknown architecture, remote code refused, a refused pickle, ...
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            raise _refused_pickle(source, e) from None
        raise ModelError(f"transformers cannot load the model as a causal LM: {_one_line(e)}",
                         path=source.display) from None
    _check_loading_info(info, source)
    if split and devices[0].type == "cpu":
        placement = plan_placement(model, len(devices), dtype=dtype)
        _dispatch_on_cpu(model, placement)
    if placement is not None:
        model.contaudit_placement = placement  # module -> index into ``devices``
    elif device.type != "cuda":
        model.to(device)
    _check_vocabulary(model, tokenizer, source)
    return model, tokenizer


# Room kept free on each GPU for activations, the KV cache and the logits blocks.
GPU_RESERVE_BYTES = 4 << 30
GPU_RESERVE_FRACTION = 0.1


def _blocks(model: torch.nn.Module) -> list[str]:
    """Names of the modules placed whole, in forward order: the no-split layers (decoder
    blocks), leaf modules, and modules holding parameters of their own."""
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    names = []

    def walk(prefix: str, module: torch.nn.Module) -> None:
        children = list(module.named_children())
        own = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if prefix and (type(module).__name__ in no_split or not children or own):
            names.append(prefix)
            return
        for name, child in children:
            walk(f"{prefix}.{name}" if prefix else name, child)
    walk("", model)
    return names


def plan_placement(model: torch.nn.Module, n_devices: int, *, dtype: torch.dtype,
                   capacities: list[int] | None = None) -> dict[str, int]:
    """Module name -> device number (0 .. n_devices-1) splitting ``model`` in forward order.

    Consecutive blocks (embedding, each decoder layer, final norm, head) go to one
    device after another so that each holds about the same bytes of weights (or a share
    proportional to ``capacities``, free bytes per device); a layer is never cut, and a
    module whose weights are tied to an earlier one (a tied output head) goes with it.
    Works on a model on the ``meta`` device (no memory). Raises :class:`ModelError`
    when a device would hold more than its capacity.
    """
    from accelerate.utils import compute_module_sizes, find_tied_parameters

    sizes = compute_module_sizes(model, dtype=dtype)
    blocks = _blocks(model)
    owner = {}  # parameter name -> block
    for block in blocks:
        for name, _ in model.get_submodule(block).named_parameters():
            owner[f"{block}.{name}"] = block
    tied_to = {}  # block -> the earlier block its tied weights live in
    for group in find_tied_parameters(model):
        holders = sorted({owner[p] for p in group if p in owner}, key=blocks.index)
        for later in holders[1:]:
            tied_to.setdefault(later, holders[0])
    own = {b: 0 if b in tied_to else sizes.get(b, 0) for b in blocks}
    total = max(1, sum(own.values()))
    weights = capacities or [1] * n_devices
    bounds = [total * sum(weights[:k + 1]) / sum(weights) for k in range(n_devices)]  # cumulative targets
    placement, used, loads = {}, 0, [0] * n_devices
    for block in blocks:
        if block in tied_to:
            placement[block] = placement[tied_to[block]]
            continue
        middle = used + own[block] / 2  # a block goes to the device whose share holds its middle byte
        device = next((k for k, bound in enumerate(bounds) if middle <= bound), n_devices - 1)
        device = max(device, max(placement.values(), default=0))  # forward order: never back to an earlier one
        placement[block] = device
        used += own[block]
        loads[device] += own[block]
    if capacities is not None:
        for k, (load, room) in enumerate(zip(loads, capacities)):
            if load > room:
                raise ModelError(f"the model's {total / 2**30:.1f} GiB of weights do not fit its devices: device "
                                 f"{k} would hold {load / 2**30:.1f} GiB and has {room / 2**30:.1f} GiB free "
                                 "(after room for activations); add devices or use a smaller dtype")
    return placement


def _plan_empty(source: ModelSource, dtype: torch.dtype, devices: tuple[torch.device, ...],
                kwargs: dict) -> dict[str, int]:
    """:func:`plan_placement` for the GPUs ``devices`` on an empty (meta) copy of the model."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(source.directory), **kwargs)
        with init_empty_weights():
            meta = AutoModelForCausalLM.from_config(config, trust_remote_code=kwargs["trust_remote_code"])
        meta.tie_weights()
    except Exception as e:  # noqa: BLE001 - an unreadable config is reported like a failed load
        raise ModelError(f"transformers cannot read the model's architecture: {_one_line(e)}",
                         path=source.display) from None
    capacities = []
    for d in devices:
        free, whole = torch.cuda.mem_get_info(d)
        capacities.append(max(0, int(free - max(GPU_RESERVE_BYTES, GPU_RESERVE_FRACTION * whole))))
    return plan_placement(meta, len(devices), dtype=dtype, capacities=capacities)


def _dispatch_on_cpu(model: torch.nn.Module, placement: dict[str, int]) -> None:
    """Place ``model``'s blocks with accelerate's hooks on "devices" that are all the CPU.

    The same hooks move activations between the blocks as between GPUs, so a split
    model can be checked on a machine without any.
    """
    import logging

    from accelerate import dispatch_model

    quiet = logging.getLogger("accelerate")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns that "cpu" modules count as offloaded: here they are not
    try:
        dispatch_model(model, device_map={name: "cpu" for name in placement}, force_hooks=True)
    finally:
        quiet.setLevel(level)


def _check_loading_info(info: dict, source: ModelSource) -> None:
    """Refuse a checkpoint whose weights do not fit its architecture: transformers would fill missing
    weights with a random draw (scores then differ run to run) and drop unexpected ones."""
    for kind, what in (("missing_keys", "missing from the checkpoint (they would be random)"),
                       ("mismatched_keys", "of the wrong shape for the architecture"),
                       ("unexpected_keys", "in the checkpoint but not in the architecture")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(kind) or ()))
        if keys:
            raise ModelError(f"{len(keys)} weights {what}, e.g. {', '.join(keys[:3])}; the checkpoint is "
                             "incomplete or belongs to another architecture", path=source.display)


def _check_tokenizer(tokenizer, source: ModelSource) -> None:
    """Refuse an empty tokenizer (a model directory without tokenizer files loads one silently)."""
    try:
        probe = tokenizer("The quick brown fox.", add_special_tokens=False)["input_ids"]
    except Exception as e:  # noqa: BLE001 - any failure here means the tokenizer is unusable
        raise ModelError(f"the tokenizer cannot encode text: {_one_line(e)}", path=source.display) from None
    if len(tokenizer) == 0 or not probe:
        raise ModelError("the tokenizer is empty (no tokenizer.json, tokenizer.model or vocab files?); copy the "
                         "model's tokenizer files into the directory", path=source.display)


def load_model(source: ModelSource, *, device: str = "auto", dtype: str = "auto",
               trust_remote_code: bool = False, devices: tuple[str, ...] = ()) -> LoadedModel:
    """Load the model to score and its tokenizer from ``source`` (see :func:`load_pretrained`).

    ``devices`` (two or more) splits the model across them instead of ``device``;
    the returned ``device`` is then where its output head is (where inputs go and
    the logits come out).
    """
    resolved = tuple(resolve_device(d) for d in devices)
    dev = resolved[0] if resolved else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    model, tokenizer = load_pretrained(source, dtype=torch_dtype, device=dev, trust_remote_code=trust_remote_code,
                                       devices=resolved if len(resolved) > 1 else ())
    model.eval()
    if len(resolved) > 1:
        head = model.get_output_embeddings()
        dev = head.weight.device if head is not None else dev
    context_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return LoadedModel(model, tokenizer, source, dev, torch_dtype, context_token, _context_length(model),
                       devices=tuple(devices) if len(resolved) > 1 else ())


def load_base(path: str | Path, *, trust_remote_code: bool = False):
    """``(model, tokenizer, kind)``: a base model to fine-tune, from a HF directory or a GGUF file.

    ``kind`` is ``"hf"`` or ``"gguf"``. Weights are loaded on the CPU in float32 (GGUF
    weights are dequantized, and the model is then a plain one that ``save_pretrained``
    writes as safetensors). The tokenizer must define an end-of-text token.
    """
    source = resolve_model(path)
    model, tokenizer = load_pretrained(source, dtype=torch.float32, device=torch.device("cpu"),
                                       trust_remote_code=trust_remote_code, dequantize_gguf=True)
    if source.gguf_file:
        forget_gguf(model, path)
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no end-of-text (eos) token; injected copies need one as delimiter",
                         path=path)
    return model, tokenizer, "gguf" if source.gguf_file else "hf"


def forget_gguf(model, path: str | Path | None = None) -> None:
    """Make a dense model loaded from a GGUF file an ordinary transformers model, in place.

    transformers marks such a model as quantized with method ``gguf`` and refuses to
    ``save_pretrained`` it, although after dequantization its weights are plain float
    tensors. Dropping the marks (as transformers' ``remove_quantization_config`` does)
    lets it train, merge LoRA adapters and save like a model read from safetensors.
    """
    packed = [name for name, module in model.named_modules() if type(module).__name__.startswith("Gguf")]
    if packed:
        raise InputError(f"the GGUF model kept packed (quantized) layers, e.g. {packed[0]!r}, which cannot train",
                         path=path)
    # `_weight_conversions` are the GGUF load ops; without them saving writes the architecture's own layout
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config"),
                        (model, "quantization_method"), (model, "_weight_conversions")):
        if hasattr(owner, attr):
            delattr(owner, attr)
    model.is_quantized = False
