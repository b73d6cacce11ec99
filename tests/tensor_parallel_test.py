"""Tensor parallelism on CPU over Gloo: N ranks must compute what one does.

* Logits: //sharding:llama_probe run as 2 (and 4) processes joined in one c10d
  group, on a ragged plan that mixes prefill chunks and decodes, against the
  same plan on one rank: fp32 within 1e-4 * max|logit|.
* Generation: the real fms-server with NUM_SHARD=2 against NUM_SHARD=1 over
  gRPC: 64 greedy tokens and seeded sampling give the same tokens.
"""

import json
import subprocess

import numpy as np
import pytest
from google.protobuf import json_format

import grpc
from conftest import BAZEL_BIN, run_probe
from model_parity_test import assert_close, prompts, ragged_plan, split_logits
from server_harness import free_port, start_server, wait_ready, worker_pids

FP32_RTOL = 1e-4  # of max |logit|; measured: <= 4.2e-7 on these models (2 and 4 ranks).
BF16_RTOL = 2e-2  # bf16 sums partial products in another order on each split.


def run_probe_group(request, world, tmp_path):
    """Runs the probe as `world` ranks; returns rank 0's (stdout JSON, logits file)."""
    port = free_port()
    others = []
    for rank in range(1, world):
        rank_request = {**request, "rank": rank, "world_size": world, "master_port": port,
                        "out": str(tmp_path / f"rank{rank}.bin")}
        process = subprocess.Popen([str(BAZEL_BIN / "sharding" / "llama_probe")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        process.stdin.write(json.dumps(rank_request))
        process.stdin.close()
        others.append(process)
    try:
        result = run_probe({**request, "rank": 0, "world_size": world, "master_port": port},
                           tmp_path)
    finally:
        for process in others:  # Every rank must finish, failing or not.
            if process.wait(timeout=120) != 0:
                raise RuntimeError(f"llama_probe rank failed: {process.stderr.read()}")
    return result


def ragged_logits(path, tmp_path, world, dtype="float32", threads=1):
    seqs = prompts(3, [6, 40, 17, 1, 29])
    steps, rows = ragged_plan(seqs, [6, 16, 9, 1, 12], 4, 64, seed=7)
    request = {"model": str(path), "steps": steps, "block_size": 4, "num_blocks": 64,
               "dtype": dtype, "threads": threads}
    if world == 1:
        meta, out = run_probe(request, tmp_path)
    else:
        meta, out = run_probe_group(request, world, tmp_path)
    per_step = split_logits(meta, out)
    return [np.concatenate([per_step[st][r:r + n] for st, r, n in rows[i]])
            for i in range(len(seqs))]


@pytest.mark.parametrize("variant,world", [("mha", 2), ("gqa2", 2), ("gqa1", 2),
                                           ("gqa1", 4), ("gqa2", 4), ("tied", 2)])
def test_split_logits_match_one_rank(test_models, tmp_path, variant, world):
    # gqa1 over 2 or 4 ranks and gqa2 over 4 replicate kv heads; tied splits
    # the shared embedding / lm_head once.
    alone = ragged_logits(test_models / variant, tmp_path, 1)
    split = ragged_logits(test_models / variant, tmp_path, world)
    for i, (a, b) in enumerate(zip(alone, split)):
        assert_close(b, a, FP32_RTOL, f"{variant} over {world} ranks, sequence {i}")


def test_split_bf16_logits_stay_close(test_models, tmp_path):
    alone = ragged_logits(test_models / "bf16", tmp_path, 1, "bfloat16")
    split = ragged_logits(test_models / "bf16", tmp_path, 2, "bfloat16")
    for i, (a, b) in enumerate(zip(alone, split)):
        assert_close(b, a, BF16_RTOL, f"bf16 over 2 ranks, sequence {i}")


def test_a_model_that_cannot_be_split_is_refused(test_models, tmp_path):
    with pytest.raises(RuntimeError, match="num_attention_heads 4 cannot be split over "
                                           "NUM_SHARD=3 workers"):
        ragged_logits(test_models / "mha", tmp_path, 3)


PROMPTS = ["The meaning of life", "Once upon a time", "Stone", "A b c d e f g h"]


def generate_all(pb, test_models, variant, shards):
    process, port = start_server(test_models, f"--num-shard={shards}",
                                 f"--master-port={free_port()}", "--max-new-tokens=64",
                                 model=variant)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = wait_ready(pb, channel, process)
    assert len(worker_pids(process)) == shards
    details = {"generatedTokens": True, "tokenLogprobs": True, "tokenRanks": True}
    greedy = {"method": "GREEDY", "stopping": {"maxNewTokens": 64, "minNewTokens": 64},
              "response": details}
    sampled = {"method": "SAMPLE", "sampling": {"temperature": 0.9, "topK": 40, "seed": 11},
               "stopping": {"maxNewTokens": 32, "minNewTokens": 32}, "response": details}
    results = []
    for params in (greedy, sampled):
        request = pb[0].BatchedGenerationRequest(
            requests=[pb[0].GenerationRequest(text=t) for t in PROMPTS],
            params=json_format.ParseDict(params, pb[0].Parameters()))
        results.append(list(stub.Generate(request, timeout=120).responses))
    process.terminate()
    assert process.wait(timeout=30) == 0
    return results


@pytest.mark.parametrize("variant", ["mha", "gqa2", "gqa1"])
def test_two_workers_generate_what_one_does(pb, test_models, variant):
    one = generate_all(pb, test_models, variant, 1)
    two = generate_all(pb, test_models, variant, 2)
    for mode, ones, twos in zip(("greedy", "seeded sampling"), one, two):
        for prompt, a, b in zip(PROMPTS, ones, twos):
            what = f"{variant} {mode} {prompt!r}"
            assert a.generated_token_count == b.generated_token_count, what
            assert [t.text for t in a.tokens] == [t.text for t in b.tokens], what
            assert a.text == b.text, what
            assert a.seed == b.seed, what
            assert [t.rank for t in a.tokens] == [t.rank for t in b.tokens], what
            np.testing.assert_allclose([t.logprob for t in b.tokens],
                                       [t.logprob for t in a.tokens], atol=1e-4, err_msg=what)
    assert all(len(r.tokens) == 64 for r in one[0])


def test_worker_sockets_follow_shard_uds_path(pb, test_models, tmp_path):
    prefix = tmp_path / "shard"  # TGIS's naming: <SHARD_UDS_PATH>-<rank>.
    process, port = start_server(test_models, "--num-shard=2", f"--master-port={free_port()}",
                                 f"--shard-uds-path={prefix}")
    wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    sockets = sorted(p.name for p in tmp_path.iterdir() if p.is_socket())
    assert sockets == ["shard-0", "shard-1"]
    process.terminate()
    assert process.wait(timeout=30) == 0
