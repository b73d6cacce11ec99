"""Writes the hand-made seeds of tests/fuzz/corpus/request_fuzz (run once;
the files are committed): one message of each kind the server takes, with
the parameters TGIS clients send. Usage: make_seeds.py OUT_DIR (needs the
generation_pb2 module of proto/generation.proto on PYTHONPATH)."""

import sys
from pathlib import Path

import generation_pb2 as pb


def params(**kw):
    return pb.Parameters(**kw)


SEEDS = {
    "greedy": (0, pb.BatchedGenerationRequest(
        model_id="m", requests=[pb.GenerationRequest(text="The king went")],
        params=params(stopping=pb.StoppingCriteria(max_new_tokens=8)))),
    "sample_all_options": (0, pb.BatchedGenerationRequest(
        requests=[pb.GenerationRequest(text="a"), pb.GenerationRequest(text="b c \u00e9\U0001F642")],
        params=params(
            method=pb.SAMPLE,
            sampling=pb.SamplingParameters(temperature=0.7, top_k=5, top_p=0.9,
                                           typical_p=0.5, seed=42),
            stopping=pb.StoppingCriteria(max_new_tokens=30, min_new_tokens=2,
                                         time_limit_millis=100, stop_sequences=["\n", "END"],
                                         include_stop_sequence=False),
            response=pb.ResponseOptions(input_text=True, generated_tokens=True, input_tokens=True,
                                        token_logprobs=True, token_ranks=True, top_n_tokens=3),
            decoding=pb.DecodingParameters(
                repetition_penalty=1.2,
                length_penalty=pb.DecodingParameters.LengthPenalty(start_index=2,
                                                                   decay_factor=1.5)),
            truncate_input_tokens=4))),
    "empty_text": (0, pb.BatchedGenerationRequest(requests=[pb.GenerationRequest(text="")])),
    "stream": (1, pb.SingleGenerationRequest(
        request=pb.GenerationRequest(text="<|im_start|>hi<|im_end|>"),
        params=params(stopping=pb.StoppingCriteria(max_new_tokens=300)))),
    "tokenize": (2, pb.BatchedTokenizeRequest(
        requests=[pb.TokenizeRequest(text="Hello world"), pb.TokenizeRequest(text="")],
        return_tokens=True, return_offsets=True, truncate_input_tokens=2)),
}


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, (kind, message) in SEEDS.items():
        (out / name).write_bytes(bytes([kind]) + message.SerializeToString())


if __name__ == "__main__":
    main()
