"""Writes the hand-made seeds of tests/fuzz/corpus (run once;
the files are committed): one message of each kind the server takes, with
the parameters TGIS clients send; and step_plan_fuzz's runs of worker plans
as the scheduler sends them. Usage: make_seeds.py CORPUS_DIR (needs the
generation_pb2 and worker_pb2 modules of proto/ on PYTHONPATH)."""

import re
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


def plans(*messages):
    """A step_plan_fuzz input: each plan as a 2-byte length and its bytes."""
    out = b""
    for m in messages:
        wire = m.SerializeToString()
        out += len(wire).to_bytes(2, "little") + wire
    return out


def protocol_version():
    """kWorkerProtocolVersion: a plan of another version is refused unread."""
    codec = Path(__file__).resolve().parents[2] / "batching" / "step_codec.h"
    return int(re.search(r"kWorkerProtocolVersion = (\d+);", codec.read_text()).group(1))


def step_plan_seeds():
    import worker_pb2 as w
    version = protocol_version()

    def plan(step, new=(), chunks=(), finished=(), preempted=()):
        return w.StepPlan(version=version, step=step, new_sequences=list(new), chunks=list(chunks),
                          finished=list(finished), preempted=list(preempted))

    def seq(i, prompt):
        return w.NewSequence(id=i, prompt=prompt,
                             sampling=w.SamplingParams(sample=True, temperature=0.8, top_p=0.9,
                                                       repetition_penalty=1.0))

    def chunk(i, tokens, context, blocks=(), sample=True, cached=()):
        return w.ScheduledChunk(id=i, token_ids=tokens, context_len=context,
                                cached_blocks=list(cached), new_blocks=list(blocks),
                                sample=sample)

    return {
        "prefill_decode_finish": plans(
            plan(0, [seq(1, [1, 2, 3, 4, 5])], [chunk(1, [1, 2, 3, 4, 5], 0, [0, 1])]),
            plan(1, chunks=[chunk(1, [7], 5)]),
            plan(2, chunks=[chunk(1, [8], 6)]),
            plan(3, finished=[1])),
        "chunked_prefill_two_sequences": plans(
            plan(0, [seq(1, list(range(1, 11))), seq(2, [3])],
                 [chunk(1, [1, 2, 3, 4], 0, [0], sample=False), chunk(2, [3], 0, [1])]),
            plan(1, chunks=[chunk(1, list(range(5, 11)), 4, [2, 3]), chunk(2, [9], 1)])),
        "preempt_and_recompute": plans(
            plan(0, [seq(1, [1, 2, 3]), seq(2, [4, 5, 6])],
                 [chunk(1, [1, 2, 3], 0, [0]), chunk(2, [4, 5, 6], 0, [1])]),
            plan(1, chunks=[chunk(2, [9], 3), chunk(1, [9], 3)]),
            plan(2, chunks=[chunk(2, [10], 4, [0])], preempted=[1]),
            plan(3, chunks=[chunk(1, [1, 2, 3, 9], 0, [2])], finished=[2])),
        "prefix_cache_hits": plans(  # Blocks of 4: sequence 1 computes two full ones.
            plan(0, [seq(1, list(range(1, 10)))], [chunk(1, list(range(1, 10)), 0, [0, 1, 2])]),
            plan(1, [seq(2, list(range(1, 7)))], [chunk(2, [5, 6], 4, [3], cached=[0])],
                 finished=[1]),
            plan(2, [seq(3, list(range(1, 10)))], [chunk(3, [9], 8, [4], cached=[0, 1])])),
    }


def main():
    corpus = Path(sys.argv[1])
    out = corpus / "request_fuzz"
    out.mkdir(parents=True, exist_ok=True)
    for name, (kind, message) in SEEDS.items():
        (out / name).write_bytes(bytes([kind]) + message.SerializeToString())
    out = corpus / "step_plan_fuzz"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in step_plan_seeds().items():
        (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
