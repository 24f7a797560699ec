"""The page's spectrogram: grey PNG tiles drawn side by side under a common time axis.

The picture is `zipa.plot.figure.linear_spectrogram` (Praat-like broadband, 0-5 kHz), the one
`zipa align --plot` draws, encoded as 8-bit grey PNGs (dark = loud, as in Praat) without
matplotlib. A long file is cut into tiles of at least `TILE_SECONDS`, each of which
`linear_spectrogram` resolves with up to 4000 columns (2 ms apart for tiles of 8 s), so that
zooming in shows detail; beyond `MAX_TILES` tiles they grow longer (and coarser) instead, which
bounds what a job keeps in memory. Grey levels are set over the whole file, so that tiles of
loud and quiet stretches match.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from zipa.audio.load import SAMPLING_RATE
from zipa.plot.figure import linear_spectrogram

MAX_FREQUENCY = 5000.0
DYNAMIC_RANGE = 50.0  # dB below the file's loudest cell that are shown; quieter is white
QUIETEST_PEAK = -60.0  # dB: a file whose loudest cell is quieter is drawn as near silence (white)
TILE_SECONDS = 8.0
MAX_TILES = 12


@dataclass(frozen=True)
class Tile:
    """One PNG of the spectrogram: column c is centred at ``start + c * hop`` seconds."""

    png: bytes
    start: float
    hop: float
    columns: int

    def to_json(self) -> dict:
        return {"start": self.start, "hop": self.hop, "columns": self.columns}


def spectrogram_tiles(samples: np.ndarray) -> list[Tile]:
    """The tiles of 16 kHz mono ``samples``, in time order."""
    duration = len(samples) / SAMPLING_RATE
    seconds = max(TILE_SECONDS, duration / MAX_TILES)
    step = max(1, int(round(seconds * SAMPLING_RATE)))
    pieces = []
    for first in range(0, len(samples), step):
        # No floor here: the dynamic range is applied over the whole file below.
        db, hop, _ = linear_spectrogram(samples[first : first + step], MAX_FREQUENCY, dynamic_range=1e6)
        pieces.append((first / SAMPLING_RATE, hop, db))
    top = max(QUIETEST_PEAK, max(db.max() for _, _, db in pieces))
    floor = top - DYNAMIC_RANGE
    tiles = []
    for start, hop, db in pieces:
        level = (np.clip(db, floor, top) - floor) / DYNAMIC_RANGE  # 0 quiet .. 1 loud
        grey = np.round(255 * (1.0 - level)).astype(np.uint8)[::-1]  # high frequencies on top
        tiles.append(Tile(png_grey(grey), round(start, 6), hop, int(db.shape[1])))
    return tiles


def png_grey(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a (rows, columns) uint8 array."""
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.hstack([np.zeros((height, 1), np.uint8), np.ascontiguousarray(image, np.uint8)])  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
