"""Vectorized tokenization and hashing agree with the reference normalization."""


from contaudit.index import wordhash
from contaudit.index.wordhash import ngram_hashes, split_words, word_hashes
from contaudit.io import Document
from contaudit.text import byte_words

TEXTS = ["Hello, World_2!  hello", "", "   ", "Café au LAIT — école ½", "x=f(y)\n\treturn  X", "ＦＵＬＬ width"]


def test_words_match_the_normalization_rule():
    batch = split_words([Document("d", i, t) for i, t in enumerate(TEXTS)])
    got = [batch.word(i) for i in range(len(batch.starts))]
    assert got == [w for t in TEXTS for w in byte_words(t)]
    expected_docs = [d for d, t in enumerate(TEXTS) for _ in byte_words(t)]
    assert batch.doc_of_word.tolist() == expected_docs


def test_equal_words_hash_equal_anywhere():
    batch = split_words([Document("a", 0, "alpha beta alpha"), Document("b", 0, "BETA, Alpha!")])
    h = batch.hashes
    assert h[0] == h[2] == h[4] and h[1] == h[3] and h[0] != h[1]
    assert (word_hashes("alpha beta") == h[:2]).all()


def test_hashes_do_not_depend_on_chunking(monkeypatch):
    text = " ".join(f"word{i % 37}" for i in range(5000))
    reference = word_hashes(text)
    monkeypatch.setattr(wordhash, "_CHUNK", 100)
    chunked = word_hashes(text)
    assert (chunked == reference).all()


def test_ngram_hashes_identify_equal_runs():
    h = word_hashes("a b c a b c d")
    grams = ngram_hashes(h, 3)
    assert len(grams) == 5 and grams[0] == grams[3] and len(set(grams.tolist())) == 4
    assert len(ngram_hashes(h, 8)) == 0
