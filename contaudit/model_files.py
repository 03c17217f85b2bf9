"""The files of a model directory that define its tokenizer, named once (models.py fingerprints
and loads them; the analysis compares tokenizers by them). Kept apart from models.py, which
imports torch, so the analysis can read these names without it."""

# How text becomes tokens: two models whose hashes of these files agree tokenize alike.
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "tiktoken.model", "added_tokens.json")

# Every tokenizer file: the vocabulary and the settings around it (special tokens, the
# tokenizer's config); all of them are part of a model's fingerprint.
TOKENIZER_FILES = VOCABULARY_FILES + ("tokenizer_config.json", "special_tokens_map.json")
