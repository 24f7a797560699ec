#!/usr/bin/env python3
"""Write the first N utterances of a shar folder as WAV files, with their reference IPA in
references.tsv (id, file, language, ipa): sample inputs for the inference API and the CLI."""

import argparse
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zipa.data.shar import read_shar_dir
from zipa.utils.atomic import open_atomic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shar_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num", type=int, default=4)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for cut in read_shar_dir(args.shar_dir).subset(first=args.num):
        path = args.out_dir / f"{cut.id}.wav"
        sf.write(path, cut.load_audio()[0], cut.sampling_rate)
        sup = cut.supervisions[0]
        rows.append(f"{cut.id}\t{path.name}\t{sup.language or ''}\t{sup.text}\n")
    with open_atomic(args.out_dir / "references.tsv") as f:
        f.writelines(rows)
    print(f"wrote {len(rows)} files to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
