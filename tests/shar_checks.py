"""Checks shared by the tests of the shar folders the project writes."""

from pathlib import Path

import pytest


def check_plain_lhotse_reads(folder: Path, num_cuts: int) -> None:
    """``folder`` holds shard files only and plain lhotse reads it as ZIPA's README does:
    ``CutSet.from_shar(in_dir=folder)``, all ``num_cuts`` cuts, the audio of one of them. Then
    a side file put back into it (once) must break that read, and is removed again."""
    from lhotse import CutSet

    names = sorted(p.name for p in folder.iterdir())
    assert all(
        n.startswith(("cuts.", "recording.")) and n.endswith((".jsonl.gz", ".tar")) for n in names
    ), names
    cuts = list(CutSet.from_shar(in_dir=folder))
    assert len(cuts) == num_cuts
    audio = cuts[0].load_audio()
    assert audio.shape[0] == 1 and audio.shape[1] > 0 and cuts[0].sampling_rate == 16000

    intruder = folder / "skipped.tsv"  # the older layout's side file
    intruder.write_text("id\tsource\treason\n")
    try:
        # "Expected N shards available for field 'skipped'"; with one shard, a JSON error
        with pytest.raises((AssertionError, ValueError)):
            list(CutSet.from_shar(in_dir=folder))
    finally:
        intruder.unlink()
