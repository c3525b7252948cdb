"""Can this page be trusted? Quality signals on every PageResult and a verdict derived from them.

From the engine (no extra pass): the mean and minimum log-probability of the greedy tokens, and how often the
n-gram guard changed the greedy choice (each hit is the model trying to loop). From the output: a repetition
score, the share of its words inside loops (a unit of 1-40 words repeated at least REPEATS times in a row,
covering at least LOOP_WORDS words, so "very very" or a row of empty table cells does not count). From the
page itself: for a PDF page with a text layer, the word-set recall and precision of the OCR text against
that layer (reading order ignored) — an independent witness, free on born-digital pages.

The verdict thresholds are priors, not fitted: there are no real weights on the machine that built this, so
they come from what each signal means. A loop that fills a quarter of a page, or a page whose text layer the
OCR misses by more than half, is bad; a smaller loop, a guard that had to step in several times, a low mean
token probability (below e^-1.5 ≈ 0.22 on average: the model was guessing), or agreement below 0.8, is suspect.
`Thresholds` holds them, so users can set their own.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass

VERDICTS = ("good", "suspect", "bad")
REPEATS = 4  # a unit must repeat this many times in a row to be a loop
LOOP_WORDS = 16  # and the run must cover at least this many words
MAX_UNIT = 40  # longest repeated unit looked for, in words
MIN_LAYER_WORDS = 20  # a text layer with fewer words is no witness (scans, stray page numbers)
WORD = re.compile(r"\w+", re.UNICODE)
TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Thresholds:
    bad_repetition: float = 0.25
    suspect_repetition: float = 0.05
    suspect_guard_hits: int = 3
    suspect_mean_logprob: float = -1.5
    bad_recall: float = 0.5
    suspect_agreement: float = 0.8


@dataclass
class Quality:
    mean_logprob: float | None = None
    min_logprob: float | None = None
    repetition: float | None = None  # share of the output's words inside loops, 0..1
    guard_hits: int | None = None
    text_layer_recall: float | None = None
    text_layer_precision: float | None = None
    verdict: str = "good"
    reasons: tuple[str, ...] = ()  # what made the verdict, e.g. ("repetition 0.31",)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    def rank(self) -> tuple:
        """Sort key, best first: verdict, then less repetition, then higher mean log-probability."""
        return (VERDICTS.index(self.verdict), self.repetition or 0.0, -(self.mean_logprob or 0.0))


def words(text: str) -> list[str]:
    """Lower-cased, accent-folded words of text with markup (HTML tags, markdown symbols) left out."""
    text = unicodedata.normalize("NFKC", TAG.sub(" ", text)).lower()
    return WORD.findall(text)


def loop_mask(tokens: list[str], repeats: int = REPEATS, min_words: int = LOOP_WORDS, max_unit: int = MAX_UNIT) -> list[bool]:
    """True for every word inside a run of one unit repeated >= `repeats` times covering >= `min_words` words."""
    n = len(tokens)
    inside = [False] * n
    for unit in range(1, min(max_unit, n // repeats) + 1):
        i = 0
        while i + unit * repeats <= n:
            if tokens[i + unit] != tokens[i]:  # no repeat can start here: skip the slice compares
                i += 1
                continue
            k = 1
            while i + (k + 1) * unit <= n and tokens[i + k * unit:i + (k + 1) * unit] == tokens[i:i + unit]:
                k += 1
            if k >= repeats and k * unit >= min_words:
                for j in range(i, i + k * unit):
                    inside[j] = True
                i += k * unit
            else:
                i += 1
    return inside


def repetition_score(text: str) -> float:
    """Share of the text's words inside loops (0: none, 1: all)."""
    tokens = words(text)
    if not tokens:
        return 0.0
    return round(sum(loop_mask(tokens)) / len(tokens), 4)


def text_layer_agreement(ocr_text: str, layer_text: str | None) -> tuple[float, float] | None:
    """(recall, precision) of the OCR words against the page's text-layer words, as multisets (reading order
    ignored); None without a usable layer."""
    if layer_text is None:
        return None
    layer = Counter(words(layer_text))
    if sum(layer.values()) < MIN_LAYER_WORDS:
        return None
    ocr = Counter(words(ocr_text))
    common = sum((ocr & layer).values())
    recall = common / sum(layer.values())
    precision = common / sum(ocr.values()) if ocr else 0.0
    return round(recall, 4), round(precision, 4)


def assess(markdown: str, status: str, signals: dict | None = None, text_layer: str | None = None,
           thresholds: Thresholds = Thresholds()) -> Quality:
    """The page's signals and verdict. `signals`: the engine's (mean_logprob, min_logprob, guard_hits)."""
    signals = signals or {}
    q = Quality(mean_logprob=_number(signals.get("mean_logprob")), min_logprob=_number(signals.get("min_logprob")),
                guard_hits=signals.get("guard_hits"), repetition=repetition_score(markdown))
    agreement = text_layer_agreement(markdown, text_layer)
    if agreement is not None:
        q.text_layer_recall, q.text_layer_precision = agreement
    t, bad, suspect = thresholds, [], []
    if q.repetition >= t.bad_repetition:
        bad.append(f"repetition {q.repetition:.2f}")
    elif q.repetition >= t.suspect_repetition:
        suspect.append(f"repetition {q.repetition:.2f}")
    if q.text_layer_recall is not None:
        if q.text_layer_recall < t.bad_recall:
            bad.append(f"text-layer recall {q.text_layer_recall:.2f}")
        elif min(q.text_layer_recall, q.text_layer_precision) < t.suspect_agreement:
            suspect.append(f"text-layer agreement {q.text_layer_recall:.2f}/{q.text_layer_precision:.2f}")
    if q.guard_hits is not None and q.guard_hits >= t.suspect_guard_hits:
        suspect.append(f"guard hits {q.guard_hits}")
    if q.mean_logprob is not None and q.mean_logprob < t.suspect_mean_logprob:
        suspect.append(f"mean log-probability {q.mean_logprob:.2f}")
    if status == "truncated":  # the token limit cut it: most often a loop the guard did not stop
        suspect.append("truncated")
    if status in ("error", "empty"):
        bad.append(status)
    q.verdict = "bad" if bad else "suspect" if suspect else "good"
    q.reasons = tuple(bad + suspect)
    return q


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def flat(quality: Quality | None) -> dict:
    """`ocr_quality_<field>` metadata (None values kept, reasons joined)."""
    if quality is None:
        return {}
    d = quality.to_dict()
    d["reasons"] = "; ".join(d["reasons"])
    return {f"ocr_quality_{k}": v for k, v in d.items()}
