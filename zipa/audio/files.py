"""Finding audio files: folders searched recursively for the formats this soundfile reads."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

# What folder searches look for: the formats libsndfile reads (`soundfile.available_formats()`)
# under the names their files go by. RAW (no header: its rate cannot be known) and MAT4/MAT5
# (.mat files are mostly not audio) are left out; .opus needs Opus in OGG, .mp3 libsndfile >= 1.1.
_FORMAT_SUFFIXES = {
    "WAV": (".wav",),
    "WAVEX": (".wav",),
    "RF64": (".rf64",),
    "W64": (".w64",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"),
    "MP3": (".mp3",),
    "AIFF": (".aiff", ".aif", ".aifc"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
    "NIST": (".sph", ".nist"),
    "IRCAM": (".sf",),
    "VOC": (".voc",),
    "SVX": (".8svx", ".svx"),
    "PVF": (".pvf",),
    "AVR": (".avr",),
    "SD2": (".sd2",),
    "PAF": (".paf",),
    "HTK": (".htk",),
    "WVE": (".wve",),
    "SDS": (".sds",),
    "XI": (".xi",),
    "MPC2K": (".snd",),
}
_NOT_SEARCHED = ("RAW", "MAT4", "MAT5")

AudioFile = tuple[Path, Path]  # (path, path relative to the input it was found under)


def find_audio(inputs: Sequence[str]) -> tuple[list[AudioFile], list[str]]:
    """(audio files as (path, path relative to its input), errors for inputs that do not exist).

    Folders are searched recursively, in sorted order, for files with the suffixes of the
    formats soundfile can read (`audio_suffixes`, any case); files named on the command line
    are taken whatever their suffix. A folder without audio is named in a warning on stderr.
    """
    files: list[AudioFile] = []
    errors: list[str] = []
    suffixes = audio_suffixes()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                print(
                    f"warning: {path}: no audio files in this folder (looked for {', '.join(suffixes)})",
                    file=sys.stderr,
                )
            files += [(p, p.relative_to(path)) for p in found]
        elif path.exists():
            files.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


@functools.cache
def audio_suffixes() -> tuple[str, ...]:
    """The suffixes (lower case, sorted) of the audio formats this soundfile (libsndfile) reads:
    .wav .flac .ogg .oga .opus .aiff .aif .caf .au .w64 .sph ..., .mp3 where it reads MP3."""
    import soundfile as sf

    formats = sf.available_formats()
    found: set[str] = set()
    for name in formats:
        if name not in _NOT_SEARCHED:
            found.update(_FORMAT_SUFFIXES.get(name, ("." + name.lower(),)))
    if "OGG" in formats and "OPUS" in sf.available_subtypes("OGG"):
        found.add(".opus")
    return tuple(sorted(found))
