"""A transformer encoder as the semantic stage's model (`--semantic-model DIR` on a transformers folder).

The encoder here is a tiny BERT built in the test (random weights, a WordPiece tokenizer
trained on the license texts every Debian machine ships): it checks the machinery (loading,
special tokens, window sizes, retrieval, verification, workers, errors), not the quality of
a trained encoder. Needs the optional extra `semantic` for the stage's other parts; without
it these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index

if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
    import wordllama  # noqa: F401
else:
    pytest.importorskip("wordllama", reason="the optional extra is not installed: pip install 'contaudit[semantic]'")

from contaudit.index import encoder, semantic  # noqa: E402

LICENSES = Path("/usr/share/common-licenses")
pytestmark = pytest.mark.skipif(not (LICENSES / "GPL-3").exists(), reason="no /usr/share/common-licenses")


def paragraphs(name: str) -> list[str]:
    return list(semantic.prose_paragraphs((LICENSES / name).read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("encoder")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = [(LICENSES / n).read_text(encoding="utf-8") for n in ("GPL-3", "MPL-2.0", "Artistic", "Apache-2.0")]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
              ).save_pretrained(root)
    return root


def test_an_encoder_folder_loads_with_its_special_tokens_length_and_fingerprint(encoder_dir):
    model = semantic.StaticModel.load(str(encoder_dir))
    assert model.encoder is not None and model.max_window == 126  # 128 positions less [CLS] and [SEP]
    tok = json.loads((encoder_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert (model.encoder.prefix, model.encoder.suffix) == ([tok["[CLS]"]], [tok["[SEP]"]])
    fp = model.fingerprint()
    assert set(fp["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}
    assert fp["encoder"] == {"pooling": "mean", "max_tokens": 126} and fp["dim"] == 32
    text = paragraphs("GPL-3")[3]
    ids = model.encode_ids([text])[0]
    assert np.isclose(float(model.mean_vector(ids) @ model.mean_vector(ids)), 1.0, atol=1e-5)
    # the pooled vector is the model's own: mean of the last hidden state over [CLS] text [SEP]
    import torch
    with torch.inference_mode():
        hidden = model.encoder.module(input_ids=torch.tensor([[tok["[CLS]"], *ids[:126], tok["[SEP]"]]])
                                      ).last_hidden_state[0].mean(dim=0)
    assert np.allclose(model.mean_vector(ids), (hidden / hidden.norm()).numpy(), atol=1e-5)


def test_window_sizes_stop_at_the_encoders_length():
    sizes, which = semantic.window_sizes([40, 300, 1000], longest=126)
    assert list(sizes[which]) == [40, 120, 120]


def test_special_tokens_come_from_a_template_post_processor():
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                               "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    assert encoder._special_tokens(post) == ([0], [2])
    assert encoder._special_tokens({"type": "Sequence", "processors": [{"type": "ByteLevel"}, post]}) == ([0], [2])
    assert encoder._special_tokens(None) == ([], [])


def test_the_index_finds_an_item_embedded_in_a_longer_document_with_the_encoder(encoder_dir, tmp_path):
    gpl, mpl = paragraphs("GPL-3"), paragraphs("MPL-2.0")
    item = gpl[5]
    host = textwrap.fill(" ".join(mpl[:3]) + " " + item + " " + " ".join(mpl[3:6]), 70)
    records = [mpl[6], mpl[7], host, mpl[8]]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in records))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "planted", "text": item}) + "\n"
                     + json.dumps({"id": "elsewhere", "text": gpl[40]}) + "\n")
    config = IndexConfig(semantic=True, semantic_model=str(encoder_dir), semantic_threshold=0.99)
    index = build_index([corpus], bench, tmp_path / "one", config=config).index
    hit = index.by_id()["planted"]
    assert hit["semantic_location"][1] == 3 and hit["semantic_score"] > 0.99
    assert " ".join(item.split())[50:110] in " ".join(hit["semantic_text"].split())  # windows start every quarter
    assert index.manifest["semantic"]["model"]["encoder"]["max_tokens"] == 126
    assert index.manifest["parameters"]["semantic_settings"]["window_sizes"].startswith("8*2.0^k")
    two = build_index([corpus], bench, tmp_path / "two", config=IndexConfig(**{**config.__dict__, "workers": 2,
                                                                                "batch_mb": 0.001})).index
    keys = ("status", "semantic_score", "semantic_location", "semantic_text")
    assert [[it[k] for k in keys] for it in two.items] == [[it[k] for k in keys] for it in index.items]


def test_ray_with_an_encoder_gives_the_same_index_as_one_process(encoder_dir, tmp_path):
    if os.environ.get("CI", "").strip().lower() not in ("1", "true", "yes"):
        pytest.importorskip("ray", reason="the optional extra is not installed: pip install 'contaudit[ray]'")
    import ray

    docs = [p for name in ("MPL-2.0", "Artistic") for p in paragraphs(name)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"p{k}", "text": docs[k][:300]}) + "\n" for k in (2, 9, 30)))
    config = dict(semantic=True, semantic_model=str(encoder_dir), semantic_threshold=0.99, batch_mb=0.01)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        build_index([corpus], bench, tmp_path / "ray", config=IndexConfig(**config, ray=True, workers=2))
    finally:
        ray.shutdown()
    build_index([corpus], bench, tmp_path / "here", config=IndexConfig(**config))
    assert (tmp_path / "ray" / "items.jsonl").read_bytes() == (tmp_path / "here" / "items.jsonl").read_bytes()
    found = [json.loads(line) for line in (tmp_path / "here" / "items.jsonl").read_text().splitlines()]
    assert [it["semantic_location"][1] for it in found] == [3, 10, 31]  # each item's own record


def test_ray_tasks_ask_for_a_share_of_the_clusters_gpus_only_with_an_encoder(encoder_dir):
    from types import SimpleNamespace

    from contaudit.index.distributed import _gpu_share

    def cluster(gpus):
        return SimpleNamespace(cluster_resources=lambda: {"CPU": 8.0, **({"GPU": gpus} if gpus else {})})

    with_encoder = SimpleNamespace(semantic=semantic.SemanticIndex.build(["a short item text"], str(encoder_dir),
                                                                         floor=0.5, candidates=4))
    static = SimpleNamespace(semantic=semantic.SemanticIndex.build(["a short item text"], "wordllama", floor=0.5,
                                                                   candidates=4))
    assert _gpu_share(cluster(2.0), with_encoder, 4) == 0.5 and _gpu_share(cluster(2.0), with_encoder, 1) == 1.0
    assert _gpu_share(cluster(0), with_encoder, 4) == 0
    assert _gpu_share(cluster(2.0), static, 4) == 0 and _gpu_share(cluster(2.0), SimpleNamespace(semantic=None), 4) == 0


def test_an_encoder_folder_without_weights_is_a_one_line_error(encoder_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((encoder_dir / name).read_bytes())
    with pytest.raises(InputError, match="holds no weights"):
        semantic.StaticModel.load(str(broken))
    (broken / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="needs a fast tokenizer's tokenizer.json"):
        semantic.StaticModel.load(str(broken))


def test_calibration_runs_with_an_encoder_and_plants_whole_words_from_its_vocabulary(encoder_dir, tmp_path):
    model = semantic.StaticModel.load(str(encoder_dir))
    word = semantic._neighbour(model, "software")
    assert word and not word.startswith("##") and word in model.tokenizer.get_vocab()
    docs = [p for name in ("MPL-2.0", "Artistic", "GPL-2") for p in paragraphs(name)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"gpl-{k}", "text": p}) + "\n"
                             for k, p in enumerate(paragraphs("GPL-3")[:6])))
    index = build_index([corpus], bench, tmp_path / "idx",
                        config=IndexConfig(semantic=True, semantic_model=str(encoder_dir))).index
    calibration = index.manifest["semantic"]["calibration"]
    assert calibration["n_unrelated"] == calibration["corpus"]["n_unrelated"] >= 20
    assert index.manifest["semantic"]["threshold"] == calibration["corpus"]["threshold"] >= calibration["threshold"]
