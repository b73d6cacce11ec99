#!/usr/bin/env python3
"""Converts a LLaMa-family GGUF checkpoint into a Hugging Face model directory
that fms-server serves: *.safetensors (weights dequantized), config.json,
generation_config.json, tokenizer.json and tokenizer_config.json.

  gguf_to_hf.py --gguf FILE --out DIR [--dtype bfloat16|float32]

transformers (with the `gguf` package) reads and dequantizes the file. Three of
its gaps are mended here:
  * it refuses save_pretrained on a GGUF-loaded model, so the weights go into a
    fresh LlamaForCausalLM built from the same config;
  * its GGUF tokenizer converter drops the pre-tokenizer step that
    `tokenizer.ggml.pre` names: "smollm" means digits split one by one before
    the byte-level step, as SmolLM2's own tokenizer.json has it
    (Sequence[Digits(individual_digits), ByteLevel]); without it "a  2"
    tokenizes differently;
  * SmolLM2's post-processor is ByteLevel (it adds no BOS); the converter
    writes an empty template, which adds nothing either but is not the
    original, so the original is restored;
  * transformers 5 names the tokenizer class "TokenizersBackend", which
    transformers 4 (vLLM, TGIS) cannot load; "PreTrainedTokenizerFast" loads
    tokenizer.json as it is in both.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a progress bar.

import gguf  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}

# tokenizer.ggml.pre -> the pre-tokenizer steps that go before ByteLevel.
PRE_TOKENIZER_STEPS = {
    "smollm": [{"type": "Digits", "individual_digits": True}],
}


def gguf_string(reader, key):
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def mend_tokenizer_json(path, pre):
    with open(path, encoding="utf-8") as f:
        tokenizer = json.load(f)
    steps = PRE_TOKENIZER_STEPS.get(pre)
    byte_level = tokenizer["pre_tokenizer"]
    if steps and byte_level.get("type") == "ByteLevel":
        tokenizer["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps + [byte_level]}
        tokenizer["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True,
                                       "trim_offsets": False, "use_regex": True}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=2)


def mend_tokenizer_config(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)


def mend_config_json(path, dtype):
    with open(path) as f:
        config = json.load(f)
    # transformers 5 writes rope_theta only inside rope_parameters; readers
    # written for transformers 4 look for it at the top.
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config["torch_dtype"] = dtype
    config.pop("quantization_config", None)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def convert(gguf_path, out_dir, dtype):
    folder, name = os.path.split(os.path.abspath(gguf_path))
    pre = gguf_string(gguf.GGUFReader(gguf_path), "tokenizer.ggml.pre")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model = model.to(DTYPES[dtype])
    model.generation_config = loaded.generation_config
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_dir))) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        mend_tokenizer_json(os.path.join(tmp, "tokenizer.json"), pre)
        mend_tokenizer_config(os.path.join(tmp, "tokenizer_config.json"))
        mend_config_json(os.path.join(tmp, "config.json"), dtype)
        # TemporaryDirectory and safetensors make owner-only modes; a model is
        # data that a server running as another user (uid 2000 in a pod) reads.
        os.chmod(tmp, 0o755)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.rename(tmp, out_dir)
        os.makedirs(tmp)  # TemporaryDirectory removes it again.


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(os.cpu_count() or 1)
    convert(args.gguf, args.out, args.dtype)
    print(args.out)


if __name__ == "__main__":
    sys.exit(main())
