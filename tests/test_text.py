import unicodedata

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


def test_format_characters_are_removed_inside_words():
    # soft hyphen, zero-width space / non-joiner / joiner, word joiner, byte-order mark
    for cf in "\u00ad\u200b\u200c\u200d\u2060\ufeff":
        assert normalize(f"con{cf}tami{cf}nation{cf} test") == "contamination test", repr(cf)
    assert normalize("\ufeffCafe\u0301 ok") == normalize("Café ok") == "café ok"  # NFKC composes across it
    assert normalize("e\u200b\u0301") == "é"
    assert normalize("葛\U000E0100城") == "葛 城"  # variation selectors are invisible too


def test_scripts_without_spaces_are_split_into_characters():
    assert words("汚染された、ベンチマーク。") == ["汚", "染", "さ", "れ", "た", "ベ", "ン", "チ", "マ", "ー", "ク"]
    assert words("机器学习模型") == ["机", "器", "学", "习", "模", "型"]
    assert words("ＧＰＴ３の評価") == ["gpt3", "の", "評", "価"]  # full-width Latin: NFKC, then a word
    assert words("ｶﾞｷﾞ") == ["ガ", "ギ"]  # half-width kana compose under NFKC
    assert words("ภาษาไทย") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย"]
    assert words("ที่นี่") == ["ที่", "นี่"]  # combining marks stay with their character
    assert words("ພາສາລາວ ភាសាខ្មែរ မြန်မာ")[:2] == ["ພ", "າ"]
    assert words("한국어 문장") == ["한국어", "문장"]  # Hangul is written with spaces: unchanged
    assert words("𠀀𠀁 x") == ["𠀀", "𠀁", "x"]  # CJK extension B (beyond U+FFFF)


def test_combining_marks_belong_to_their_word():
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert words("كَتَبَ الولدُ") == ["كَتَبَ", "الولدُ"]
    assert words("İstanbul") == ["i̇stanbul"]


def test_word_starts_agree_with_words_on_any_text():
    samples = ["Con\u00adtami\u200bnation 汚染です", "ﬁx: ＡＢＣ 机器学习，模型。", "น้ำ ภาษาไทย", "a\u200b中\u0301b",
               "\ufeff\u200d ①② ㍻ x_y", "हिन्दी भाषा", "𠀀\u200b𠀁é", "ｶﾞｷﾞ ok", "\u0301\u3099 ab"]
    for text in samples:
        nfkc = unicodedata.normalize("NFKC", text)
        starts = word_starts(text)
        assert len(starts) == len(words(text)), text
        for i, s in enumerate(starts):  # the text from each offset normalizes to the words from there on
            assert words(nfkc[s:]) == words(text)[i:], (text, i)


def test_split_at_word_counts_characters_of_scripts_without_spaces():
    head, tail = split_at_word("问题：机器学习是什么？", 3)
    assert (head, tail) == ("问题：机器学习", "是什么？")
    assert split_at_word("Con\u00adtami\u200bnation ok", 2) == ("", "Con\u00adtami\u200bnation ok")
