#!/usr/bin/env python3
"""Writes tiny random LLaMa checkpoints in Hugging Face format, for tests.

Every model is written by transformers' own LlamaForCausalLM.save_pretrained,
deterministic from --seed, with a SentencePiece BPE tokenizer (byte fallback)
trained by Debian's spm_train on a fixed generated corpus. Weights are drawn
with realistic magnitudes (not HF's tiny init) so that a swapped projection or
a wrong RoPE convention changes the logits clearly.

  make_test_models.py --out DIR [--seed 0] [--only mha,gqa1]

writes DIR/<variant>/{config.json, generation_config.json, *.safetensors,
tokenizer.model or tokenizer.json} for each variant in VARIANTS.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile

import torch

import hf_tokenizer_fixtures
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)
from transformers.utils import logging as hf_logging

VOCAB = 512

BASE = dict(
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    vocab_size=VOCAB,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (config overrides, save options)
VARIANTS = {
    "mha": ({}, {}),
    "gqa2": ({"num_key_value_heads": 2}, {}),
    "gqa1": ({"num_key_value_heads": 1}, {}),
    "llama3": (
        {
            "num_key_value_heads": 2,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
        {},
    ),
    "tied": ({"tie_word_embeddings": True}, {}),
    "bf16": ({"num_key_value_heads": 2}, {"dtype": torch.bfloat16}),
    "sharded": ({"num_key_value_heads": 2}, {"max_shard_size": "400KB"}),  # 2 files
    # A byte-level BPE tokenizer.json (SmolLM2-like: ChatML specials, no BOS,
    # <|im_end|> = 2 is EOS) instead of tokenizer.model.
    "bytebpe": ({}, {"tokenizer": "hf"}),
    # LLaMa-family model types served by the same code (model/llama_config.cc
    # ReadFamily): Qwen2 (q/k/v biases) and Mistral (no sliding window).
    "qwen2": ({"num_key_value_heads": 2}, {"arch": "qwen2"}),
    "mistral": ({"num_key_value_heads": 2, "sliding_window": None}, {"arch": "mistral"}),
}

ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}

WORDS = (
    "the a of and to in is was he she it that for on with as his her they at by "
    "from this had not are but or have an were one which you their all there "
    "would been when who will more if no out so said what up its about into "
    "than them can only other new some could time these two may then do first "
    "any my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should "
    "because each just those people how too little state good very make world "
    "still own see men work long get here between both life being under never "
    "day same another know while last might us great old year off come since "
    "against go came right used take three story king queen river mountain "
    "garden winter summer morning evening light dark stone water fire bread"
).split()


def write_corpus(path, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(6000):
            n = rng.randint(4, 14)
            words = [rng.choice(WORDS) for _ in range(n)]
            words[0] = words[0].capitalize()
            f.write(" ".join(words) + rng.choice([".", "!", "?", ","]) + "\n")
        f.write("Numbers 0 1 2 3 4 5 6 7 8 9 and caf\u00e9 na\u00efve \u00fcber.\n")


def train_tokenizer(out_dir, seed):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        write_corpus(corpus, seed)
        prefix = os.path.join(tmp, "tokenizer")
        subprocess.run(
            [
                "spm_train",
                f"--input={corpus}",
                f"--model_prefix={prefix}",
                f"--vocab_size={VOCAB}",
                "--model_type=bpe",
                "--byte_fallback=true",
                "--character_coverage=1.0",
                "--split_digits=true",
                "--num_threads=1",
                "--unk_id=0",
                "--bos_id=1",
                "--eos_id=2",
                "--pad_id=-1",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(prefix + ".model", "rb") as src:
            data = src.read()
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as dst:
        dst.write(data)


def train_hf_tokenizer(out_dir, seed):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        write_corpus(corpus, seed)
        with open(corpus, encoding="utf-8") as f:
            lines = f.readlines()
    tokenizer = hf_tokenizer_fixtures.byte_level_bpe(
        lines, VOCAB, hf_tokenizer_fixtures.CHATML_SPECIALS)
    hf_tokenizer_fixtures.write_tokenizer(tokenizer, out_dir, bos="<|im_start|>", eos="<|im_end|>")


def randomize(model, seed):
    """Realistic magnitudes: unit-ish activations, norms around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=gen))
            elif "embed_tokens" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
            else:
                fan_in = param.shape[-1]
                param.copy_(torch.randn(param.shape, generator=gen) / fan_in**0.5)


def write_variant(out_root, name, seed):
    overrides, save = VARIANTS[name]
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    config_class, model_class = ARCHITECTURES[save.get("arch", "llama")]
    config = config_class(**{**BASE, **overrides})
    torch.manual_seed(seed)
    model = model_class(config)
    randomize(model, seed)
    if "dtype" in save:
        model = model.to(save["dtype"])
    model.save_pretrained(
        out_dir, max_shard_size=save.get("max_shard_size", "1GB")
    )
    GenerationConfig(bos_token_id=1, eos_token_id=[2]).save_pretrained(out_dir)
    if save.get("tokenizer") == "hf":
        train_hf_tokenizer(out_dir, seed)
    else:
        train_tokenizer(out_dir, seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    for name in args.only.split(","):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name}; known: {', '.join(VARIANTS)}")
        write_variant(args.out, name, args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
