"""SmolLM2-135M-Instruct (a real trained model with a byte-level BPE
tokenizer.json, tools/fetch_model) through the real fms-server over gRPC,
against Hugging Face transformers fp32 on the same directory: greedy tokens,
texts and logprobs, alone and 16 at once; EOS; streaming; special-token
strings in the request text."""

import concurrent.futures
import json
import math

import grpc
import pytest
import torch
from google.protobuf import json_format
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import ROOT
from server_harness import assert_stream_matches_unary, start_server, wait_ready

MAX_NEW = 64
EOS = 2  # <|im_end|>
PROMPTS = json.loads((ROOT / "tests" / "cases" / "real_model_prompts.json").read_text())["prompts"]
TOLERANCE = 1e-3  # On logprobs (issue 10).


def chatml(question):
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


CASES = PROMPTS + [chatml(p) for p in PROMPTS]


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def reference(hf):
    """Per case: the generated ids (EOS included) and their logprobs."""
    tokenizer, model = hf
    results = []
    for text in CASES:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=[EOS],
                                 pad_token_id=EOS, output_logits=True,
                                 return_dict_in_generate=True)
        generated = out.sequences[0, ids.shape[1]:].tolist()
        logprobs = [torch.log_softmax(step[0].double(), -1)[token].item()
                    for step, token in zip(out.logits, generated)]
        results.append({"prompt_ids": ids[0].tolist(), "ids": generated, "logprobs": logprobs})
    return results


@pytest.fixture(scope="module")
def server(pb, smollm2_dir):
    process, port = start_server(smollm2_dir.parent, "--dtype-str=float32",
                                 "--max-batch-size=16", "--max-sequence-length=512",
                                 f"--max-new-tokens={MAX_NEW}", model=smollm2_dir.name,
                                 per_test=False)
    stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    yield stub
    process.terminate()
    assert process.wait(timeout=30) == 0


def generate(pb, stub, text):
    params = {"stopping": {"maxNewTokens": MAX_NEW},
              "response": {"generatedTokens": True, "tokenLogprobs": True}}
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)],
        params=json_format.ParseDict(params, pb[0].Parameters()))
    return stub.Generate(request, timeout=300).responses[0]


@pytest.fixture(scope="module")
def alone(pb, server):
    return [generate(pb, server, text) for text in CASES]


def test_greedy_tokens_texts_and_logprobs_match_transformers_fp32(hf, reference, alone):
    tokenizer, _ = hf
    worst = 0.0
    for text, ref, response in zip(CASES, reference, alone):
        expected_tokens = tokenizer.convert_ids_to_tokens(ref["ids"])
        assert [t.text for t in response.tokens] == expected_tokens, text
        assert response.input_token_count == len(ref["prompt_ids"])
        assert response.generated_token_count == len(ref["ids"])
        content = [i for i in ref["ids"] if i != EOS]
        assert response.text == tokenizer.decode(content, skip_special_tokens=True), text
        ended = ref["ids"][-1] == EOS
        assert response.stop_reason == (2 if ended else 1), text  # EOS_TOKEN / MAX_TOKENS
        for ours, theirs in zip((t.logprob for t in response.tokens), ref["logprobs"]):
            assert math.isfinite(ours)
            worst = max(worst, abs(ours - theirs))
    assert worst <= TOLERANCE
    print(f"\nmax |logprob - transformers fp32| over {len(CASES)} cases: {worst:.2e}")
    # The cases are not degenerate: some end on EOS, some run to the limit.
    assert {r.stop_reason for r in alone} == {1, 2}


def test_sixteen_concurrent_requests_give_what_each_gives_alone(pb, server, alone):
    with concurrent.futures.ThreadPoolExecutor(len(CASES)) as pool:
        together = list(pool.map(lambda text: generate(pb, server, text), CASES))
    for text, a, b in zip(CASES, alone, together):
        assert [t.text for t in b.tokens] == [t.text for t in a.tokens], text
        assert b.text == a.text
        for x, y in zip(a.tokens, b.tokens):
            assert abs(x.logprob - y.logprob) <= TOLERANCE


def test_the_chat_question_is_answered_and_ends_on_im_end(pb, server):
    response = generate(pb, server, chatml("What is the capital of France?"))
    assert "Paris" in response.text
    assert response.stop_reason == 2  # EOS_TOKEN
    assert response.tokens[-1].text == "<|im_end|>"  # Counted and listed, never text.
    assert "<|im_end|>" not in response.text
    assert response.stop_sequence == ""


def test_streamed_deltas_join_to_the_unary_text(pb, server):
    for text in (CASES[1], CASES[9], CASES[15]):
        assert_stream_matches_unary(pb, server, text, stopping={"maxNewTokens": MAX_NEW})


def test_special_token_strings_in_text_are_special_tokens_as_in_tgis(pb, server, hf):
    # TGIS encodes with add_special_tokens=true, so "<|im_start|>" in the text
    # is the special token (id 1), with its byte range, in Tokenize and Generate.
    tokenizer, _ = hf
    text = "<|im_start|>user\nSay hi 🙂<|im_end|>"
    request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=text)],
                                           return_tokens=True, return_offsets=True)
    answer = server.Tokenize(request).responses[0]
    expected = tokenizer(text).input_ids
    assert list(answer.tokens) == tokenizer.convert_ids_to_tokens(expected)
    assert answer.tokens[0] == "<|im_start|>" and answer.tokens[-1] == "<|im_end|>"
    assert (answer.offsets[0].start, answer.offsets[0].end) == (0, 12)
    assert answer.offsets[-1].end == len(text.encode())  # Bytes: the emoji is 4.
    assert generate(pb, server, text).input_token_count == len(expected)
