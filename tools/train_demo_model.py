#!/usr/bin/env python3
"""Trains the demo model: a small LLaMa on the fortune-cookie databases.

The text ships in Debian's `fortunes` package (/usr/share/games/fortunes).
A SentencePiece BPE tokenizer (byte fallback) is trained on it with spm_train,
then a LlamaForCausalLM from transformers is trained on this CPU with PyTorch
from the venv, deterministic from --seed, and saved in Hugging Face format
(bf16 safetensors, under 10 MB) with its tokenizer.model.

  tools/train_demo_model.py --out tools/demo-model [--steps 900]

With a fixed step count the result depends only on the seed (about 18
minutes on 2 cores of this project's machines).
"""

import argparse
import glob
import json
import math
import os
import random
import subprocess
import tempfile
import time

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

FORTUNES = "/usr/share/games/fortunes"
SKIP = {"art", "ascii-art", "translate-me"}  # Pictures and non-English text.
VOCAB = 2048
SEQ = 128
CONFIG = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    vocab_size=VOCAB,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)


def read_fortunes():
    """The fortunes as a list of strings, in a fixed order."""
    texts = []
    for path in sorted(glob.glob(os.path.join(FORTUNES, "*"))):
        name = os.path.basename(path)
        if "." in name or name in SKIP or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for fortune in f.read().split("\n%\n"):
                fortune = fortune.strip()
                if fortune and "\b" not in fortune:  # Skip overstriking.
                    texts.append(fortune)
    if not texts:
        raise SystemExit(f"no fortunes under {FORTUNES}: apt-get install fortunes")
    return texts


def train_tokenizer(texts, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(text.replace("\n", " ") + "\n")
        prefix = os.path.join(tmp, "tokenizer")
        subprocess.run(
            ["spm_train", f"--input={corpus}", f"--model_prefix={prefix}",
             f"--vocab_size={VOCAB}", "--model_type=bpe", "--byte_fallback=true",
             "--character_coverage=0.9995", "--split_digits=true", "--num_threads=1",
             "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
             "--max_sentence_length=16384"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(prefix + ".model", os.path.join(out_dir, "tokenizer.model"))


def encode_all(texts, tokenizer_path):
    import sentencepiece as spm  # From the venv (Python binding, not the shim).
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    stream = []
    for ids in sp.encode(texts):
        stream += [1] + ids + [2]
    return torch.tensor(stream, dtype=torch.long)


def batches(stream, batch_size, rng):
    starts = list(range(0, len(stream) - SEQ - 1, SEQ // 2))
    while True:
        rng.shuffle(starts)
        for i in range(0, len(starts) - batch_size + 1, batch_size):
            idx = torch.tensor(starts[i:i + batch_size])
            window = stream[idx.unsqueeze(1) + torch.arange(SEQ + 1)]
            yield window[:, :-1], window[:, 1:]


def train(model, stream, steps, seed, log):
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95),
                            weight_decay=0.1)
    warmup, step, loss_avg = 100, 0, None
    model.train()
    for inputs, targets in batches(stream, 32, rng):
        # Linear warm-up, then cosine decay to 10 %.
        progress = step / steps
        lr = 2e-3 * min(1.0, (step + 1) / warmup) * (
            0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                 targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            log(f"step {step} loss {loss_avg:.3f} lr {lr:.2e}")
        if step >= steps:
            break
    return step, loss_avg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    hf_logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)
    log = lambda msg: print(msg, flush=True)

    texts = read_fortunes()
    train_tokenizer(texts, args.out)
    stream = encode_all(texts, os.path.join(args.out, "tokenizer.model"))
    log(f"{len(texts)} fortunes, {len(stream)} tokens")
    model = LlamaForCausalLM(LlamaConfig(**CONFIG))
    started = time.time()
    steps, loss = train(model, stream, args.steps, args.seed, log)
    minutes = (time.time() - started) / 60
    model.eval()
    model.to(torch.bfloat16).save_pretrained(args.out)
    GenerationConfig(bos_token_id=1, eos_token_id=[2]).save_pretrained(args.out)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"steps": steps, "final_loss": round(loss, 4),
                   "tokens_seen": steps * 32 * SEQ, "corpus_tokens": len(stream),
                   "minutes": round(minutes, 1), "seed": args.seed,
                   "perplexity": round(math.exp(loss), 2)}, f, indent=2)
    log(f"saved {args.out} after {steps} steps, loss {loss:.3f}")


if __name__ == "__main__":
    main()
