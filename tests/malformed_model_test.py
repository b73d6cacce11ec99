"""Damaged model directories stop fms-server at start-up with one line naming the
file and the cause, and no crash: a truncated safetensors file, a header length
beyond the file, overlapping tensor offsets, config sizes of zero or below, and a
tokenizer without a vocabulary."""

import json
import os
import shutil
import struct
import subprocess

import pytest

from conftest import BAZEL_BIN, ROOT
from server_harness import free_port


def header_and_data(path):
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def truncate(model):
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def header_beyond_file(model):
    weights = model / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", len(raw) * 10) + raw[8:])


def overlapping_offsets(model):
    header, data = header_and_data(model / "model.safetensors")
    names = sorted((k for k in header if k != "__metadata__"),
                   key=lambda k: header[k]["data_offsets"][0])
    first, second = names[:2]
    size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
    start = header[first]["data_offsets"][0] + 4  # Inside the first tensor.
    header[second]["data_offsets"] = [start, start + size]
    write(model / "model.safetensors", header, data)


def config_field(field, value):
    def damage(model):
        config = json.loads((model / "config.json").read_text())
        config[field] = value
        (model / "config.json").write_text(json.dumps(config))
    return damage


def empty_vocabulary(model):
    (model / "tokenizer.model").unlink(missing_ok=True)
    bpe = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
           "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": {},
           "merges": []}
    (model / "tokenizer.json").write_text(json.dumps(
        {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
         "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
         "model": bpe}))


CASES = {
    "truncated safetensors": (truncate, "model.safetensors", "outside the data buffer"),
    "header beyond the file": (header_beyond_file, "model.safetensors",
                               "header length exceeds the file"),
    "overlapping offsets": (overlapping_offsets, "model.safetensors", ") overlap"),
    "zero layers": (config_field("num_hidden_layers", 0), "config.json",
                    "'num_hidden_layers': must be a positive integer"),
    "negative hidden size": (config_field("hidden_size", -64), "config.json",
                             "'hidden_size': must be a positive integer"),
    "empty vocabulary": (empty_vocabulary, "tokenizer.json", "empty vocabulary"),
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_model_stops_start_up_with_one_line(test_models, tmp_path, case):
    damage, file, cause = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(test_models / "gqa2", model)
    os.chmod(model / "model.safetensors", 0o644)
    damage(model)
    done = subprocess.run(
        [str(BAZEL_BIN / "server" / "fms-server"), f"--model-name={model}",
         f"--grpc-port={free_port()}", f"--port={free_port()}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr)  # An error, not a signal.
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(model / file) in lines[0] and cause in lines[0], lines[0]


def test_nan_logits_end_that_request_with_an_error_and_spare_the_others(pb, test_models,
                                                                       tmp_path):
    """A NaN row in the embedding table poisons exactly the prompts that use that
    token: loading warns naming the tensor, those requests end with an error
    naming the cause instead of streaming garbage, and a request in the same
    batch without it succeeds."""
    import threading

    import grpc
    import sentencepiece
    import torch
    from google.protobuf import json_format
    from safetensors.torch import load_file, save_file

    from server_harness import start_server, wait_ready
    model = tmp_path / "model"
    shutil.copytree(test_models / "gqa2", model)
    tokens = sentencepiece.SentencePieceProcessor(model_file=str(model / "tokenizer.model"))
    clean = "The water is calm"
    poisoned = [t for t in tokens.encode("A zebra") if t not in tokens.encode(clean)][0]
    weights = load_file(model / "model.safetensors")
    weights["model.embed_tokens.weight"][poisoned] = float("nan")
    save_file(weights, model / "model.safetensors")
    process, port = start_server(test_models, model=str(model))
    stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    params = json_format.ParseDict({"stopping": {"maxNewTokens": 20, "minNewTokens": 20}},
                                   pb[0].Parameters())
    outcome = {}

    def ask(name, text):
        try:
            outcome[name] = stub.Generate(pb[0].BatchedGenerationRequest(
                requests=[pb[0].GenerationRequest(text=text)], params=params), timeout=60)
        except grpc.RpcError as error:
            outcome[name] = error
    askers = [threading.Thread(target=ask, args=("poisoned", "A zebra")),
              threading.Thread(target=ask, args=("clean", clean))]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert isinstance(outcome["poisoned"], grpc.RpcError), outcome["poisoned"]
    assert outcome["poisoned"].code() == grpc.StatusCode.UNKNOWN
    assert "NaN or infinite logits" in outcome["poisoned"].details()
    assert not isinstance(outcome["clean"], grpc.RpcError), outcome["clean"]
    assert outcome["clean"].responses[0].generated_token_count == 20
    process.terminate()
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    # Loading served the model but said which tensor is damaged.
    warning = [line for line in out.splitlines() if "NaN or infinite values" in line]
    assert len(warning) == 1 and "model.embed_tokens.weight" in warning[0], out
