"""How much of a text a decoder gave back (COMPRESSION.md §1.3, §4.4).

Word sets as Fox's evaluator makes them (`str.split()`, or per character when the text holds CJK): precision
= |R ∩ H| / |H| (the paper's Table 2 follows this conventional direction), recall = |R ∩ H| / |R|, F1;
`fox_precision` is what Fox's script prints given its README's format, which swaps the arguments (= recall).
Character edit distance = Levenshtein(H, R) / max(len(H), len(R)), and the same after OmniDocBench-style
normalisation (whitespace and punctuation dropped). Levenshtein comes from rapidfuzz (MIT), with a pure-Python
fallback; never from the GPL `Levenshtein` package.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class Fidelity:
    precision: float
    recall: float
    f1: float
    fox_precision: float
    edit_distance: float
    edit_distance_normalized: float
    tokenizer: str  # "split" | "chars"


def _tokens(text: str) -> tuple[set[str], str]:
    if CJK.search(text):
        return {c for c in text if not c.isspace()}, "chars"
    return set(text.split()), "split"


def levenshtein(a: str, b: str) -> int:
    try:
        from rapidfuzz.distance import Levenshtein

        return Levenshtein.distance(a, b)
    except ImportError:  # the same dynamic programme, one row at a time
        previous = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            current = [i]
            for j, cb in enumerate(b, 1):
                current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
            previous = current
        return previous[-1]


def clean(text: str) -> str:
    """OmniDocBench-style: whitespace and punctuation dropped before comparing characters."""
    return "".join(c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P"))


def _distance(hypothesis: str, reference: str) -> float:
    longest = max(len(hypothesis), len(reference))
    return levenshtein(hypothesis, reference) / longest if longest else 0.0


def fidelity(reference: str, hypothesis: str) -> Fidelity:
    ref, kind = _tokens(reference)
    hyp, _ = _tokens(hypothesis)
    common = len(ref & hyp)
    precision = common / len(hyp) if hyp else 0.0
    recall = common / len(ref) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Fidelity(precision, recall, f1, recall, _distance(hypothesis, reference),
                    _distance(clean(hypothesis), clean(reference)), kind)
