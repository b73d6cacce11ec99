"""The bundled demo model (tools/demo-model, trained by tools/train_demo_model.py)
continues prompts with recognisable English words at temperature 0, through
fms-serve's C++ model."""

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from generate import generate  # noqa: E402

DEMO = ROOT / "tools" / "demo-model"
WORDS = pathlib.Path("/usr/share/dict/words")  # Debian's wamerican (tools/bootstrap).
PROMPTS = ["Once upon a time", "The meaning of life is", "A computer", "Never trust"]


def test_demo_model_writes_english_words():
    if not WORDS.exists():
        pytest.fail(f"{WORDS} missing: tools/bootstrap installs wamerican")
    dictionary = {w.strip().lower() for w in WORDS.read_text(errors="replace").split()}
    words = []
    for prompt in PROMPTS:
        tokens, text = generate(DEMO, prompt, max_new_tokens=30)
        assert len(tokens) > 0, prompt
        words += re.findall(r"[A-Za-z]+", text)
    known = [w for w in words if w.lower() in dictionary]
    assert len(words) >= 20, words
    assert len(known) / len(words) >= 0.8, f"only {len(known)} of {len(words)}: {words}"


def test_demo_model_is_deterministic_at_temperature_zero():
    assert generate(DEMO, PROMPTS[0])[0] == generate(DEMO, PROMPTS[0])[0]
