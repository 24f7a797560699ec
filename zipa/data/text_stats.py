"""Phone statistics of IPA transcriptions, per language: what the model will see, what the
normalisation drops.

Sources: a TSV ``id<TAB>path<TAB>ipa[<TAB>lang]`` (``local/make_shar.py``'s input) or a shar
folder (only its ``cuts.*.jsonl.gz`` are read, never the audio). Each transcription goes through
:func:`zipa.text.ipa.normalize_ipa_report`; the statistics count the normalised phones (one per
inventory character, diacritics included, word boundaries excluded) and the out-of-inventory
symbols the normalisation had to drop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from zipa.text.ipa import inventory, normalize_ipa_report, phone_counts
from zipa.utils.tsv import read_tsv

PathLike = Union[str, Path]
UNKNOWN_LANGUAGE = "-"


@dataclass
class LanguageStats:
    utterances: int = 0
    words: int = 0
    phones: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    empty: int = 0  # transcriptions with nothing left after normalisation

    def add(self, text: str) -> None:
        norm, dropped = normalize_ipa_report(text)
        self.utterances += 1
        self.words += len(norm.split())
        self.phones.update(phone_counts([norm]))
        self.dropped.update(dropped)
        if not norm:
            self.empty += 1

    def to_json(self) -> dict:
        return {
            "utterances": self.utterances,
            "words": self.words,
            "phones": sum(self.phones.values()),
            "distinct_phones": len(self.phones),
            "empty_after_normalisation": self.empty,
            "phone_counts": dict(self.phones.most_common()),
            "dropped_symbols": {f"{ch} U+{ord(ch):04X}": c for ch, c in self.dropped.most_common()},
        }


def collect(items: Iterable[tuple[str, str]]) -> dict[str, LanguageStats]:
    """``(language, ipa)`` pairs -> statistics per language (and ``"all"``)."""
    stats: dict[str, LanguageStats] = {}
    total = LanguageStats()
    for lang, text in items:
        stats.setdefault(lang or UNKNOWN_LANGUAGE, LanguageStats()).add(text)
        total.add(text)
    out = dict(sorted(stats.items()))
    out["all"] = total
    return out


def tsv_items(path: PathLike, default_language: str | None = None) -> Iterator[tuple[str, str]]:
    """``(language, ipa)`` from ``id<TAB>path<TAB>ipa[<TAB>lang]`` lines."""
    for _, fields in read_tsv(path, 3, 4):
        lang = fields[3] if len(fields) == 4 and fields[3] else default_language
        yield lang or UNKNOWN_LANGUAGE, fields[2]


def shar_items(shar_dir: PathLike, default_language: str | None = None):
    """``(language, text)`` of every cut in a shar folder, reading only the cut manifests."""
    from lhotse import CutSet

    from zipa.data.shar import discover_shards

    cuts = CutSet.from_shar(fields=discover_shards(shar_dir, fields=()))
    for cut in cuts:
        for sup in cut.supervisions:
            yield (sup.language or default_language or UNKNOWN_LANGUAGE), (sup.text or "")


def format_report(stats: dict[str, LanguageStats], top: int = 10) -> str:
    """A short human-readable table."""
    inv = inventory()
    lines = [
        f"{'language':<10} {'utts':>7} {'words':>8} {'phones':>9} {'distinct':>8} "
        f"{'dropped':>8}  most frequent phones / dropped symbols"
    ]
    for lang, s in stats.items():
        frequent = " ".join(f"{ch}:{c}" for ch, c in s.phones.most_common(top))
        lines.append(
            f"{lang:<10} {s.utterances:>7} {s.words:>8} {sum(s.phones.values()):>9} "
            f"{len(s.phones):>8} {sum(s.dropped.values()):>8}  {frequent}"
        )
        if s.dropped:
            shown = " ".join(f"{ch!r}(U+{ord(ch):04X}):{c}" for ch, c in s.dropped.most_common(top))
            lines.append(f"{'':<10} dropped: {shown}")
        if s.empty:
            lines.append(f"{'':<10} {s.empty} transcriptions are empty after normalisation")
    unseen = sorted(inv - set(stats["all"].phones)) if "all" in stats else []
    lines.append(f"inventory symbols never seen: {len(unseen)} of {len(inv)}")
    return "\n".join(lines) + "\n"
