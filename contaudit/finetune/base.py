"""Loading a base model (local Hugging Face directory or GGUF file) and fingerprinting it.

The fingerprint is the SHA-256 of the weight files, so ``injection.json`` names the
exact weights a probe model started from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from contaudit.errors import InputError
from contaudit.manifest import hash_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a model: the file itself (GGUF) or a directory's weight files, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
                  and not p.name.startswith("training_args"))


def fingerprint(path: str | Path) -> dict:
    """``{"sha256", "files": [{"name", "size", "sha256"}]}`` of a model's weight files.

    The top-level ``sha256`` hashes the sorted ``name\\0sha256`` lines of the files.
    """
    files = weight_files(path)
    if not files:
        raise InputError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) found in the model directory", path=path)
    rows = [{"name": f.name, "size": f.stat().st_size, "sha256": hash_file(f)} for f in files]
    h = hashlib.sha256()
    for row in rows:
        h.update(f"{row['name']}\0{row['sha256']}\n".encode())
    return {"sha256": h.hexdigest(), "files": rows}


def load_base(path: str | Path, *, trust_remote_code: bool = False):
    """``(model, tokenizer, kind)`` from a local HF directory or a ``.gguf`` file.

    ``kind`` is ``"hf"`` or ``"gguf"``. Weights are loaded in float32 (GGUF weights are
    dequantized by transformers, and the model is then a plain one that
    ``save_pretrained`` writes as safetensors). The tokenizer must define an
    end-of-text token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model_extra = {}
    if path.is_file() and path.suffix.lower() == ".gguf":
        from transformers import GgufConfig

        kind, where, extra = "gguf", str(path.parent), {"gguf_file": path.name}
        # dense float32 weights even where a GGUF matmul kernel would keep them packed: packed ones cannot train
        model_extra = {"quantization_config": GgufConfig(dequantize=True)}
    elif path.is_dir() and (path / "config.json").is_file():
        kind, where, extra = "hf", str(path), {}
    elif path.exists():
        raise InputError("not a model: expected a Hugging Face model directory (with config.json) or a .gguf file",
                         path=path)
    else:
        raise InputError("no such model directory or file", path=path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=trust_remote_code, dtype="float32",
                                                     **extra, **model_extra)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the model ({e})", path=path) from None
    if kind == "gguf":
        forget_gguf(model, path)
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no end-of-text (eos) token; injected copies need one as delimiter",
                         path=path)
    return model, tokenizer, kind


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
