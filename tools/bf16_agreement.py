#!/usr/bin/env python3
"""bf16 serving against transformers bf16 (and fp32) on SmolLM2-135M-Instruct:
for each prompt of tests/cases/real_model_prompts.json, raw and ChatML, how many
leading greedy tokens (of 64) fms-server in bf16 shares with transformers, and
the largest logprob difference over the shared tokens. Not a test: bf16
rounding differs by kernel, so the answer is a figure for docs/benchmarks.md.

  bf16_agreement.py [--model DIR] [--max-new 64]
"""

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import torch
from grpc_tools import protoc
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
EOS = 2


def stubs():
    out = tempfile.mkdtemp()
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(ROOT / "proto/generation.proto")]) == 0
    sys.path.insert(0, out)
    import generation_pb2
    import generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


def cases():
    prompts = json.loads((ROOT / "tests/cases/real_model_prompts.json").read_text())["prompts"]
    return prompts + [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts]


def reference(model_dir, dtype, texts, max_new):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    results = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new, do_sample=False, eos_token_id=[EOS],
                                 pad_token_id=EOS, output_logits=True, return_dict_in_generate=True)
        generated = out.sequences[0, ids.shape[1]:].tolist()
        logprobs = [torch.log_softmax(s[0].double(), -1)[t].item()
                    for s, t in zip(out.logits, generated)]
        results.append((tokenizer.convert_ids_to_tokens(generated), logprobs))
    return results


def serve(model_dir, texts, max_new):
    pb, rpc = stubs()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(ROOT / "bazel-bin/server/fms-server"), f"--model-name={model_dir}",
                               f"--grpc-port={port}", "--port=0", "--dtype-str=bfloat16"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stub = rpc.GenerationServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        for _ in range(600):
            try:
                stub.ModelInfo(pb.ModelInfoRequest(), timeout=1)
                break
            except grpc.RpcError:
                time.sleep(0.2)
        params = pb.Parameters(stopping=pb.StoppingCriteria(max_new_tokens=max_new),
                               response=pb.ResponseOptions(generated_tokens=True,
                                                           token_logprobs=True))
        results = []
        for text in texts:
            r = stub.Generate(pb.BatchedGenerationRequest(
                requests=[pb.GenerationRequest(text=text)], params=params)).responses[0]
            results.append(([t.text for t in r.tokens], [t.logprob for t in r.tokens]))
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def compare(ours, theirs):
    shared, worst = [], 0.0
    for (tokens, logprobs), (ref_tokens, ref_logprobs) in zip(ours, theirs):
        n = 0
        while n < min(len(tokens), len(ref_tokens)) and tokens[n] == ref_tokens[n]:
            worst = max(worst, abs(logprobs[n] - ref_logprobs[n]))
            n += 1
        whole = n == len(tokens) == len(ref_tokens)
        shared.append((n, len(ref_tokens), whole))
    return shared, worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--max-new", type=int, default=64)
    args = parser.parse_args()
    model = args.model or subprocess.run([str(ROOT / "tools/fetch_model")], check=True,
                                         stdout=subprocess.PIPE, text=True).stdout.split()[-1]
    texts = cases()
    ours = serve(model, texts, args.max_new)
    hf_bf16 = reference(model, torch.bfloat16, texts, args.max_new)
    hf_fp32 = reference(model, torch.float32, texts, args.max_new)
    for name, a, b in (("fms-server bf16 vs transformers bf16", ours, hf_bf16),
                       ("fms-server bf16 vs transformers fp32", ours, hf_fp32),
                       ("transformers bf16 vs transformers fp32 (for scale)", hf_bf16, hf_fp32)):
        shared, worst = compare(a, b)
        whole = sum(s[2] for s in shared)
        leading = ", ".join(f"{s[0]}/{s[1]}" for s in shared)
        print(f"{name}: identical sequences {whole}/{len(texts)}; "
              f"leading tokens shared/reference length per case [{leading}] "
              f"(min {min(s[0] for s in shared)}, mean {sum(s[0] for s in shared) / len(shared):.1f}); "
              f"max |logprob diff| over shared tokens {worst:.3g}")

if __name__ == "__main__":
    main()
