#!/usr/bin/env python3
"""How good the pseudo-labels that survived the filters are: kept and dropped counts (from the
run's summary) and the kept labels' PER against the labels the synthesiser knows.

    local/pseudo_label_quality.py data/demo_it/pseudo_s1 data/demo_it/unlabeled [--json OUT]

PSEUDO_DIR is zipformer_crctc/pseudo_label.py's --out-dir; REFERENCE_DIR the shar folder it read
(the demo corpus's unlabeled split keeps each cut's synthesiser label, unused by training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zipa.data.shar import beside, discover_shards
from zipa.evaluation.metrics import edit_counts, phone_units
from zipa.utils.atomic import write_text_atomic


def shar_texts(folder: Path) -> dict[str, str]:
    """Cut id -> its first supervision's text, for every cut of a shar folder (manifests only)."""
    from lhotse import CutSet

    cuts = CutSet.from_shar(fields=discover_shards(folder, fields=()))
    return {cut.id: cut.supervisions[0].text for cut in cuts}


def quality(pseudo_dir: Path, reference_dir: Path) -> dict:
    summary_file = beside(pseudo_dir, "summary.json")
    if not summary_file.is_file():
        raise SystemExit(f"pseudo_label_quality.py: {summary_file} missing: the pseudo-labelling run did not finish")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    references = shar_texts(reference_dir)
    errors = ref_len = 0
    for cut_id, label in shar_texts(pseudo_dir).items():
        if cut_id not in references:
            raise SystemExit(f"pseudo_label_quality.py: {cut_id} of {pseudo_dir} is not in {reference_dir}")
        counts = edit_counts(phone_units(references[cut_id]), phone_units(label))
        errors += counts.errors
        ref_len += counts.ref_len
    return {
        "kept": summary["kept"]["cuts"],
        "dropped": summary["dropped"]["cuts"],
        "dropped_by_reason": {k: v["cuts"] for k, v in summary["dropped"]["by_reason"].items()},
        "min_confidence": summary["settings"]["filters"]["min_confidence"],
        "kept_PER": round(100 * errors / ref_len, 3) if ref_len else None,
        "kept_ref_phones": ref_len,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pseudo_dir", type=Path)
    p.add_argument("reference_dir", type=Path)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    q = quality(args.pseudo_dir, args.reference_dir)
    reasons = ", ".join(f"{k} {v}" for k, v in q["dropped_by_reason"].items()) or "none"
    print(
        f"pseudo-labels: kept {q['kept']}, dropped {q['dropped']} ({reasons}); "
        f"kept labels' PER {q['kept_PER']} % over {q['kept_ref_phones']} phones"
    )
    if args.json:
        write_text_atomic(args.json, json.dumps(q, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
