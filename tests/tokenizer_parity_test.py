"""fms-server's tokenizers against Python's Hugging Face `tokenizers` on the
same tokenizer.json, over 5,200 strings (Debian fortunes plus edge cases, see
tokenizer_corpus.py), for three tokenizers:
  * SmolLM2's (byte-level BPE with the Digits step; tools/fetch_model);
  * a LLaMa-3-style one (tiktoken-style split regex, BOS by post-processor),
    trained here with the `tokenizers` trainer on the fortunes;
  * a LLaMa-2-style one (Metaspace, byte fallback) converted with
    transformers from ../shared/data/llama2-tokenizer.model.
Ids, token strings, UTF-8 byte offsets and both decodings must be identical.

Python's binding reports character offsets (the Rust crate, and so TGIS and
this server, byte offsets), so the reference byte offsets are computed here
from the text. A token that is only part of one character (byte-level BPE
splits an unseen emoji into bytes) has no character range of its own: Python
gives it the range of the whole character, and the server's bytes must lie
inside it.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from conftest import BAZEL_BIN, ROOT
from tokenizer_corpus import corpus, fortunes

sys.path.insert(0, str(ROOT / "tools"))
import hf_tokenizer_fixtures as fixtures  # noqa: E402

PROBE = BAZEL_BIN / "tools" / "tokenizer_probe"


@pytest.fixture(scope="module")
def texts():
    texts = corpus()
    assert len(texts) >= 5000
    return texts


@pytest.fixture(scope="module")
def tokenizer_dir(request, tmp_path_factory, smollm2_dir):
    name = request.param
    if name == "smollm2":
        return smollm2_dir
    out = tmp_path_factory.mktemp(name)
    if name == "llama3":
        tokenizer = fixtures.byte_level_bpe(
            fortunes(30000), 8192, fixtures.LLAMA3_SPECIALS,
            split_pattern=fixtures.LLAMA3_PATTERN, bos="<|begin_of_text|>")
        fixtures.write_tokenizer(tokenizer, out, bos="<|begin_of_text|>", eos="<|eot_id|>")
        return out
    shared = pathlib.Path(os.environ.get("FMS_SHARED_DIR", ROOT.parent / "shared"))
    model = shared / "data" / "llama2-tokenizer.model"
    if not model.exists():
        pytest.skip(f"LLaMa 2 tokenizer absent at {model} (set FMS_SHARED_DIR to shared/)")
    fixtures.write_tokenizer(fixtures.llama2_from_sentencepiece(str(model)), out,
                             bos="<s>", eos="</s>")
    return out


def probe(model_dir, texts):
    lines = "".join(json.dumps(t) + "\n" for t in texts)
    result = subprocess.run([str(PROBE), str(model_dir)], input=lines, capture_output=True,
                            text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def byte_offsets(text, char_offsets):
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return [(starts[b], starts[e]) for b, e in char_offsets]


def differences(text, ours, reference):
    """What differs between our answer and Python's for one text."""
    encoding = reference.encode(text)
    found = []
    if ours["ids"] != encoding.ids:
        found.append(f"ids {ours['ids'][:12]} != {encoding.ids[:12]}")
    if ours["tokens"] != encoding.tokens:
        found.append(f"tokens {ours['tokens'][:8]} != {encoding.tokens[:8]}")
    expected = byte_offsets(text, encoding.offsets)
    for i, ((b, e), (rb, re)) in enumerate(zip(zip(ours["begins"], ours["ends"]), expected)):
        on_boundaries = all(x <= len(text.encode()) and (x == 0 or x == len(text.encode())
                            or (text.encode()[x] & 0xC0) != 0x80) for x in (b, e))
        if (b, e) != (rb, re) and (on_boundaries or not rb <= b <= e <= re):
            found.append(f"offset {i}: ({b}, {e}) vs Python's bytes ({rb}, {re})")
            break
    for skip, key in ((False, "decoded"), (True, "decoded_skip")):
        if ours[key] != reference.decode(encoding.ids, skip_special_tokens=skip):
            found.append(f"{key} {ours[key]!r:.60}")
    return found


@pytest.mark.parametrize("tokenizer_dir", ["smollm2", "llama3", "llama2"], indirect=True)
def test_the_server_tokenizer_matches_python_tokenizers(tokenizer_dir, texts):
    reference = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    ours = probe(tokenizer_dir, texts)
    assert len(ours) == len(texts)
    failures = []
    for text, answer in zip(texts, ours):
        found = differences(text, answer, reference)
        if found:
            failures.append(f"{text!r:.50}: {'; '.join(found)}")
    assert not failures, f"{len(failures)} of {len(texts)} differ:\n" + "\n".join(failures[:10])
    # The corpus is not trivial for this tokenizer.
    assert sum(len(a["ids"]) for a in ours) > 10 * len(texts)
