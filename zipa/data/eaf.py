"""ELAN annotation files (.eaf, EAF 3.0): read a tier's annotations, write time-aligned tiers.

`read_eaf` gives each tier's annotations with their times in seconds: those of its time slots
for time-aligned annotations (ALIGNABLE_ANNOTATION), those of the annotation referred to for
symbolic ones (REF_ANNOTATION); `Eaf.to_textgrid` turns them into interval tiers, so that an
ELAN tier of utterances is aligned as a TextGrid's (`zipa align --eaf FILE --eaf-tier NAME`).

`eaf_text` writes what ELAN opens: the media file linked (MEDIA_DESCRIPTOR, its absolute
``file://`` URL; ELAN asks where it went when it has moved), top-level time-aligned tiers, and dependent tiers of the
type ELAN calls "Symbolic Association" (one value per annotation of the parent tier, no times
of their own: how ELAN holds per-annotation properties such as confidences). Times are whole
milliseconds, ELAN's unit.

Written with the standard library, so that neither reading nor writing needs an extra package;
the tests check both against pympi-ling (the reader and writer ELAN users script with).
"""

from __future__ import annotations

import mimetypes
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Union

from zipa.data.textgrid import IntervalTier, TextGrid

PathLike = Union[str, Path]
Annotation = tuple[float, float, str]  # (start s, end s, value)
SYMBOLIC = "symbolic"  # the linguistic type of the dependent tiers written here
ALIGNED = "default-lt"  # ELAN's default type of a time-aligned tier


@dataclass
class Eaf:
    """An ELAN file's tiers: ``{name: [(start, end, value)...]}`` in document order (sorted by
    start), the parent of each dependent tier, and the media files it links."""

    tiers: dict[str, list[Annotation]] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    media: list[str] = field(default_factory=list)
    path: Path | None = None  # the file read

    def to_textgrid(self) -> TextGrid:
        """The tiers as TextGrid interval tiers over [0, the last annotation's end]; annotations
        that overlap within a tier cannot be TextGrid intervals (ValueError naming the tier)."""
        end = max((b for spans in self.tiers.values() for _, b, _ in spans), default=0.0)
        grid = TextGrid(0.0, end)
        for name, spans in self.tiers.items():
            for (_, b, _), (a, _, _) in zip(spans, spans[1:]):
                if a < b:
                    raise ValueError(f"{self.path or 'ELAN file'}: tier {name!r}: annotations overlap at {a:.3f} s")
            grid.tiers.append(IntervalTier(name, 0.0, end, list(spans)))
        return grid


def read_eaf(path: PathLike) -> Eaf:
    """The tiers of the ELAN file ``path``; ValueError naming the file for what is not EAF, or
    annotations whose times cannot be known (time slots without a time value)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not an ELAN file (XML: {e})") from None
    if root.tag != "ANNOTATION_DOCUMENT":
        raise ValueError(f"{path}: not an ELAN file (the root element is {root.tag}, not ANNOTATION_DOCUMENT)")
    slots = {s.get("TIME_SLOT_ID"): s.get("TIME_VALUE") for s in root.iter("TIME_SLOT")}
    spans: dict[str, tuple[str | None, str | None]] = {}  # annotation id -> its time slots
    refs: dict[str, str] = {}  # symbolic annotation id -> the annotation it refers to
    eaf = Eaf(media=[m.get("MEDIA_URL", "") for m in root.iter("MEDIA_DESCRIPTOR")], path=path)
    raw: dict[str, list[tuple[str, str]]] = {}
    for tier in root.iter("TIER"):
        name = tier.get("TIER_ID", "")
        if parent := tier.get("PARENT_REF"):
            eaf.parents[name] = parent
        raw[name] = []
        for annotation in tier.iter("ANNOTATION"):
            for item in annotation:
                key = item.get("ANNOTATION_ID", "")
                if item.tag == "ALIGNABLE_ANNOTATION":
                    spans[key] = (item.get("TIME_SLOT_REF1"), item.get("TIME_SLOT_REF2"))
                elif item.tag == "REF_ANNOTATION":
                    refs[key] = item.get("ANNOTATION_REF", "")
                else:
                    continue
                raw[name].append((key, item.findtext("ANNOTATION_VALUE") or ""))

    def times(key: str, tier: str) -> tuple[float, float]:
        seen = set()
        while key in refs and key not in seen:
            seen.add(key)
            key = refs[key]
        start, end = (slots.get(slot) for slot in spans.get(key, (None, None)))
        if start is None or end is None:
            raise ValueError(
                f"{path}: tier {tier!r}: annotation {key} has no time of its own (an unaligned "
                "time slot); align it in ELAN first"
            )
        return float(start) / 1000, float(end) / 1000

    for name, items in raw.items():
        eaf.tiers[name] = sorted(((*times(key, name), value) for key, value in items), key=lambda a: a[0])
    return eaf


def eaf_text(
    media: PathLike | None,
    tiers: Sequence[tuple[str, Sequence[Annotation]]],
    dependents: Sequence[tuple[str, str, Sequence[str]]] = (),
) -> str:
    """An EAF 3.0 document linking ``media`` (an audio file; None: none) with the time-aligned
    ``tiers`` (name, annotations) and the symbolic-association ``dependents`` (name, parent
    tier, one value per annotation of the parent). Annotations shorter than a millisecond once
    rounded, and empty ones, are left out (with their dependent values)."""
    root = ET.Element(
        "ANNOTATION_DOCUMENT",
        {
            "AUTHOR": "zipa",
            "DATE": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "FORMAT": "3.0",
            "VERSION": "3.0",
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
            "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv3.0.xsd",
        },
    )
    header = ET.SubElement(root, "HEADER", {"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    if media is not None:
        media = Path(media).resolve()
        mime = mimetypes.guess_type(media.name)[0] or "audio/x-wav"
        ET.SubElement(header, "MEDIA_DESCRIPTOR", {"MEDIA_URL": media.as_uri(), "MIME_TYPE": mime})
    last_id = ET.SubElement(header, "PROPERTY", {"NAME": "lastUsedAnnotationId"})
    order = ET.SubElement(root, "TIME_ORDER")
    slot_of: dict[int, str] = {}
    kept: dict[str, list[str | None]] = {}  # tier -> the id of each annotation (None: left out)
    count = 0
    tier_elements = []
    for name, spans in tiers:
        element = ET.Element("TIER", {"LINGUISTIC_TYPE_REF": ALIGNED, "TIER_ID": name})
        kept[name] = []
        for start, end, value in spans:
            a, b = round(start * 1000), round(end * 1000)
            if b <= a or not value:
                kept[name].append(None)
                continue
            count += 1
            key = f"a{count}"
            kept[name].append(key)
            refs = [slot_of.setdefault(t, f"ts{len(slot_of) + 1}") for t in (a, b)]
            item = ET.SubElement(
                ET.SubElement(element, "ANNOTATION"),
                "ALIGNABLE_ANNOTATION",
                {"ANNOTATION_ID": key, "TIME_SLOT_REF1": refs[0], "TIME_SLOT_REF2": refs[1]},
            )
            ET.SubElement(item, "ANNOTATION_VALUE").text = value
        tier_elements.append(element)
    for name, parent, values in dependents:
        element = ET.Element("TIER", {"LINGUISTIC_TYPE_REF": SYMBOLIC, "PARENT_REF": parent, "TIER_ID": name})
        for ref, value in zip(kept[parent], values):
            if ref is None:
                continue
            count += 1
            item = ET.SubElement(
                ET.SubElement(element, "ANNOTATION"),
                "REF_ANNOTATION",
                {"ANNOTATION_ID": f"a{count}", "ANNOTATION_REF": ref},
            )
            ET.SubElement(item, "ANNOTATION_VALUE").text = value
        tier_elements.append(element)
    for t, slot in sorted(slot_of.items()):
        ET.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": slot, "TIME_VALUE": str(t)})
    last_id.text = str(count)
    root.extend(tier_elements)
    ET.SubElement(
        root,
        "LINGUISTIC_TYPE",
        {"GRAPHIC_REFERENCES": "false", "LINGUISTIC_TYPE_ID": ALIGNED, "TIME_ALIGNABLE": "true"},
    )
    ET.SubElement(
        root,
        "LINGUISTIC_TYPE",
        {
            "CONSTRAINTS": "Symbolic_Association",
            "GRAPHIC_REFERENCES": "false",
            "LINGUISTIC_TYPE_ID": SYMBOLIC,
            "TIME_ALIGNABLE": "false",
        },
    )
    for stereotype, description in CONSTRAINTS:
        ET.SubElement(root, "CONSTRAINT", {"DESCRIPTION": description, "STEREOTYPE": stereotype})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# The four constraints every EAF 3.0 file declares (ELAN writes them all).
CONSTRAINTS = (
    (
        "Time_Subdivision",
        "Time subdivision of parent annotation's time interval, no time gaps allowed within this interval",
    ),
    (
        "Symbolic_Subdivision",
        "Symbolic subdivision of a parent annotation. Annotations refering to the same parent are ordered",
    ),
    ("Symbolic_Association", "1-1 association with a parent annotation"),
    ("Included_In", "Time alignment within the parent's time interval, gaps are allowed"),
)
