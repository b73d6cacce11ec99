"""The text corpus of the tokenizer parity tests: Debian's fortunes (package
`fortunes`) plus generated edge cases that tokenizers get wrong most often."""

import pathlib
import random

FORTUNES = pathlib.Path("/usr/share/games/fortunes")

# Strings that are special tokens in one of the tested tokenizers.
SPECIAL_STRINGS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
                   "<|begin_of_text|>", "<|eot_id|>"]


def fortunes(limit):
    """Up to `limit` fortunes, whole (several lines each), in file order."""
    texts = []
    for path in sorted(FORTUNES.glob("*")):
        if path.suffix in (".dat", ".u8") or not path.is_file():
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        texts += [t.strip("\n") for t in raw.split("\n%\n") if t.strip()]
        if len(texts) >= limit:
            break
    return texts[:limit]


def edge_cases(seed=0, count=1200):
    """Hand-picked hard strings, then random mixes of their ingredients."""
    fixed = [
        "", " ", "  ", "\t", "\n", "\r\n", " \r\n\r\n ", "a  2", "a   22", "x\ty\t\tz",
        "日本語のテキストです。", "中文字符和English混合", "한국어 문장", "ไทย ภาษา",
        "🙂", "👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈", "❤️‍🔥 fire", "e\u0301 combining", "n\u0303o",
        "Z\u0351\u0352a\u0353l\u0354g\u0355o", "שלום עולם", "مرحبا بالعالم", "abc \u202e reversed",
        "\u0000nul", "\u0007bell\u001b[0m", "\u200bzero\u200cwidth\u200d", "\ufeffbom",
        "1234567890123456789012345678901234567890", "3.14159 2,718 1e-10 0x1F",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "a<|im_end|>b",
        "<s>[INST] hi [/INST]", "</s></s>", "<|begin_of_text|>x", "<unk> <0x0A>",
        "   leading spaces", "trailing spaces   ", "CamelCaseWordsHere", "don't won't I'll",
        "\u00a0non-breaking\u00a0space", "tab\u3000ideographic space", "∑∫√∞≠", "Ｆｕｌｌｗｉｄｔｈ",
    ]
    ingredients = [
        "the", " quick", " brown", " fox", "日本", "語", "🙂", "👍🏽", "\u200d", "\u0301", "\t",
        "\n", "\r\n", "  ", "   ", "1", "23", "456789", "é", "ß", "Ω", "ا", "ש", "\u0000", "\u001f",
        "’", "'s", "''", "...", "—", "ﬁ", "İ",
    ] + SPECIAL_STRINGS
    rng = random.Random(seed)
    mixed = ["".join(rng.choice(ingredients) for _ in range(rng.randint(1, 12)))
             for _ in range(count - len(fixed))]
    return fixed + mixed


def corpus(size=5200):
    cases = edge_cases()
    return cases + fortunes(size - len(cases))
