"""The official evaluations of VQA v2 and GQA, on predicted answer strings.

- VQA v2 (the behaviour of the official vqaEval.py): an answer scores min(1, matches/3)
  averaged over the ten leave-one-annotator-out subsets; answers are compared after the official
  processing (punctuation, number words, articles, contractions), which the official script
  applies only when the annotators disagree; accuracy overall and per answer type.
- GQA (the behaviour of the official eval.py): exact match, overall and per structural and
  semantic type; validity and plausibility from `{split}_choices.json`; consistency over the
  entailed questions of each correctly answered question.

Light module: no torch, no numpy (the evaluator runs in the trainer and in `vqatune predict`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

VQA_ANSWER_TYPES = ("yes/no", "number", "other")
ANNOTATORS = 10

# ------------------------------------------------------------------------------------------
# VQA v2 answer processing

_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
# The official pattern's look-behind is mistyped as a look-ahead ("(?!<=\d)"), so in effect a
# period is removed wherever no digit follows it ("3." -> "3", "1.5" kept).
_PERIOD = re.compile(r"\.(?!\d)")
_PERIODS_REMOVED = 32  # the official call passes re.UNICODE (32) as the count
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# Contractions written without their apostrophe, as the official table restores them. Its keys
# with a capital ("Im", "Ive", "Id've") never match the lower-cased words, so they are left out.


def _contractions() -> dict[str, str]:
    """Contractions written without apostrophes (and, for two-apostrophe ones, with one of
    them), as the official table restores them. Its keys with a capital ("Im", "Ive") never
    match the lower-cased words, so they are left out."""
    full = (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
        "hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am "
        "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't "
        "she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's "
        "someone'd someone'd've someone'll someone's something'd something'd've something'll "
        "that's there'd there'd've there're there's they'd they'd've they'll they're they've "
        "wasn't we'd've we've weren't what'll what're what's what've when's where'd where's "
        "where've who'd who'd've who'll who's who've why'll why're why's won't would've "
        "wouldn't wouldn't've y'all y'all'll you'd you'd've you'll you're you've"
    ).split()
    table = {w.replace("'", ""): w for w in full}
    for w in full:
        if w.count("'") == 2:
            head, _, tail = w.rpartition("'")
            table[head.replace("'", "") + "'" + tail] = w  # couldnt've
            table[head + tail] = w  # couldn'tve
    table["twas"] = "'twas"
    return table


_CONTRACTIONS = _contractions()


def process_punctuation(text: str) -> str:
    """Punctuation removed (next to a space, or in an answer with 1,000-style numbers) or
    replaced by a space; periods not followed by a digit removed."""
    out = text
    glued = _COMMA_IN_NUMBER.search(text) is not None
    for p in _PUNCTUATION:
        if glued or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def process_digits_articles(text: str) -> str:
    """Lower case, number words -> digits, articles dropped, contractions restored."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """The official processing of an answer: whitespace, punctuation, digits, articles."""
    return process_digits_articles(process_punctuation(_strip(answer)))


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _annotator_counts(annotators: Sequence[str]) -> tuple[Counter, bool]:
    """(answer -> how many annotators gave it, whether answers are processed): the processing
    is applied only when the annotators disagree (as the official script does); otherwise the
    stripped strings are compared."""
    given = [_strip(a) for a in annotators]
    processed = len(set(given)) > 1
    if processed:
        given = [process_digits_articles(process_punctuation(a)) for a in given]
    return Counter(given), processed


def _leave_one_out(matches: int, annotators: int) -> float:
    """min(1, matches/3) with each annotator left out in turn, averaged: leaving out one who
    gave the answer leaves matches - 1, any other leaves matches."""
    if not annotators:
        return 0.0
    total = matches * min(1.0, (matches - 1) / 3) + (annotators - matches) * min(1.0, matches / 3)
    return total / annotators


def vqa_accuracy(predicted: str, annotators: Sequence[str]) -> float:
    """One question's official accuracy."""
    counts, processed = _annotator_counts(annotators)
    answer = normalize_vqa_answer(predicted) if processed else _strip(predicted)
    return _leave_one_out(counts.get(answer, 0), len(annotators))


class VQAEvaluator:
    """Scores predictions of one split's questions (in the data set's order)."""

    def __init__(self, annotations: Sequence[Mapping]):
        self.counts = []  # per question: (answer counts, processed, annotators)
        for a in annotations:
            given = [str(x.get("answer", "")) for x in a["answers"]]
            self.counts.append((*_annotator_counts(given), len(given)))
        self.types = [
            a.get("answer_type") if a.get("answer_type") in VQA_ANSWER_TYPES else "other"
            for a in annotations
        ]

    def __len__(self) -> int:
        return len(self.counts)

    def score(self, predictions: Sequence[str | None]) -> dict:
        """predictions[i]: the answer to question i, None when it was not evaluated."""
        normalized: dict[str, str] = {}  # predictions repeat (an answer vocabulary)
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        total, n = 0.0, 0
        for predicted, (counts, processed, k), kind in zip(predictions, self.counts, self.types):
            if predicted is None:
                continue
            if processed:
                if predicted not in normalized:
                    normalized[predicted] = normalize_vqa_answer(predicted)
                answer = normalized[predicted]
            else:
                answer = _strip(predicted)
            acc = _leave_one_out(counts.get(answer, 0), k)
            total, n = total + acc, n + 1
            sums[kind][0] += acc
            sums[kind][1] += 1
        return {
            "accuracy_official": total / n if n else None,
            "accuracy_type": {t: sums[t][0] / sums[t][1] for t in VQA_ANSWER_TYPES if t in sums},
        }


# ------------------------------------------------------------------------------------------
# GQA


class GQAEvaluator:
    """Scores predictions of one split's questions (in the data set's order).

    questions: (question id, question dict with "answer" and "types") pairs;
    entailed: question id -> the ids of the questions it entails (from the questions'
      "entailed" fields, or {split}_all_questions.json); consistency counts the entailed
      questions that were evaluated;
    choices: {split}_choices.json ({qid: {"valid": [...], "plausible": [...]}}), or None.
    """

    def __init__(
        self,
        questions: Sequence[tuple[str, Mapping]],
        entailed: Mapping[str, Sequence[str]] | None = None,
        choices: Mapping[str, Mapping] | None = None,
    ):
        self.ids = [str(qid) for qid, _ in questions]
        self.gold = [q.get("answer") for _, q in questions]
        types = [q.get("types") if isinstance(q.get("types"), dict) else {} for _, q in questions]
        self.structural = [t.get("structural") for t in types]
        self.semantic = [t.get("semantic") for t in types]
        # "Common" questions (what do A and B have in common?) are valid and plausible when the
        # answer names a kind of attribute
        self.common = ["Common" in str(t.get("detailed", "")) for t in types]
        self.position = {qid: i for i, qid in enumerate(self.ids)}
        self.entailed = None
        if entailed:
            self.entailed = [
                [self.position[e] for e in entailed.get(qid, ()) if e != qid and e in self.position]
                for qid in self.ids
            ]
        self.choices = None
        if choices is not None:
            self.choices = [choices.get(qid) for qid in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def score(self, predictions: Sequence[str | None]) -> dict:
        """predictions[i]: the answer to question i, None when it was not evaluated."""
        correct = [p is not None and p == g for p, g in zip(predictions, self.gold)]
        done = [i for i, p in enumerate(predictions) if p is not None and self.gold[i] is not None]
        out: dict = {
            "accuracy_official": _mean(correct[i] for i in done),
            "accuracy_type": _per_type(done, correct, self.structural),
            "accuracy_semantic": _per_type(done, correct, self.semantic),
        }
        if self.choices is not None:
            valid, plausible = [], []
            for i in done:
                c = self.choices[i]
                if not isinstance(c, dict):
                    continue
                p = predictions[i]
                if self.common[i]:
                    kinds = ("color", "material", "shape")
                    valid.append(p in kinds)
                    plausible.append(p in kinds)
                else:
                    valid.append(p in c.get("valid", ()))
                    plausible.append(p in c.get("plausible", ()))
            out["validity"], out["plausibility"] = _mean(valid), _mean(plausible)
        if self.entailed is not None:
            scores = []
            for i in done:
                others = [j for j in self.entailed[i] if predictions[j] is not None]
                if correct[i] and others:
                    scores.append(sum(correct[j] for j in others) / len(others))
            out["consistency"] = _mean(scores)
            out["consistency_questions"] = len(scores)
        return out


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _per_type(done: Sequence[int], correct: Sequence[bool], kinds: Sequence) -> dict:
    sums: dict[str, list[int]] = {}
    for i in done:
        if kinds[i]:
            s = sums.setdefault(kinds[i], [0, 0])
            s[0] += correct[i]
            s[1] += 1
    return {k: c / n for k, (c, n) in sums.items()}


def score_batches(evaluator, batches, answers: Sequence[str]) -> dict:
    """The evaluator's figures from (question indices, predicted answer ids) batches, as the
    trainer's evaluation collects them (arrays or lists); questions not in any batch are left
    out."""
    predictions: list[str | None] = [None] * len(evaluator)
    for indices, predicted in batches:
        for i, p in zip(list(indices), list(predicted)):
            predictions[int(i)] = answers[int(p)]
    return evaluator.score(predictions)


def breakdown(event: Mapping | None) -> list[tuple[str, str, float]]:
    """The official figures of an eval event as (key, label, value) rows, in a fixed order, for
    `show`, `compare` and the TUI's accuracy chart."""
    if not event:
        return []
    rows = []
    for field, suffix in (("accuracy_type", ""), ("accuracy_semantic", " (semantic)")):
        for name, value in (event.get(field) or {}).items():
            if isinstance(value, (int, float)):
                rows.append((f"{field}.{name}", f"accuracy {name}{suffix}", float(value)))
    for field in ("consistency", "validity", "plausibility"):
        if isinstance(event.get(field), (int, float)):
            rows.append((field, field, float(event[field])))
    return rows
