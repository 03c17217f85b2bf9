from contaudit.text import normalize, split_at_word, word_starts, words


def test_normalization_rule():
    assert normalize("Hello,  World_2!\n\tOK") == "hello world 2 ok"
    assert normalize("ＦＵＬＬ width ﬁ ligature") == "full width fi ligature"  # NFKC
    assert normalize("Ça  VA—bien") == "ça va bien"
    assert words("x_y = f(z)") == ["x", "y", "f", "z"]


def test_word_starts_index_the_original_ascii_text():
    text = "  def f(x):\n    return x"
    starts = word_starts(text)
    assert [text[s:s + len(w)] for s, w in zip(starts, words(text))] == words(text)


def test_split_at_word_is_lossless():
    text = "a b, c; d"
    assert split_at_word(text, 2) == ("a b, ", "c; d")
    assert split_at_word(text, 5) is None
