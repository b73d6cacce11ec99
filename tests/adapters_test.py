"""Adapters through the real fms-server over gRPC (issue 15), against
transformers + peft in fp32: LoRA (ranks 4 and 16, every projection, rsLoRA
on one) and prompt tuning (8 virtual tokens, PEFT's format and TGIS's
decoder.pt), made with the `peft` package on a test model and on SmolLM2.

* alone: greedy tokens identical to transformers + peft, logprobs within 1e-3;
* a batch mixing base, two LoRAs and two prompt-tuning adapters gives each
  request what it gives alone;
* NUM_SHARD=2 gives the same;
* every refusal has vllm-tgis-adapter's message; a leased adapter survives
  eviction pressure (MAX_LORAS=1).
"""

import concurrent.futures
import json
import math
import os
import re

import grpc
import pytest
import sentencepiece
import torch
from google.protobuf import json_format
from peft import LoraConfig, PeftModel, PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from server_harness import start_server, wait_ready

MAX_NEW = 32
TOLERANCE = 1e-3  # On logprobs, as the other transformers comparisons.
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = ["The quick brown fox", "Once upon a time in a land far", "1 2 3 4 5"]
ADAPTERS = ["lora4", "team/lora16", "prompt8", "tgis/prefix8"]


def base_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def make_adapters(model_dir, store):
    """The adapters under `store`, made by peft with random weights (LoRA's
    B is zero by default: init_lora_weights=False makes it a real change)."""
    torch.manual_seed(1234)
    for name, r, alpha, rslora in (("lora4", 4, 8, False), ("team/lora16", 16, 32, True)):
        config = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=PROJECTIONS,
                            init_lora_weights=False, task_type=TaskType.CAUSAL_LM)
        get_peft_model(base_model(model_dir), config).save_pretrained(store / name)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=8)
    prompt = get_peft_model(base_model(model_dir), config)
    prompt.save_pretrained(store / "prompt8")
    # TGIS's own format: the same embeddings, torch.save'd as decoder.pt.
    (store / "tgis" / "prefix8").mkdir(parents=True)
    embeddings = prompt.get_prompt_embedding_to_save("default").detach().clone()
    torch.save(embeddings, store / "tgis" / "prefix8" / "decoder.pt")


def greedy_with_prompt(model, prompt, ids, eos):
    """Prompt tuning by its definition: the virtual embeddings, then the
    prompt's, at positions 0.., one full forward per token. (peft 0.21.2's
    generate() on transformers 5.24 drifts from this after a few tokens: its
    cached steps ignore position ids.)"""
    embed = model.get_input_embeddings()
    seq, generated, logprobs = list(ids), [], []
    for _ in range(MAX_NEW):
        inputs = torch.cat([prompt, embed(torch.tensor(seq))])[None]
        logits = model(inputs_embeds=inputs).logits[0, -1].double()
        token = int(logits.argmax())
        generated.append(token)
        logprobs.append(torch.log_softmax(logits, -1)[token].item())
        seq.append(token)
        if token == eos:
            break
    return generated, logprobs


def reference(model_dir, store, adapter, prompt_ids, eos=2):
    """transformers (+ peft): greedy ids (EOS included) and their logprobs."""
    model = base_model(model_dir)
    prompt = None
    if adapter is not None:
        source = "prompt8" if adapter == "tgis/prefix8" else adapter
        model = PeftModel.from_pretrained(model, store / source).eval()
        if model.peft_config["default"].peft_type == "PROMPT_TUNING":
            prompt = model.get_prompt_embedding_to_save("default")
    results = []
    for ids in prompt_ids:
        with torch.no_grad():
            if prompt is not None:
                results.append(greedy_with_prompt(model.get_base_model(), prompt, ids, eos))
                continue
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=MAX_NEW,
                                 do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, eos_token_id=[eos],
                                 pad_token_id=eos)
        generated = out.sequences[0, -len(out.logits):].tolist()
        logprobs = [torch.log_softmax(step[0].double(), -1)[t].item()
                    for step, t in zip(out.logits, generated)]
        results.append((generated, logprobs))
    return results


def generate(pb, stub, text, adapter=None, prefix=None, max_new=MAX_NEW):
    params = {"stopping": {"maxNewTokens": max_new},
              "response": {"generatedTokens": True, "tokenLogprobs": True}}
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)],
        params=json_format.ParseDict(params, pb[0].Parameters()))
    if adapter is not None:
        request.adapter_id = adapter
    if prefix is not None:
        request.prefix_id = prefix
    return stub.Generate(request, timeout=300).responses[0]


def assert_same(response, expected_pieces, expected_logprobs, what):
    assert [t.text for t in response.tokens] == expected_pieces, what
    worst = max(abs(t.logprob - e) for t, e in zip(response.tokens, expected_logprobs))
    assert math.isfinite(worst) and worst <= TOLERANCE, (what, worst)
    return worst


# ------------------------------------------------------------ the test model
@pytest.fixture(scope="module")
def model_dir(test_models):
    return test_models / "gqa2"  # 4 heads, 2 KV heads: splits two ways.


@pytest.fixture(scope="module")
def store(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("adapters")
    make_adapters(model_dir, root)
    # For the refusals.
    (root / "empty").mkdir()
    (root / "ia3").mkdir()
    (root / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    (root / "wide").mkdir()
    (root / "wide" / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 128, "lora_alpha": 16}))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "adapter_config.json").write_text((root / "lora4" / "adapter_config.json").read_text())
    os.symlink(outside, root / "escape")
    return root


@pytest.fixture(scope="module")
def prompt_ids(model_dir):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    return sp, [[sp.bos_id()] + sp.encode(text) for text in PROMPTS]


@pytest.fixture(scope="module")
def expected(model_dir, store, prompt_ids):
    sp, ids = prompt_ids
    out = {}
    for adapter in [None] + ADAPTERS:
        out[adapter] = [([sp.id_to_piece(t) for t in generated], logprobs)
                        for generated, logprobs in reference(model_dir, store, adapter, ids)]
    return out


def serve(pb, model_dir, store, *flags):
    process, port = start_server(model_dir.parent, "--dtype-str=float32", "--max-batch-size=16",
                                 f"--adapter-cache={store}", *flags, model=model_dir.name,
                                 per_test=False)
    return process, wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)


@pytest.fixture(scope="module")
def server(pb, model_dir, store):
    process, stub = serve(pb, model_dir, store)
    yield stub
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_each_adapter_alone_matches_transformers_and_peft(pb, server, expected, prompt_ids):
    _, ids = prompt_ids
    worst = 0.0
    for adapter in [None] + ADAPTERS:
        for text, prompt, (pieces, logprobs) in zip(PROMPTS, ids, expected[adapter]):
            response = generate(pb, server, text, adapter=adapter)
            worst = max(worst, assert_same(response, pieces, logprobs, (adapter, text)))
            # TGIS: the virtual tokens are not input tokens.
            assert response.input_token_count == len(prompt)
    print(f"\nmax |logprob - transformers + peft fp32|: {worst:.2e}")
    # The adapters change the output: a LoRA that was a no-op would pass the above.
    for adapter in ADAPTERS:
        assert expected[adapter] != expected[None], adapter


def test_prefix_id_is_the_same_as_adapter_id(pb, server, expected):
    response = generate(pb, server, PROMPTS[0], prefix="prompt8")
    assert_same(response, *expected["prompt8"][0], "prefix_id")


def test_a_mixed_batch_gives_each_request_what_it_gives_alone(pb, server, expected):
    jobs = [(adapter, i) for adapter in [None] + ADAPTERS for i in range(len(PROMPTS))]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: generate(pb, server, PROMPTS[job[1]],
                                                       adapter=job[0]), jobs))
    for (adapter, i), response in zip(jobs, responses):
        assert_same(response, *expected[adapter][i], ("mixed", adapter, i))


def test_tokenize_validates_adapter_id(pb, server):
    request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=PROMPTS[1])])
    plain = server.Tokenize(request).responses[0].token_count
    request.adapter_id = "lora4"
    assert server.Tokenize(request).responses[0].token_count == plain
    request.adapter_id = "../lora4"
    with pytest.raises(grpc.RpcError) as error:
        server.Tokenize(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


REFUSALS = [
    ("../x", "Invalid adapter id '../x', must contain only alphanumeric, _ and - and /"),
    ("/etc", "Invalid adapter id '/etc', must contain only alphanumeric, _ and - and /"),
    ("escape", "Invalid adapter id 'escape', must contain only alphanumeric, _ and - and /"),
    ("missing", "can't retrieve adapter with id 'missing': directory does not exist"),
    ("empty", "can't retrieve adapter with id 'empty': invalid adapter: no adapter_config.json found"),
    ("ia3", "adapter type IA3 is not currently supported"),
    ("wide", "can't retrieve adapter with id 'wide': LoRA rank 128 is greater than MAX_LORA_RANK 64"),
]


@pytest.mark.parametrize("adapter,message", REFUSALS)
def test_refusals_have_the_adapters_messages(pb, server, adapter, message):
    with pytest.raises(grpc.RpcError) as error:
        generate(pb, server, PROMPTS[0], adapter=adapter)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == message
    generate(pb, server, PROMPTS[0])  # The server serves on.


def test_an_adapter_for_another_model_is_refused_naming_the_tensor(pb, server, store,
                                                                   test_models):
    # gqa1's projections have other shapes than gqa2's.
    name = "other-model"
    if not (store / name).exists():
        config = LoraConfig(r=4, target_modules=PROJECTIONS, init_lora_weights=False)
        get_peft_model(base_model(test_models / "mha"), config).save_pretrained(store / name)
    with pytest.raises(grpc.RpcError) as error:
        generate(pb, server, PROMPTS[0], adapter=name)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # gqa2's k_proj has 2 KV heads of 16, mha's 4: B is [64, 4] where [32, 4] fits.
    assert re.fullmatch(
        f"can't retrieve adapter with id '{name}': adapter_model.safetensors: tensor "
        r"'base_model\.model\.model\.layers\.\d\.self_attn\.[kv]_proj\.lora_B\.weight' "
        r"has shape \[64, 4\], expected \[32, 4\]", error.value.details()), error.value.details()


def test_no_store_configured(pb, stub):
    with pytest.raises(grpc.RpcError) as error:
        generate(pb, stub, "hello", adapter="lora4")
    assert error.value.details() == "adapter_id supplied but no adapter store was configured"


def test_a_leased_adapter_survives_eviction_pressure(pb, model_dir, store, expected):
    # MAX_LORAS=1: every new adapter evicts the last, except one in use.
    process, stub = serve(pb, model_dir, store, "--max-loras=1")
    try:
        long_request = pb[0].SingleGenerationRequest(
            request=pb[0].GenerationRequest(text=PROMPTS[0]), adapter_id="lora4",
            params=json_format.ParseDict(
                {"stopping": {"maxNewTokens": MAX_NEW},
                 "response": {"generatedTokens": True, "tokenLogprobs": True}},
                pb[0].Parameters()))
        stream = stub.GenerateStream(long_request, timeout=300)
        first = [next(stream), next(stream)]  # lora4 is running now.
        for adapter in ("team/lora16", "prompt8", "tgis/prefix8"):
            assert_same(generate(pb, stub, PROMPTS[1], adapter=adapter),
                        *expected[adapter][1], ("pressure", adapter))
        tokens = [t for message in first + list(stream) for t in message.tokens]
        pieces, logprobs = expected["lora4"][0]
        assert [t.text for t in tokens] == pieces
        assert max(abs(t.logprob - e) for t, e in zip(tokens, logprobs)) <= TOLERANCE
        # Evicted since, loaded again on demand, still right.
        assert_same(generate(pb, stub, PROMPTS[2], adapter="lora4"), *expected["lora4"][2],
                    "reloaded")
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_more_virtual_tokens_than_max_prompt_prefix_length_are_refused(pb, model_dir, store):
    process, stub = serve(pb, model_dir, store, "--max-prompt-prefix-length=4")
    try:
        with pytest.raises(grpc.RpcError) as error:
            generate(pb, stub, PROMPTS[0], adapter="prompt8")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == ("can't retrieve adapter with id 'prompt8': 8 virtual "
                                         "tokens are more than MAX_PROMPT_PREFIX_LENGTH 4")
        generate(pb, stub, PROMPTS[0], adapter="lora4")  # LoRA has none.
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_virtual_tokens_count_toward_the_sequence_length(pb, server, prompt_ids):
    # gqa2: max_position_embeddings 512. TGIS's rule with the prefix length.
    _, ids = prompt_ids
    text = " ".join(["fox"] * 600)
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)], adapter_id="prompt8",
        params=json_format.ParseDict({"truncateInputTokens": 504}, pb[0].Parameters()))
    with pytest.raises(grpc.RpcError) as error:
        server.Generate(request, timeout=60)
    assert error.value.details() == "input tokens (504) plus prefix length (8) must be < 512"
    request.params.truncate_input_tokens = 503
    response = server.Generate(request, timeout=120).responses[0]
    assert response.input_token_count == 503
    assert response.generated_token_count == 1 and response.stop_reason == 6  # TOKEN_LIMIT


def test_two_shards_give_the_same_outputs(pb, model_dir, store, expected):
    process, stub = serve(pb, model_dir, store, "--num-shard=2")
    try:
        for adapter in [None] + ADAPTERS:
            for i, text in enumerate(PROMPTS):
                assert_same(generate(pb, stub, text, adapter=adapter), *expected[adapter][i],
                            ("NUM_SHARD=2", adapter, i))
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


# ------------------------------------------------------ the real default model
def test_smollm2_lora_and_prompt_tuning_match_transformers_and_peft(pb, smollm2_dir,
                                                                    tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2-adapters")
    torch.manual_seed(99)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS,
                        init_lora_weights=False, task_type=TaskType.CAUSAL_LM)
    lora = get_peft_model(base_model(smollm2_dir), config)
    for name, param in lora.named_parameters():  # Small enough to keep the text sensible.
        if "lora_B" in name:
            param.data.mul_(0.05)
    lora.save_pretrained(root / "lora16")
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=8)
    get_peft_model(base_model(smollm2_dir), config).save_pretrained(root / "prompt8")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    text = "The capital of France is"
    ids = tokenizer(text).input_ids
    process, stub = serve(pb, smollm2_dir, root)
    try:
        for adapter in ("lora16", "prompt8"):
            [(generated, logprobs)] = reference(smollm2_dir, root, adapter, [ids])
            response = generate(pb, stub, text, adapter=adapter)
            assert_same(response, tokenizer.convert_ids_to_tokens(generated), logprobs,
                        ("smollm2", adapter))
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
