#!/usr/bin/env python3
"""Continues a prompt with fms-serve's model (//sharding:llama_probe), greedy.

Tokenizes with the model's tokenizer.model (Python sentencepiece), runs the
C++ model, and prints the decoded continuation: the model without the server
(fms-server and any TGIS client are the usual way):

  tools/generate.py --model tools/demo-model --prompt "Once upon a time"
"""

import argparse
import json
import pathlib
import subprocess
import sys

import sentencepiece as spm

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(model, prompt, max_new_tokens=40, probe=None):
    """Returns (new token ids, decoded continuation)."""
    sp = spm.SentencePieceProcessor(model_file=str(pathlib.Path(model) / "tokenizer.model"))
    ids = [sp.bos_id()] + sp.encode(prompt)
    probe = probe or ROOT / "bazel-bin" / "sharding" / "llama_probe"
    request = {"model": str(model), "num_blocks": 64, "block_size": 16,
               "generate": {"prompts": [ids], "max_new_tokens": max_new_tokens}}
    out = subprocess.run([str(probe)], input=json.dumps(request), text=True,
                         capture_output=True, check=True)
    tokens = json.loads(out.stdout)["tokens"][0]
    if sp.eos_id() in tokens:
        tokens = tokens[:tokens.index(sp.eos_id())]
    return tokens, sp.decode(ids[1:] + tokens)[len(sp.decode(ids[1:])):]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "tools" / "demo-model"))
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    _, text = generate(args.model, args.prompt, args.max_new_tokens)
    print(args.prompt + text)


if __name__ == "__main__":
    sys.exit(main())
