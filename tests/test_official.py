"""The official VQA v2 and GQA evaluations: answer processing on known cases, accuracy by the
definition, GQA breakdowns, validity, plausibility and consistency."""

from __future__ import annotations

import itertools

import pytest
from vqatune.engine.official import (
    GQAEvaluator,
    VQAEvaluator,
    breakdown,
    normalize_vqa_answer,
    score_batches,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" Two ", "2"),
        ("the red Car.", "red car"),
        ("1,000", "1000"),  # a comma inside a number: all punctuation removed
        ("3.5", "3.5"),  # a period before a digit stays
        ("3.", "3"),
        ("yes!", "yes"),
        ("a dog, cat", "dog cat"),  # punctuation before a space is removed, not spaced
        ("black/white", "black white"),  # otherwise replaced by a space
        ("dont", "don't"),
        ("isnt it?", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("An apple\n", "apple"),
        ("none", "0"),
        ("Im", "im"),  # the official table's capitalised keys never match
        ("t-shirt", "t shirt"),
    ],
)
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def brute_force(predicted: str, annotators: list[str]) -> float:
    """The definition, literally: min(1, matches/3) over every 9 of the 10 annotators."""
    subsets = list(itertools.combinations(range(10), 9))
    return sum(min(1.0, sum(annotators[i] == predicted for i in s) / 3) for s in subsets) / 10


def test_vqa_accuracy_matches_the_definition():
    for m in range(11):
        annotators = ["2"] * m + ["3"] * (10 - m)
        assert vqa_accuracy("2", annotators) == pytest.approx(brute_force("2", annotators))
    # annotators disagree: both sides processed ("two" and "2." both read "2")
    assert vqa_accuracy("2", ["two"] * 3 + ["2."] * 2 + ["3"] * 5) == 1.0
    # annotators agree: plain strings compared, as the official script does
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0


def test_vqa_evaluator_per_answer_type():
    anns = [
        {"answer_type": "yes/no", "answers": [{"answer": "yes"}] * 10},
        {"answer_type": "number", "answers": [{"answer": "2"}] * 10},
        {"answer_type": "other", "answers": [{"answer": "red"}] * 10},
        {"answer_type": "other", "answers": [{"answer": "blue"}] * 10},
    ]
    result = VQAEvaluator(anns).score(["yes", "3", "red", None])
    assert result["accuracy_official"] == pytest.approx(2 / 3)
    assert result["accuracy_type"] == {"yes/no": 1.0, "number": 0.0, "other": 1.0}


def question(answer, structural, semantic, entailed=(), detailed="x"):
    return {
        "answer": answer,
        "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
        "entailed": list(entailed),
    }


def test_gqa_breakdowns_validity_plausibility_consistency():
    items = [
        ("q1", question("yes", "verify", "attr", entailed=["q2", "q3", "q9"])),
        ("q2", question("red", "query", "attr", entailed=["q1"])),
        ("q3", question("left", "query", "rel")),
        ("q4", question("color", "compare", "attr", detailed="twoCommon")),
    ]
    entailed = {qid: q["entailed"] for qid, q in items}
    choices = {
        "q1": {"valid": ["yes", "no"], "plausible": ["yes", "no"]},
        "q2": {"valid": ["red", "blue", "dog"], "plausible": ["red", "blue"]},
        "q3": {"valid": ["left", "right"], "plausible": ["left", "right"]},
        "q4": {"valid": [], "plausible": []},
    }
    ev = GQAEvaluator(items, entailed, choices)
    result = ev.score(["yes", "dog", "left", "material"])
    assert result["accuracy_official"] == pytest.approx(0.5)
    assert result["accuracy_type"] == {"verify": 1.0, "query": 0.5, "compare": 0.0}
    assert result["accuracy_semantic"] == {"attr": pytest.approx(1 / 3), "rel": 1.0}
    # q2's "dog" is valid (a noun of the right kind) but not plausible; "Common" questions
    # accept an attribute kind
    assert result["validity"] == 1.0 and result["plausibility"] == pytest.approx(0.75)
    # q1 right: its evaluated entailed questions q2 (wrong), q3 (right) -> 0.5; q9 not evaluated;
    # q3 right with no entailments; q2 wrong: not counted
    assert result["consistency"] == pytest.approx(0.5) and result["consistency_questions"] == 1


def test_gqa_without_official_files_has_no_such_figures():
    ev = GQAEvaluator([("q1", question("yes", "verify", "attr"))])
    result = ev.score(["no"])
    assert result["accuracy_official"] == 0.0
    assert not {"validity", "plausibility", "consistency"} & set(result)


def test_score_batches_maps_indices_to_answers():
    items = [(f"q{i}", question("a" if i % 2 else "b", "query", "obj")) for i in range(5)]
    ev = GQAEvaluator(items)
    result = score_batches(ev, [([4, 0], [1, 1]), ([1], [0])], ["a", "b"])
    assert result["accuracy_official"] == 1.0  # q4 -> b, q0 -> b, q1 -> a; q2, q3 left out


def test_breakdown_rows_of_an_eval_event():
    event = {
        "accuracy": 0.5,
        "accuracy_type": {"verify": 1.0, "query": None},
        "accuracy_semantic": {"rel": 0.25},
        "consistency": 0.75,
    }
    assert breakdown(event) == [
        ("accuracy_type.verify", "accuracy verify", 1.0),
        ("accuracy_semantic.rel", "accuracy rel (semantic)", 0.25),
        ("consistency", "consistency", 0.75),
    ]
    assert breakdown(None) == [] and breakdown({"accuracy": 1.0}) == []
