"""The official GQA and VQA v2 metrics over a GQA test-dev-sized evaluation: target under 1 s.

Builds 12,578 GQA questions (the size of test-dev balanced) with structural / semantic types,
entailments (3 a question) and choices (10 valid, 5 plausible), and as many VQA v2 questions
with 10 annotators each, then times the evaluators' score() on random predictions: wall time
and process CPU time (steadier on a busy machine), the median of --repeat runs.

    .venv/bin/python benchmarks/bench_official.py [--questions 12578] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from vqatune.engine.official import GQAEvaluator, VQAEvaluator

TARGET_S = 1.0
STRUCTURAL = ["verify", "query", "choose", "logical", "compare"]
SEMANTIC = ["obj", "attr", "rel", "cat", "global"]


def gqa_set(n: int, rng: random.Random, answers: list[str]):
    ids = [f"{20000000 + i}" for i in range(n)]
    items = [
        (
            qid,
            {
                "answer": rng.choice(answers),
                "types": {
                    "structural": rng.choice(STRUCTURAL),
                    "semantic": rng.choice(SEMANTIC),
                    "detailed": "twoCommon" if rng.random() < 0.02 else "relS",
                },
            },
        )
        for qid in ids
    ]
    entailed = {qid: rng.sample(ids, 3) for qid in ids}
    choices = {
        qid: {"valid": rng.sample(answers, 10), "plausible": rng.sample(answers, 5)} for qid in ids
    }
    return GQAEvaluator(items, entailed, choices)


def vqa_set(n: int, rng: random.Random, answers: list[str]):
    kinds = ["yes/no", "number", "other"]
    anns = [
        {
            "answer_type": rng.choice(kinds),
            "answers": [{"answer": rng.choice(answers[:4])} for _ in range(10)],
        }
        for _ in range(n)
    ]
    return VQAEvaluator(anns)


def timed(fn, repeat: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=12578)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    answers = [f"answer {i}" for i in range(1800)] + ["yes", "no", "2", "red"]
    n = args.questions
    gqa = gqa_set(n, rng, answers)
    vqa = vqa_set(n, rng, answers)
    predictions = [rng.choice(answers) for _ in range(n)]
    print(f"{n:,} questions, median of {args.repeat}")
    for name, ev in (("GQA (types, validity, plausibility, consistency)", gqa), ("VQA v2", vqa)):
        wall, cpu = timed(lambda ev=ev: ev.score(predictions), args.repeat)
        print(
            f"  {name:50s} {wall:.3f} s wall, {cpu:.3f} s CPU, ratio to {TARGET_S:g} s: "
            f"{TARGET_S / wall:.1f}"
        )


if __name__ == "__main__":
    main()
