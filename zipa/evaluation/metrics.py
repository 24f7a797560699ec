"""Scoring of phone recognition output: PER and PFER, overall, per language and per speaker.

What ``zipformer_crctc/ctc_decode.py`` (and the transducer decoder) compute per test set, and the
table ``run.sh`` prints at the end. Everything here is plain Python over strings; no argparse.

Units ("phones")
----------------
ZIPA scores PER over the pieces of its sentencepiece tokenizer: in its ``ctc_decode.py``
(``decode_dataset``) the reference is ``bpe_model.id_to_piece(bpe_model.tokenize(ref_text))[1:]``
(the ``[1:]`` drops the leading word boundary ``▁``) and the hypothesis likewise, and icefall's
``write_error_stats`` aligns those piece lists. The ZIPA tokenizer has single-character pieces
only, and ZIPA's training text has its spaces removed (``scripts/generate_training_data.py``:
``text.replace(" ", "")``), so ZIPA's PER is a **character-level** error rate over the IPA
string without word boundaries: diacritics and modifier letters (``ː ʰ ʲ ̃ ̩ ...``) are units of
their own, exactly as the model emits them. :func:`phone_units` with ``unit="char"`` (the default
everywhere) does this: whitespace and ``▁`` are dropped, then every character is one unit.
``unit="segment"`` is offered for analysis: a base character together with the diacritics and
modifier letters that follow it (and a tie-barred second letter) is one unit.

References and hypotheses may be strings (``"wɜːld hɛloʊ"``), lists of words
(``['wɜːld', 'hɛloʊ']``, what icefall decoders produce) or lists of phones; all are joined with
no separator and re-split into units. Text is scored as given: normalise it with
:func:`zipa.text.ipa.normalize_ipa` first (the decode scripts do).

PER (``write_errs``, ``compute_metrics``)
-----------------------------------------
Corpus level, as icefall's ``write_error_stats``: ``100 * (ins + del + sub) / total reference
units``, from a Levenshtein alignment with unit costs whose backtrace prefers match/substitution,
then deletion over insertion on ties (kaldialign's ``LevenshteinAlignment``, which icefall uses).

PFER (``pfer``, ``compute_metrics``)
------------------------------------
As ZIPA's ``scripts/evaluate.py`` (``compute_pfer``): per utterance,
``panphon.distance.Distance().feature_edit_distance(hyp, ref)`` over the joined strings with
ASCII ``g`` replaced by ``ɡ`` (panphon knows only U+0261; ZIPA's inventory spells it ``g``). It is
**not** normalised by length: panphon's unweighted costs already divide by the number of
features (24): substituting segments costs ``sum(|f1 - f2| / 2) / 24`` (``p``/``b`` differ in
voicing only: 1/24), inserting or deleting one costs ``(#specified + 0.5 * #unspecified) / 24``
(``p``: 22/24). Over the utterances ZIPA reports ``PFER mean``, ``PFER median``, ``PFER IQR``
(75th minus 25th percentile, numpy's linear interpolation) and ``PFER std`` (population,
``np.std``), each rounded to 3 decimals; the same keys are used here. Before scoring, stress
marks, syllable breaks ``.``, tone marks and digits and whitespace are removed (panphon drops
most of them silently anyway; on ZIPA-inventory text this is a no-op). The distance is computed
by :func:`feature_edit_distance`, panphon's recurrence with its own feature vectors and costs,
vectorised: it returns exactly panphon's value (tested), many times faster on long utterances.

The files a decode script writes from these numbers are in :mod:`zipa.evaluation.icefall_files`.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import numpy as np

from zipa.text.ipa import DIACRITICS, STRESS_MARKS, TONE_MARKS

PathLike = Union[str, Path]

__all__ = [
    "EvaluationResult",
    "EditCounts",
    "ResultLike",
    "sorted_results",
    "UNITS",
    "phone_units",
    "align",
    "edit_counts",
    "get_distance",
    "pfer_text",
    "feature_edit_distance",
    "pfer",
    "pfer_stats",
    "compute_metrics",
    "summarise_table",
]

WORD_BOUNDARY = "\u2581"  # ▁, the tokenizer's word-boundary piece
ERR = "*"  # icefall's epsilon in alignments
UNITS = ("char", "segment")
TIE_BARS = "\u0361\u035c"


@dataclass(frozen=True)
class EvaluationResult:
    """One decoded utterance. ``ref``/``hyp``: a string, or a list of words or phones (see the
    module docstring); ``language``, ``speaker``: when known (for the per-language and
    per-speaker splits)."""

    cut_id: str
    ref: str | Sequence[str]
    hyp: str | Sequence[str]
    language: str | None = None
    speaker: str | None = None


ResultLike = Union[EvaluationResult, tuple[Any, ...]]


def _as_result(item: ResultLike) -> EvaluationResult:
    """Accept :class:`EvaluationResult` or icefall's ``(cut_id, ref, hyp)`` tuples (optionally
    with a fourth element, the language, and a fifth, the speaker)."""
    if isinstance(item, EvaluationResult):
        return item
    if isinstance(item, (tuple, list)) and len(item) in (3, 4, 5):
        return EvaluationResult(str(item[0]), *item[1:])
    raise TypeError(
        f"expected EvaluationResult or (cut_id, ref, hyp[, language[, speaker]]), got "
        f"{type(item).__name__}: {item!r:.80}"
    )


def sorted_results(results: Iterable[ResultLike]) -> list[EvaluationResult]:
    return sorted((_as_result(r) for r in results), key=lambda r: r.cut_id)


# ---------------------------------------------------------------------------------------------
# Units


def _joined(text: str | Sequence[str]) -> str:
    if isinstance(text, str):
        s = text
    else:
        s = "".join(str(t) for t in text)
    return "".join(ch for ch in s if not ch.isspace() and ch != WORD_BOUNDARY)


def _is_modifier(ch: str) -> bool:
    return ch in DIACRITICS or unicodedata.category(ch) == "Mn"


def phone_units(text: str | Sequence[str], unit: str = "char") -> list[str]:
    """The units PER is counted over. ``"char"`` (ZIPA's): every character of the text without
    whitespace and ``▁``. ``"segment"``: a base character plus the modifier letters
    (``ʰ ʲ ʷ ʼ ː ˞ ˠ ˤ``) and combining marks after it; a tie bar also joins the next letter."""
    s = _joined(text)
    if unit == "char":
        return list(s)
    if unit != "segment":
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    segs: list[str] = []
    join_next = False
    for ch in s:
        if segs and (join_next or _is_modifier(ch)):
            segs[-1] += ch
            join_next = False
        else:
            segs.append(ch)
        if ch in TIE_BARS:
            join_next = True
    return segs


# ---------------------------------------------------------------------------------------------
# Alignment


@dataclass(frozen=True)
class EditCounts:
    corr: int
    ins: int
    dels: int
    subs: int

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def ref_len(self) -> int:
        return self.corr + self.dels + self.subs

    @property
    def hyp_len(self) -> int:
        return self.corr + self.ins + self.subs


def align(ref: Sequence[str], hyp: Sequence[str], eps: str = ERR) -> list[tuple[str, str]]:
    """Levenshtein alignment of two unit sequences (unit costs) as ``(ref, hyp)`` pairs, ``eps``
    marking an insertion (left) or a deletion (right). Ties resolve as kaldialign's (used by
    icefall): match/substitution unless strictly worse, then deletion over insertion."""
    ref, hyp = list(ref), list(hyp)
    if eps in ref or eps in hyp:
        raise ValueError(f"the epsilon symbol {eps!r} occurs in the sequences")
    M, N = len(ref), len(hyp)
    e = [[0] * (N + 1) for _ in range(M + 1)]
    for n in range(N + 1):
        e[0][n] = n
    for m in range(1, M + 1):
        row, prev = e[m], e[m - 1]
        row[0] = prev[0] + 1
        r = ref[m - 1]
        for n in range(1, N + 1):
            row[n] = min(prev[n - 1] + (r != hyp[n - 1]), prev[n] + 1, row[n - 1] + 1)
    out: list[tuple[str, str]] = []
    m, n = M, N
    while m or n:
        if m == 0:
            out.append((eps, hyp[n - 1]))
            n -= 1
        elif n == 0:
            out.append((ref[m - 1], eps))
            m -= 1
        else:
            sub = e[m - 1][n - 1] + (ref[m - 1] != hyp[n - 1])
            dele = e[m - 1][n] + 1
            ins = e[m][n - 1] + 1
            if sub < min(dele, ins):
                out.append((ref[m - 1], hyp[n - 1]))
                m, n = m - 1, n - 1
            elif dele < ins:
                out.append((ref[m - 1], eps))
                m -= 1
            else:
                out.append((eps, hyp[n - 1]))
                n -= 1
    out.reverse()
    return out


def _counts(ali: Sequence[tuple[str, str]], eps: str = ERR) -> EditCounts:
    corr = ins = dels = subs = 0
    for r, h in ali:
        if r == eps:
            ins += 1
        elif h == eps:
            dels += 1
        elif r != h:
            subs += 1
        else:
            corr += 1
    return EditCounts(corr, ins, dels, subs)


def edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> EditCounts:
    """Correct/insertion/deletion/substitution counts of :func:`align`."""
    return _counts(align(ref, hyp))


# ---------------------------------------------------------------------------------------------
# PFER

_PFER_STRIP = frozenset(STRESS_MARKS + TONE_MARKS + "." + WORD_BOUNDARY)


@lru_cache(maxsize=1)
def get_distance():
    """The process's one ``panphon.distance.Distance()`` (building one takes about a second)."""
    import panphon.distance

    return panphon.distance.Distance()


def pfer_text(text: str | Sequence[str]) -> str:
    """The string panphon scores: joined, whitespace, stress, ``.``, tones and ``▁`` removed,
    ASCII ``g`` as ``ɡ`` (ZIPA's ``evaluate.py`` does the last)."""
    s = text if isinstance(text, str) else "".join(str(t) for t in text)
    s = "".join(ch for ch in s if not ch.isspace() and ch not in _PFER_STRIP)
    return s.replace("g", "\u0261")


def _vectors(distance, s: str) -> np.ndarray:
    vecs = distance.fm.word_to_vector_list(s, numeric=True)
    width = len(distance.fm.names)
    return np.asarray(vecs, dtype=np.float64).reshape(len(vecs), width)


def feature_edit_distance(source: str, target: str, distance=None) -> float:
    """panphon's ``Distance.feature_edit_distance(source, target)``: its feature vectors, its
    unweighted costs and its recurrence, with the costs computed by numpy (identical values:
    the sums are of halves, exact in floating point)."""
    distance = distance if distance is not None else get_distance()
    a, b = _vectors(distance, source), _vectors(distance, target)
    n_feat = a.shape[1] if a.size else b.shape[1] if b.size else len(distance.fm.names)
    del_cost = (np.where(a == 0, 0.5, 1.0).sum(axis=1) / n_feat).tolist()
    ins_cost = (np.where(b == 0, 0.5, 1.0).sum(axis=1) / n_feat).tolist()
    sub_cost: list[list[float]] = [[] for _ in range(len(a))]
    if len(a) and len(b):
        sub = (np.abs(a[:, None, :] - b[None, :, :]) / 2).sum(axis=2) / n_feat
        sub_cost = sub.tolist()
    n, m = len(a), len(b)
    prev = [0.0] * (m + 1)
    for j in range(1, m + 1):
        prev[j] = prev[j - 1] + ins_cost[j - 1]
    for i in range(1, n + 1):
        cur = [prev[0] + del_cost[i - 1]] + [0.0] * m
        dc = del_cost[i - 1]
        srow = sub_cost[i - 1]
        for j in range(1, m + 1):
            cur[j] = min(prev[j] + dc, prev[j - 1] + srow[j - 1], cur[j - 1] + ins_cost[j - 1])
        prev = cur
    return float(prev[m])


def pfer(hyp: str | Sequence[str], ref: str | Sequence[str], distance=None) -> float:
    """One utterance's PFER as ZIPA's ``compute_pfer``: ``feature_edit_distance(hyp, ref)`` on
    :func:`pfer_text` of each, not normalised by length."""
    return feature_edit_distance(pfer_text(hyp), pfer_text(ref), distance)


def pfer_stats(values: Sequence[float]) -> dict[str, float | None]:
    """ZIPA's summary: mean, median, IQR (q75 - q25), population std; 3 decimals. ``None`` for
    an empty list."""
    if len(values) == 0:
        return {"PFER mean": None, "PFER median": None, "PFER IQR": None, "PFER std": None}
    v = np.asarray(values, dtype=np.float64)
    q75, q25 = np.percentile(v, [75, 25])
    return {
        "PFER mean": round(float(np.mean(v)), 3),
        "PFER median": round(float(np.median(v)), 3),
        "PFER IQR": round(float(q75 - q25), 3),
        "PFER std": round(float(np.std(v)), 3),
    }


# ---------------------------------------------------------------------------------------------
# Metrics


def _block(counts: list[EditCounts], pfers: list[float]) -> dict[str, Any]:
    corr = sum(c.corr for c in counts)
    ins = sum(c.ins for c in counts)
    dels = sum(c.dels for c in counts)
    subs = sum(c.subs for c in counts)
    ref_len = corr + dels + subs
    errors = ins + dels + subs
    return {
        "num_utts": len(counts),
        "ref_phones": ref_len,
        "hyp_phones": corr + ins + subs,
        "corr": corr,
        "ins": ins,
        "del": dels,
        "sub": subs,
        "errors": errors,
        "PER": round(100.0 * errors / ref_len, 2) if ref_len else None,
        **pfer_stats(pfers),
    }


def compute_metrics(
    results: Iterable[ResultLike],
    languages: Mapping[str, str] | None = None,
    unit: str = "char",
    distance=None,
) -> dict[str, Any]:
    """PER (corpus level, percent, 2 decimals) and PFER statistics (ZIPA's), with the counts
    behind them, over all utterances (``"overall"``) and per language (``"per_language"``,
    sorted by code). An utterance's language is ``languages[cut_id]`` when given, else its
    result's ``language``; utterances with none count in ``"overall"`` only. When some
    results name a speaker, ``"per_speaker"`` holds the same blocks per speaker (sorted)."""
    distance = distance if distance is not None else get_distance()
    counts: list[EditCounts] = []
    pfers: list[float] = []
    by_lang: dict[str, list[int]] = defaultdict(list)
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(sorted_results(results)):
        counts.append(edit_counts(phone_units(r.ref, unit), phone_units(r.hyp, unit)))
        pfers.append(pfer(r.hyp, r.ref, distance))
        lang = languages.get(r.cut_id, r.language) if languages is not None else r.language
        if lang:
            by_lang[lang].append(i)
        if r.speaker:
            by_speaker[r.speaker].append(i)

    def blocks(groups: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
        return {name: _block([counts[i] for i in idx], [pfers[i] for i in idx]) for name, idx in sorted(groups.items())}

    metrics = {"unit": unit, "overall": _block(counts, pfers), "per_language": blocks(by_lang)}
    if by_speaker:
        metrics["per_speaker"] = blocks(by_speaker)
    return metrics


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def summarise_table(metrics_by_test_set: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: one row per test set (its ``"overall"`` block) followed by indented
    rows per language (and per speaker, ``speaker NAME``, when the metrics have them), with
    utterance and phone counts, PER % with ins/del/sub, and PFER mean, median, IQR and std."""
    header = ("test set", "utts", "phones", "PER%", "ins", "del", "sub", "PFER mean", "median", "IQR", "std")
    rows = []
    for name, metrics in metrics_by_test_set.items():
        blocks = [(name, metrics["overall"])]
        blocks += [(f"  {lang}", b) for lang, b in metrics.get("per_language", {}).items()]
        blocks += [(f"  speaker {spk}", b) for spk, b in metrics.get("per_speaker", {}).items()]
        for label, b in blocks:
            rows.append(
                (
                    label,
                    str(b["num_utts"]),
                    str(b["ref_phones"]),
                    _fmt(b["PER"], ".2f"),
                    str(b["ins"]),
                    str(b["del"]),
                    str(b["sub"]),
                    _fmt(b["PFER mean"], ".3f"),
                    _fmt(b["PFER median"], ".3f"),
                    _fmt(b["PFER IQR"], ".3f"),
                    _fmt(b["PFER std"], ".3f"),
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"
