"""Writes the request data of the ghz configurations under deploy/ghz/data/.

Realistic TGIS traffic, made once and committed (run again only to change it):
  * prompts of 16 to 1,500 tokens of the default model's tokenizer (log-uniform), built
    from an instruction and a passage of Debian's fortunes, half of them in SmolLM2's
    ChatML chat format;
  * 16 to 256 new tokens (log-uniform), half greedy, half sampled with mixed
    temperature / top_k / top_p / typical_p / seed, some repetition penalties;
  * stop sequences on about a third, some with include_stop_sequence, some
    min_new_tokens, response options (token details, logprobs, ranks, top-n) and
    truncate_input_tokens on a few.
bench_fixed.json is the serving benchmark's fixed shape: one 100-token prompt, exactly 64
greedy tokens (min_new_tokens = max_new_tokens).
Each file is a JSON array of request messages in the protobuf JSON mapping; ghz sends
them round-robin, and tools/loadgen reads the same files.

    python tools/make_ghz_data.py --tokenizer MODEL_DIR/tokenizer.json [--out deploy/ghz/data]
"""

import argparse
import json
import math
import pathlib
import random
import sys

from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import tokenizer_corpus  # noqa: E402  (Debian's fortunes, as the parity tests read them)

INSTRUCTIONS = [
    "Summarize the following text in two sentences.",
    "What is the main point of this passage?",
    "Continue the text below in the same style.",
    "Rewrite the following as a short, formal note.",
    "List three questions a reader might ask about this text.",
    "Explain the joke or idea in the passage to a child.",
    "Translate the first sentence of this passage into French.",
    "Give this passage a title.",
]
STOPS = [["\n\n"], ["."], ["\nUser:", "###"], ["<|im_end|>"], ["!", "?"]]
MIN_PROMPT, MAX_PROMPT = 16, 1500
MIN_NEW, MAX_NEW = 16, 256


def log_uniform(rng, lo, hi):
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


class PromptMaker:
    """Prompts of an exact token count, cut at a token boundary of the real tokenizer."""

    def __init__(self, tokenizer, rng):
        self.tok = tokenizer
        self.rng = rng
        self.passages = [p for p in tokenizer_corpus.fortunes(20000) if "{{" not in p]

    def __call__(self, tokens):
        chat = self.rng.random() < 0.5
        head = self.rng.choice(INSTRUCTIONS) + "\n\n"
        if chat:
            head = "<|im_start|>user\n" + head
        tail = "<|im_end|>\n<|im_start|>assistant\n" if chat else "\n\nAnswer:"
        budget = tokens - len(self.tok.encode(head + tail).ids)
        body = ""
        start = self.rng.randrange(len(self.passages))
        i = start
        while len(self.tok.encode(body).ids) < max(budget, 1):
            body += self.passages[i % len(self.passages)] + "\n\n"
            i += 1
        enc = self.tok.encode(body)
        body = body[:enc.offsets[max(budget, 1) - 1][1]] if budget > 0 else ""
        return head + body + tail


def sampling_params(rng, max_new):
    params = {"stopping": {"max_new_tokens": max_new}}
    if rng.random() < 0.5:
        sampling = {"temperature": round(rng.uniform(0.3, 1.2), 2)}
        if rng.random() < 0.6:
            sampling["top_k"] = rng.choice([5, 20, 50])
        if rng.random() < 0.5:
            sampling["top_p"] = rng.choice([0.8, 0.9, 0.95])
        if rng.random() < 0.15:
            sampling["typical_p"] = 0.9
        if rng.random() < 0.5:
            sampling["seed"] = rng.randrange(1, 2**31)
        params.update(method="SAMPLE", sampling=sampling)
    if rng.random() < 0.35:
        params["stopping"]["stop_sequences"] = rng.choice(STOPS)
        if rng.random() < 0.5:
            params["stopping"]["include_stop_sequence"] = rng.random() < 0.5
    if rng.random() < 0.2:
        params["stopping"]["min_new_tokens"] = rng.randrange(1, max_new + 1)
    if rng.random() < 0.2:
        params["decoding"] = {"repetition_penalty": round(rng.uniform(1.05, 1.3), 2)}
    roll = rng.random()
    if roll < 0.25:
        params["response"] = {"generated_tokens": True, "token_logprobs": True}
    elif roll < 0.35:
        params["response"] = {"generated_tokens": True, "token_ranks": True, "top_n_tokens": 3}
    elif roll < 0.45:
        params["response"] = {"input_text": True, "input_tokens": True}
    return params


def generation_requests(make_prompt, rng, count, batched):
    out = []
    for _ in range(count):
        params = sampling_params(rng, log_uniform(rng, MIN_NEW, MAX_NEW))
        texts = [make_prompt(log_uniform(rng, MIN_PROMPT, MAX_PROMPT))
                 for _ in range(rng.choice([1, 1, 1, 2, 4]) if batched else 1)]
        if rng.random() < 0.1:
            params["truncate_input_tokens"] = rng.choice([64, 256, 512])
        if batched:
            out.append({"model_id": "default", "requests": [{"text": t} for t in texts],
                        "params": params})
        else:
            out.append({"model_id": "default", "request": {"text": texts[0]}, "params": params})
    return out


def tokenize_requests(make_prompt, rng, count):
    out = []
    for _ in range(count):
        texts = [make_prompt(log_uniform(rng, MIN_PROMPT, MAX_PROMPT))
                 for _ in range(rng.choice([1, 1, 2, 4]))]
        req = {"model_id": "default", "requests": [{"text": t} for t in texts],
               "return_tokens": rng.random() < 0.5, "return_offsets": rng.random() < 0.3}
        if rng.random() < 0.2:
            req["truncate_input_tokens"] = rng.choice([16, 128, 1024])
        out.append(req)
    return out


def fixed_request(tokenizer, prompt_tokens=100, new_tokens=64):
    make_prompt = PromptMaker(tokenizer, random.Random(1))
    return [{"model_id": "default", "request": {"text": make_prompt(prompt_tokens)},
             "params": {"method": "GREEDY",
                        "stopping": {"min_new_tokens": new_tokens,
                                     "max_new_tokens": new_tokens}}}]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="the default model's tokenizer.json")
    parser.add_argument("--out", default=str(ROOT / "deploy" / "ghz" / "data"))
    parser.add_argument("--count", type=int, default=64, help="messages per file")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tokenizer = Tokenizer.from_file(args.tokenizer)
    make_prompt = PromptMaker(tokenizer, rng)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "generate.json": generation_requests(make_prompt, rng, args.count, batched=True),
        "generate_stream.json": generation_requests(make_prompt, rng, args.count, batched=False),
        "tokenize.json": tokenize_requests(make_prompt, rng, args.count),
        "bench_fixed.json": fixed_request(tokenizer),
    }
    for name, messages in files.items():
        (out / name).write_text(json.dumps(messages, indent=1, ensure_ascii=False) + "\n")
        print(f"{out / name}: {len(messages)} messages")


if __name__ == "__main__":
    main()
