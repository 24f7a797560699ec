"""Score a model on references: what `zipa evaluate` and `model.evaluate(pairs)` run.

references (:mod:`zipa.evaluation.references`) -> each reference normalised to the model's
inventory exactly as training labels are (:func:`zipa.text.ipa.normalize_ipa`, with ZIPA's
``--remove-diacritics`` when asked; what it changed or dropped is counted per symbol) -> the
audio decoded through the one path, ``Transcriber.transcribe_files`` (audio that is not a file
- arrays, shar recordings - is written to a temporary folder first, 512 utterances at a time)
-> the hypothesis is the transcript ``zipa transcribe`` prints -> the same scoring and files as
``ctc_decode.py``: :func:`zipa.evaluation.icefall_files.save_results` (``recogs-*``, ``errs-*``,
``metrics-*.json``, ``wer-summary-*``) or, without an output folder,
:func:`zipa.evaluation.metrics.compute_metrics`.

With ``remove_diacritics`` the hypotheses are stripped the same way (a no-op for a model
trained with ``--remove-diacritics``, which emits none), so that both sides are scored on the
same symbols.

A reference that cannot be scored (no reference, unreadable or too short audio) is a failure:
it is listed in the metrics (``"failed"``) and left out of the scores.
"""

from __future__ import annotations

import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Union

from zipa.decoding.options import DecodingOptions
from zipa.evaluation.metrics import EvaluationResult
from zipa.evaluation.references import Reference

PathLike = Union[str, Path]
CHUNK = 512  # references decoded per call of transcribe_files (its own group size)
SAMPLING_RATE = 16000

# `zipa evaluate --decoding` -> the decoding keys of ctc_decode.py / decode.py, which name the files.
DECODING_KEYS = {
    (True, "greedy"): "ctc-greedy-search",
    (True, "beam"): "prefix-beam-search",
    (False, "greedy"): "greedy_search",
    (False, "beam"): "modified_beam_search",
}


def decoding_key(uses_ctc: bool, decoding: str) -> str:
    """The name ``ctc_decode.py``/``decode.py`` give this decoding (``ctc-greedy-search``...)."""
    try:
        return DECODING_KEYS[(bool(uses_ctc), decoding)]
    except KeyError:
        raise ValueError(f"decoding must be greedy or beam, got {decoding!r}") from None


# ---------------------------------------------------------------------------------------------
# What normalisation did


@dataclass
class NormalizationReport:
    """Per symbol, what normalising the references changed: ``mapped`` (``"ɡ→g"``: an
    equivalent spelling in the inventory), ``removed`` (stress, tone, syllable marks...; with
    ``remove_diacritics`` the diacritics), ``boundaries`` (punctuation that became a word
    boundary) and ``dropped`` (outside the inventory: lost)."""

    remove_diacritics: bool = False
    references: int = 0
    changed: int = 0
    mapped: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    boundaries: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def normalize(self, text: str) -> str:
        """``text`` normalised as training labels are (`zipa.data.labels.LabelEncoder`), counted."""
        from zipa.text.ipa import normalize_ipa_changes

        result, dropped, changes = normalize_ipa_changes(text, remove_diacritics=self.remove_diacritics)
        self.references += 1
        self.changed += bool(dropped or changes)
        self.dropped.update(dropped)
        for (symbol, replacement), n in changes.items():
            if replacement == "":
                self.removed[symbol] += n
            elif replacement == " ":
                self.boundaries[symbol] += n
            else:
                self.mapped[f"{symbol}→{replacement}"] += n
        return result

    def to_dict(self) -> dict[str, Any]:
        """For the metrics JSON: counts, most frequent first."""

        def ordered(counter: Counter) -> dict[str, int]:
            return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

        return {
            "remove_diacritics": self.remove_diacritics,
            "references": self.references,
            "changed_references": self.changed,
            "mapped": ordered(self.mapped),
            "removed": ordered(self.removed),
            "boundaries": ordered(self.boundaries),
            "dropped": ordered(self.dropped),
        }

    def format(self) -> str:
        """A few lines for the terminal."""
        head = (
            f"reference normalisation{' (with --remove-diacritics)' if self.remove_diacritics else ''}: "
            f"{self.changed} of {self.references} references changed"
        )
        lines = [head]
        for title, counter in (
            ("mapped to the inventory", self.mapped),
            ("removed", self.removed),
            ("became word boundaries", self.boundaries),
            ("dropped (not in the inventory)", self.dropped),
        ):
            if counter:
                items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
                lines.append(f"  {title}: " + ", ".join(f"{show_symbol(s)} ×{n}" for s, n in items))
        return "\n".join(lines)


def show_symbol(symbol: str) -> str:
    """A symbol readable on its own: combining marks on a dotted circle, with code points
    (``◌́ U+0301``) for anything that is not a plain letter."""
    shown = "".join("\u25cc" + ch if unicodedata.combining(ch) else ch for ch in symbol)
    if all(unicodedata.category(ch) in ("Ll", "Lu", "Lo") or ch == "→" for ch in symbol):
        return shown
    points = " ".join(f"U+{ord(ch):04X}" for ch in symbol if ch != "→")
    return f"{shown} ({points})"


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Failure:
    id: str
    error: str


@dataclass
class EvaluationRun:
    """What :func:`run_evaluation` decoded: the scored results, the failures, the
    normalisation report and the decoding key (``ctc-greedy-search``...)."""

    key: str
    results: list[EvaluationResult]
    failures: list[Failure]
    normalization: NormalizationReport

    def extra(self) -> dict[str, Any]:
        """The metrics keys beyond ``compute_metrics``'s: normalisation and failures."""
        return {
            "normalization": self.normalization.to_dict(),
            "num_failed": len(self.failures),
            "failed": [{"id": f.id, "error": f.error} for f in self.failures],
        }


def run_evaluation(
    transcriber,
    references: Iterable[Reference],
    options: DecodingOptions | None = None,
    progress: Any = False,
    total: int | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> EvaluationRun:
    """Normalise, decode and pair every reference (see the module docstring).

    ``transcriber``: a `zipa.inference.transcriber.Transcriber`; ``options`` (a
    `zipa.decoding.options.DecodingOptions`) go to its ``transcribe_files``, and
    ``options.remove_diacritics`` applies to references and hypotheses;
    ``progress`` as there (a `Progress`, a mode, True/False/None;
    ``total`` is the number of references when ``references`` has no length).
    ``on_failure`` is called with each failure as it happens.
    """
    from zipa.text.ipa import remove_diacritics as strip_diacritics
    from zipa.utils.progress import Progress

    options = options if options is not None else DecodingOptions()
    remove_diacritics = options.remove_diacritics
    key = decoding_key(transcriber.uses_ctc, options.decoding)
    report = NormalizationReport(remove_diacritics)
    results: list[EvaluationResult] = []
    failures: list[Failure] = []
    if total is None:
        total = len(references) if hasattr(references, "__len__") else 0  # type: ignore[arg-type]
    reporter = Progress.make(progress, total, desc="zipa evaluate")

    def fail(ref: Reference, error: str) -> None:
        failures.append(Failure(ref.id, error))
        if on_failure is not None:
            on_failure(failures[-1])

    try:
        todo = iter(references)
        while True:
            chunk = list(islice(todo, CHUNK))
            if not chunk:
                break
            scored: list[tuple[Reference, str]] = []
            for ref in chunk:
                text = report.normalize(ref.text) if ref.text else ""
                if ref.error is not None:
                    fail(ref, ref.error)
                elif not text:
                    fail(ref, f"{ref.id}: the reference is empty after normalisation ({ref.text!r})")
                else:
                    scored.append((ref, text))
            reporter.file_done(len(chunk) - len(scored))
            with tempfile.TemporaryDirectory(prefix="zipa-evaluate-") as tmp:
                paths, kept = [], []
                for k, (ref, text) in enumerate(scored):
                    try:
                        paths.append(_audio_file(ref, Path(tmp) / f"{k:06d}.wav"))
                    except Exception as e:  # unreadable array or shar recording: this one fails
                        fail(ref, f"{ref.id}: {e}")
                        reporter.file_done()
                        continue
                    kept.append((ref, text))
                transcripts = transcriber.transcribe_files(paths, options, progress=reporter)
                for (ref, text), path, transcript in zip(kept, paths, transcripts):
                    if not transcript.ok:
                        error = transcript.error
                        if not isinstance(ref.audio, (str, Path)):
                            error = error.replace(str(path), ref.id)
                        fail(ref, error)
                        continue
                    hyp = transcriber.alignment(transcript.tokens, transcript.duration).text
                    if remove_diacritics:
                        hyp = strip_diacritics(hyp)
                    results.append(EvaluationResult(ref.id, text, hyp, ref.language, ref.speaker))
    finally:
        if reporter is not progress:
            reporter.close()
    return EvaluationRun(key, results, failures, report)


def _audio_file(ref: Reference, target: Path) -> Path:
    """The file to decode: ``ref.audio`` itself when it is a path, else its samples written to
    ``target`` (16 kHz float wav)."""
    if isinstance(ref.audio, (str, Path)):
        return Path(ref.audio)
    import soundfile as sf

    from zipa.audio.load import load_audio
    from zipa.utils.atomic import open_atomic

    if callable(ref.audio):
        samples = ref.audio()
    else:
        samples = load_audio(ref.audio, SAMPLING_RATE, source_rate=ref.sampling_rate, name=ref.id)
    with open_atomic(target, "wb") as f:
        sf.write(f, samples, SAMPLING_RATE, format="WAV", subtype="FLOAT")
    return target


def score(
    run: EvaluationRun,
    output_dir: PathLike | None = None,
    test_set: str = "test",
    settings: str = "evaluate",
    unit: str = "char",
) -> dict[str, Any]:
    """The metrics of a run, as ``ctc_decode.py`` computes them: ``{"test_set", "decoding",
    "settings", "unit", "overall", "per_language"[, "per_speaker"], "normalization",
    "num_failed", "failed"}``. With ``output_dir`` the icefall files are written there too
    (:func:`zipa.evaluation.icefall_files.save_results`: ``recogs-{test_set}-{settings}.txt``,
    ``errs-...``, ``metrics-....json``, ``wer-summary-...``)."""
    from zipa.evaluation.icefall_files import save_results
    from zipa.evaluation.metrics import compute_metrics

    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        saved = save_results(output_dir, test_set, settings, {run.key: run.results}, unit=unit, extra=run.extra())
        return saved[run.key]
    metrics = compute_metrics(run.results, unit=unit)
    return {"test_set": test_set, "decoding": run.key, "settings": settings, **metrics, **run.extra()}


def save_chart(metrics: dict[str, Any], output_dir: PathLike) -> Path:
    """The PER/PFER bar chart of ``metrics`` (:mod:`zipa.evaluation.charts`) beside the metrics
    file: ``chart-{test_set}-{settings}.png``. ``ImportError`` without matplotlib."""
    from zipa.evaluation.charts import save_metrics_chart
    from zipa.evaluation.icefall_files import result_stem

    stem = result_stem(metrics["test_set"], metrics["settings"])
    title = f"{metrics['test_set']}: {metrics['decoding']}, {metrics['settings']}"
    return save_metrics_chart(metrics, Path(output_dir) / f"chart-{stem}.png", title=title)


# ---------------------------------------------------------------------------------------------
# The Python API's pairs


def as_references(pairs: Iterable[Any], sampling_rate: int | None = None) -> Iterator[Reference]:
    """``model.evaluate``'s items as references: ``(audio, ipa)``, ``(audio, ipa, language)``,
    ``(audio, ipa, language, speaker)``, a dict with those keys (``audio``, ``ipa`` or
    ``text``, ``language``, ``speaker``, ``id``) or a `Reference`. Audio is a file or an array
    (at ``sampling_rate``, default 16 kHz); ids are the files' paths without suffix
    (``item-N`` for arrays), made unique."""
    seen: dict[str, int] = {}
    for n, item in enumerate(pairs):
        if isinstance(item, Reference):
            ref = item
        else:
            if isinstance(item, dict):
                audio = item["audio"]
                text = item.get("ipa", item.get("text"))
                language, speaker, given = item.get("language"), item.get("speaker"), item.get("id")
            elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 4:
                audio, text, language, speaker = (*item, None, None)[:4]
                given = None
            else:
                raise TypeError(f"item {n}: expected (audio, ipa[, language[, speaker]]), got {item!r:.80}")
            cut_id = given or (
                Path(audio).with_suffix("").as_posix() if isinstance(audio, (str, Path)) else f"item-{n}"
            )
            ref = Reference(
                str(cut_id),
                audio,
                text,
                language,
                speaker,
                sampling_rate,
                error=None if (text or "").strip() else f"item {n}: no reference",
            )
        if ref.id in seen:
            seen[ref.id] += 1
            ref = Reference(
                f"{ref.id}#{seen[ref.id]}", ref.audio, ref.text, ref.language, ref.speaker, ref.sampling_rate, ref.error
            )
        else:
            seen[ref.id] = 0
        yield ref
