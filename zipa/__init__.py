"""ZIPA: multilingual IPA phone recognition with Zipformer (an icefall-style re-implementation).

    import zipa
    model = zipa.load_model("zipa-cr-small-500k")       # a released model's name, or a .pth path
    model.transcribe(["speech.wav"])                     # [['wɜːld', 'hɛloʊ']]
    (alignment,) = model.align(["speech.wav"], text="hello world", lang="en-us")
    zipa.write(alignment, "speech.TextGrid")             # or .ctm, .jsonl, .tsv, .txt

Everything here is imported on first use, so ``import zipa`` and ``zipa --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zipa.inference.zipa_api import ZipaModel

__version__ = "0.1.0"
__all__ = ["__version__", "available_models", "load_model", "write"]


def load_model(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    *,
    bpe_model: str | Path | None = None,
    aligner: Any = "auto",
    **overrides: Any,
) -> ZipaModel:
    """Load a ZIPA model: a name from :func:`available_models` (fetched from the Hugging Face
    Hub, or found in its cache offline), a Hub repo id, a checkpoint file (released bare
    ``.pth``, averaged model or icefall training checkpoint) or a folder holding one.

    The architecture is read from the weights; ``overrides`` set what weights cannot show
    (e.g. ``chunk_size=(16,), left_context_frames=(64,)`` for a causal model). ``device``
    defaults to cuda when available, else cpu; ``bpe_model`` to the packaged tokenizer.
    ``aligner``: the frame aligner that times phones (``zipformer_crctc/train_aligner.py``
    trains one): "auto" (default) uses ``<model stem>.aligner.pt`` beside the model file when
    there is one, a path names one, None uses none (CTC spike times).
    Returns the object ``zipa_ctc_inference.initialize_model`` returns: ``transcribe``,
    ``transcribe_files``, ``timestamps``, ``align`` and the original's ``inference``.
    """
    from zipa.inference.zipa_api import initialize_model

    return initialize_model(name_or_path, bpe_model, device, aligner=aligner, **overrides)


def available_models() -> list[str]:
    """Names of the released ZIPA models that :func:`load_model` accepts (``zipa models``)."""
    from zipa.hub.pretrained import MODELS

    return [model.name for model in MODELS]


def write(
    alignments: Any,
    path: str | Path | None,
    format: str | None = None,
    *,
    duration: float | None = None,
    words: bool = True,
) -> None:
    """Write an alignment (what ``model.timestamps`` and ``model.align`` return, one per file),
    or a list of them, to ``path`` in ``format``, by default the one its suffix names:
    ``.TextGrid`` (Praat: tiers "phones" and "words"), ``.ctm``, ``.jsonl``, ``.tsv``, ``.txt``;
    the bytes ``zipa align`` writes. ``duration``: the audio's length in seconds (a TextGrid
    covers it; default: the last phone's end). ``path`` None writes to stdout. Atomic: the file
    appears whole or not at all."""
    from zipa.inference.writers import write as write_records

    write_records(alignments, path, format, duration=duration, words=words)
