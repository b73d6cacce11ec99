"""fms-server on a model directory with a tokenizer.json (the tiny "bytebpe"
test model: byte-level BPE, ChatML specials, no BOS): Tokenize, streaming of
random byte-level output, and the start-up refusals for a broken tokenizer."""

import json
import shutil

import grpc
import pytest

from server_harness import assert_stream_matches_unary, start_server, wait_ready


@pytest.fixture(scope="module")
def bytebpe(pb, test_models):
    process, port = start_server(test_models, "--max-new-tokens=200", model="bytebpe",
                                 per_test=False)
    yield wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_tokenize_reports_byte_offsets_and_no_bos(pb, bytebpe):
    text = "caf\u00e9 \U0001F642 river"
    request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=text)],
                                           return_tokens=True, return_offsets=True)
    answer = bytebpe.Tokenize(request).responses[0]
    assert answer.token_count == len(answer.tokens) == len(answer.offsets)
    assert answer.tokens[0] != "<|im_start|>"  # Nothing added in front.
    assert answer.offsets[-1].end == len(text.encode())  # 16 bytes, 12 characters.
    # Left truncation keeps the last tokens and their offsets.
    request.truncate_input_tokens = 2
    last2 = bytebpe.Tokenize(request).responses[0]
    assert list(last2.tokens) == list(answer.tokens[-2:])
    assert last2.offsets[-1].end == answer.offsets[-1].end


def test_random_byte_level_output_streams_whole_characters(pb, bytebpe):
    # A random model emits arbitrary byte tokens: every delta must still be
    # valid UTF-8 (gRPC refuses to send anything else) and join to the text.
    for seed in range(1, 7):
        params = {"method": "SAMPLE", "sampling": {"seed": seed, "temperature": 1.5},
                  "stopping": {"maxNewTokens": 120, "minNewTokens": 120}}
        unary, messages = assert_stream_matches_unary(pb, bytebpe, "The king \U0001F642", **params)
        assert unary.generated_token_count == 120
        assert len(messages) > 2


def copy_model(test_models, tmp_path, name="bytebpe"):
    out = tmp_path / name
    shutil.copytree(test_models / name, out)
    return out


def start_failure(model_dir):
    process, _ = start_server(model_dir.parent, model=model_dir.name)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_an_unparsable_tokenizer_json_stops_start_up_naming_the_file(test_models, tmp_path):
    model = copy_model(test_models, tmp_path)
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", ')
    line = start_failure(model)
    assert line.startswith(f"fms-server: cannot load {model / 'tokenizer.json'}: "), line
    assert "EOF while parsing" in line  # The library's own words.


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(test_models, tmp_path):
    model = copy_model(test_models, tmp_path)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    for i in range(4):  # Ids 512..515 on a 512-row embedding.
        tokenizer["added_tokens"].append({
            "id": 512 + i, "content": f"<extra_{i}>", "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True})
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    line = start_failure(model)
    assert line == (f"fms-server: {model}: the tokenizer has 516 token ids but the model's "
                    "vocabulary (config.json vocab_size) is 512"), line


def test_a_model_without_tokenizer_is_refused_naming_the_directory(test_models, tmp_path):
    model = copy_model(test_models, tmp_path)
    (model / "tokenizer.json").unlink()
    line = start_failure(model)
    assert line == (f"fms-server: {model}: no tokenizer.json or tokenizer.model in the model "
                    "directory"), line
