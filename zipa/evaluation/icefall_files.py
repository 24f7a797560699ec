"""The result files of a decoded test set, as icefall and ZIPA name and lay them out.

Files (names as ZIPA's ``save_results``; see :func:`save_results`)
------------------------------------------------------------------
- ``recogs-{test_set}-{suffix}.txt`` (:func:`store_recogs`): icefall's ``store_transcripts``
  format, sorted by cut id, the units as Python lists::

      cut-1:\tref=['a', 'b', 'c', 'd']
      cut-1:\thyp=['a', 'x', 'c', 'd', 'e']

  ZIPA's ``scripts/evaluate.py`` reads these files unchanged.
- ``errs-{test_set}-{suffix}.txt`` (:func:`write_errs`): icefall's ``write_error_stats`` layout
  with "WER" read as "PER" and "word" as "phone": ``%PER = 50.00``, an ``Errors:`` line, the
  per-utterance alignments (``a (b->x) c d (*->e)``; successive errors merged as icefall does),
  then ``SUBSTITUTIONS: count ref -> hyp``, ``DELETIONS: count ref``, ``INSERTIONS: count hyp``
  and ``PER-PHONE STATS: phone  corr tot_errs count_in_ref count_in_hyp`` (icefall's sort
  orders). Like icefall it logs ``[name] %PER 50.00% [2 / 4, 1 ins, 0 del, 1 sub ]``.
- ``wer-summary-{test_set}-{suffix}.txt``: ``settings\\tPER`` then one line per decoding key.
- ``metrics-{test_set}-{suffix}.json`` (:func:`write_metrics_json`): :func:`compute_metrics`.

All files are written atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import ast
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from zipa.evaluation.metrics import (
    ERR,
    EvaluationResult,
    ResultLike,
    align,
    compute_metrics,
    phone_units,
    sorted_results,
)
from zipa.utils.atomic import open_atomic

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------------------------
# recogs


def store_recogs(path: PathLike, results: Iterable[ResultLike], unit: str = "char") -> None:
    """icefall's ``store_transcripts`` format, sorted by cut id, units as Python lists."""
    lines = []
    for r in sorted_results(results):
        lines.append(f"{r.cut_id}:\tref={phone_units(r.ref, unit)}\n")
        lines.append(f"{r.cut_id}:\thyp={phone_units(r.hyp, unit)}\n")
    with open_atomic(path) as f:
        f.writelines(lines)


def read_recogs(path: PathLike) -> list[EvaluationResult]:
    """Read a recogs file back (ours or icefall's); the language is not stored there."""
    refs: dict[str, Any] = {}
    hyps: dict[str, Any] = {}
    order: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            head, sep, body = line.partition("\t")
            if not sep or not head.endswith(":") or body[:4] not in ("ref=", "hyp="):
                raise ValueError(f"{path}:{n}: not a recogs line: {line[:80]!r}")
            cut_id = head[:-1]
            try:
                value = ast.literal_eval(body[4:])
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{path}:{n}: cannot parse {body[4:][:60]!r}: {exc}") from None
            if cut_id not in refs and cut_id not in hyps:
                order.append(cut_id)
            (refs if body.startswith("ref=") else hyps)[cut_id] = value
    missing = [c for c in order if c not in refs or c not in hyps]
    if missing:
        raise ValueError(f"{path}: cut(s) without both ref= and hyp= lines: {missing[:5]}")
    return [EvaluationResult(c, refs[c], hyps[c]) for c in order]


# ---------------------------------------------------------------------------------------------
# errs


def _merge_successive_errors(ali: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """icefall's display of one alignment: runs of errors merged into one ``(a b->x y)``."""
    groups = [[[x], [y]] for x, y in ali]
    for i in range(len(groups) - 1):
        if groups[i][0] != groups[i][1] and groups[i + 1][0] != groups[i + 1][1]:
            groups[i + 1][0] = groups[i][0] + groups[i + 1][0]
            groups[i + 1][1] = groups[i][1] + groups[i + 1][1]
            groups[i] = [[], []]
    out = []
    for x, y in groups:
        x = [a for a in x if a != ERR]
        y = [a for a in y if a != ERR]
        if not x and not y:
            continue
        out.append((" ".join(x) if x else ERR, " ".join(y) if y else ERR))
    return out


def _per_value(errors: int, ref_len: int) -> float:
    if ref_len == 0:
        return 0.0 if errors == 0 else math.inf
    return float("%.2f" % (100.0 * errors / ref_len))


def format_errs(
    test_set_name: str, results: Iterable[ResultLike], unit: str = "char", enable_log: bool = True
) -> tuple[str, float]:
    """The errs file's text and the PER (percent, 2 decimals), as icefall's
    ``write_error_stats`` computes them (results sorted by cut id first, as ZIPA does)."""
    subs: dict[tuple[str, str], int] = defaultdict(int)
    ins: dict[str, int] = defaultdict(int)
    dels: dict[str, int] = defaultdict(int)
    # per phone: corr, ref_sub, hyp_sub, ins, dels
    phones: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    num_corr = 0
    ref_len = 0
    utt_lines = []
    for r in sorted_results(results):
        ref, hyp = phone_units(r.ref, unit), phone_units(r.hyp, unit)
        ref_len += len(ref)
        ali = align(ref, hyp)
        for rp, hp in ali:
            if rp == ERR:
                ins[hp] += 1
                phones[hp][3] += 1
            elif hp == ERR:
                dels[rp] += 1
                phones[rp][4] += 1
            elif rp != hp:
                subs[(rp, hp)] += 1
                phones[rp][1] += 1
                phones[hp][2] += 1
            else:
                phones[rp][0] += 1
                num_corr += 1
        shown = " ".join(a if a == b else f"({a}->{b})" for a, b in _merge_successive_errors(ali))
        utt_lines.append(f"{r.cut_id}:\t{shown}")

    sub_errs, ins_errs, del_errs = sum(subs.values()), sum(ins.values()), sum(dels.values())
    tot_errs = sub_errs + ins_errs + del_errs
    per = _per_value(tot_errs, ref_len)
    if enable_log:
        logging.info(
            f"[{test_set_name}] %PER {per:.2f}% [{tot_errs} / {ref_len}, {ins_errs} ins, "
            f"{del_errs} del, {sub_errs} sub ]"
        )
    out = [
        f"%PER = {per:.2f}",
        f"Errors: {ins_errs} insertions, {del_errs} deletions, {sub_errs} substitutions, "
        f"over {ref_len} reference phones ({num_corr} correct)",
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
        "DELETIONS:, INSERTIONS:, PER-PHONE STATS:",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)  ",
        *utt_lines,
        "",
        "SUBSTITUTIONS: count ref -> hyp",
    ]
    for count, (rp, hp) in sorted(((v, k) for k, v in subs.items()), reverse=True):
        out.append(f"{count}   {rp} -> {hp}")
    out += ["", "DELETIONS: count ref"]
    for count, rp in sorted(((v, k) for k, v in dels.items()), reverse=True):
        out.append(f"{count}   {rp}")
    out += ["", "INSERTIONS: count hyp"]
    for count, hp in sorted(((v, k) for k, v in ins.items()), reverse=True):
        out.append(f"{count}   {hp}")
    out += ["", "PER-PHONE STATS: phone  corr tot_errs count_in_ref count_in_hyp"]
    for _, phone, c in sorted(((sum(v[1:]), k, v) for k, v in phones.items()), reverse=True):
        corr, ref_sub, hyp_sub, n_ins, n_dels = c
        out.append(
            f"{phone}   {corr} {ref_sub + hyp_sub + n_ins + n_dels} {corr + ref_sub + n_dels} {corr + hyp_sub + n_ins}"
        )
    return "\n".join(out) + "\n", per


def write_errs(
    path: PathLike,
    test_set_name: str,
    results: Iterable[ResultLike],
    unit: str = "char",
    enable_log: bool = True,
) -> float:
    """Write the icefall-style errs file (see :func:`format_errs`) atomically; return the PER
    in percent (2 decimals, as icefall returns the WER)."""
    text, per = format_errs(test_set_name, results, unit, enable_log)
    with open_atomic(path) as f:
        f.write(text)
    return per


def write_metrics_json(path: PathLike, metrics: Mapping[str, Any]) -> None:
    """The metrics as indented JSON, atomically."""
    with open_atomic(path) as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def write_per_summary(path: PathLike, pers: Mapping[str, float]) -> None:
    """ZIPA's ``wer-summary`` file: ``settings\\tPER``, then one line per key, best first."""
    lines = ["settings\tPER"] + [f"{k}\t{v}" for k, v in sorted(pers.items(), key=lambda kv: kv[1])]
    with open_atomic(path) as f:
        f.write("\n".join(lines) + "\n")


def result_stem(test_set_name: str, suffix: str, key: str | None = None) -> str:
    """``{test_set}-{suffix}`` as ZIPA names its files (``recogs-{stem}.txt`` ...);
    ``{test_set}-{key}-{suffix}`` when several decoding keys share a folder."""
    return f"{test_set_name}-{key}-{suffix}" if key else f"{test_set_name}-{suffix}"


def save_results(
    res_dir: PathLike,
    test_set_name: str,
    suffix: str,
    results_by_key: Mapping[str, Sequence[ResultLike]],
    languages: Mapping[str, str] | None = None,
    unit: str = "char",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """What a decode script writes for one test set: for each decoding key (e.g.
    ``ctc-greedy-search``) the recogs, errs and metrics files, then the PER summary. With one
    key the names are ZIPA's (``recogs-{test_set}-{suffix}.txt``); with several the key is part
    of each name so that they do not overwrite each other. ``extra``: more keys for each
    metrics file (``zipa evaluate`` adds its normalisation report and failed files). Returns
    ``{key: metrics}``."""
    res_dir = Path(res_dir)
    several = len(results_by_key) > 1
    pers: dict[str, float] = {}
    out: dict[str, dict[str, Any]] = {}
    for key, results in results_by_key.items():
        results = sorted_results(results)
        stem = result_stem(test_set_name, suffix, key if several else None)
        store_recogs(res_dir / f"recogs-{stem}.txt", results, unit)
        errs_path = res_dir / f"errs-{stem}.txt"
        pers[key] = write_errs(errs_path, f"{test_set_name}-{key}", results, unit)
        metrics = compute_metrics(results, languages, unit)
        metrics = {"test_set": test_set_name, "decoding": key, "settings": suffix, **metrics, **(extra or {})}
        write_metrics_json(res_dir / f"metrics-{stem}.json", metrics)
        out[key] = metrics
    write_per_summary(res_dir / f"wer-summary-{test_set_name}-{suffix}.txt", pers)
    return out
