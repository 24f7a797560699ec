"""The released ZIPA models and how a model is named: a local file, a local folder, or the Hub.

`resolve_model(spec)` returns the path of a checkpoint (.pth) for:

- a local file: returned as it is;
- a local folder: the ``.pth`` inside it (one whose name contains "avg" when there are several);
- a known model name (``zipa models``), its Hub repo id (``anyspeech/zipa-small-crctc-500k``)
  or the repo's name alone (``zipa-small-crctc-500k``);
- any other Hub repo id ``org/name``, optionally with the file: ``org/name:file.pth``.

Hub files are fetched with huggingface_hub into its cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``) and found there again without a network (``HF_HUB_OFFLINE=1``).
Offline with nothing cached, `ModelNotFoundError` says what to download and where to put it.

File names: the table holds the averaged checkpoint's name where the original ZIPA code or its
users name it; where it does not (``filename`` None), or the named file is not in the repo, the
repo's files are listed and the ``*avg*.pth`` one taken, as the original's download script does
(offline: the ``.pth`` found in the cached snapshot).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


@dataclass(frozen=True)
class PretrainedModel:
    name: str  # short name (the original's ONNX scripts use these)
    repo_id: str  # Hugging Face repo of the final averaged checkpoint
    filename: str | None  # the averaged checkpoint in that repo; None: find the *avg*.pth
    kind: str  # "ctc" (CR-CTC) or "transducer"
    size: str  # "small" or "large" (the architecture preset)
    params: str
    steps: str
    diacritics: bool  # False: trained on transcripts with diacritics removed
    pseudo_labels: bool  # "NS": also trained on pseudo-labelled data

    @property
    def licence(self) -> str:
        """The released weights' licence: the noisy-student (NS) models are non-commercial."""
        return "CC BY-NC-SA 4.0" if self.pseudo_labels else "CC BY 4.0"

    @property
    def download_size(self) -> str:
        """The checkpoint's approximate size: float32 weights, 4 bytes a parameter."""
        megabytes = float(self.params.rstrip("M")) * 4
        return f"{megabytes / 1000:.1f} GB" if megabytes >= 1000 else f"{megabytes:.0f} MB"


# The "Final Averaged Checkpoint" column of the original ZIPA README.
MODELS: list[PretrainedModel] = [
    PretrainedModel(
        "zipa-t-small-300k",
        "anyspeech/zipa-small-noncausal-300k",
        "zipa_small_noncausal_300000_avg10.pth",
        "transducer",
        "small",
        "65M",
        "300k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-t-large-300k",
        "anyspeech/zipa-large-noncausal-300k",
        "zipa_large_noncausal_300000_avg10.pth",
        "transducer",
        "large",
        "302M",
        "300k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-t-small-500k",
        "anyspeech/zipa-small-noncausal-500k",
        "zipa_small_noncausal_500000_avg10.pth",
        "transducer",
        "small",
        "65M",
        "500k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-t-large-500k",
        "anyspeech/zipa-large-noncausal-500k",
        "zipa_large_noncausal_500000_avg10.pth",
        "transducer",
        "large",
        "302M",
        "500k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-cr-small-300k",
        "anyspeech/zipa-small-crctc-300k",
        "zipa_small_crctc_300000_avg10.pth",
        "ctc",
        "small",
        "64M",
        "300k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-cr-large-300k",
        "anyspeech/zipa-large-crctc-300k",
        "zipa_large_crctc_300000_avg10.pth",
        "ctc",
        "large",
        "300M",
        "300k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-cr-small-500k",
        "anyspeech/zipa-small-crctc-500k",
        "zipa_small_crctc_500000_avg10.pth",
        "ctc",
        "small",
        "64M",
        "500k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-cr-large-500k",
        "anyspeech/zipa-large-crctc-500k",
        "zipa_large_crctc_500000_avg10.pth",
        "ctc",
        "large",
        "300M",
        "500k",
        True,
        False,
    ),
    PretrainedModel(
        "zipa-cr-ns-small-700k",
        "anyspeech/zipa-small-crctc-ns-700k",
        "zipa_small_crctc_extended_0.5_scale_700000_avg10.pth",
        "ctc",
        "small",
        "64M",
        "700k",
        True,
        True,
    ),
    PretrainedModel(
        "zipa-cr-ns-large-800k",
        "anyspeech/zipa-large-crctc-ns-800k",
        "zipa_large_crctc_0.5_scale_800000_avg10.pth",
        "ctc",
        "large",
        "300M",
        "800k",
        True,
        True,
    ),
    PretrainedModel(
        "zipa-cr-ns-small-nodiacritics-700k",
        "anyspeech/zipa-small-crctc-ns-no-diacritics-700k",
        None,
        "ctc",
        "small",
        "64M",
        "700k",
        False,
        True,
    ),
    PretrainedModel(
        "zipa-cr-ns-large-nodiacritics-780k",
        "anyspeech/zipa-large-crctc-ns-no-diacritics-780k",
        None,
        "ctc",
        "large",
        "300M",
        "780k",
        False,
        True,
    ),
]

CHECKPOINT_SUFFIXES = (".pth", ".pt")


class ModelNotFoundError(FileNotFoundError):
    """A model spec that names nothing we can find (the message says what to do)."""


def find_model(spec: str) -> PretrainedModel | None:
    """The table entry that `spec` names (short name, repo id, or repo name), else None."""
    for model in MODELS:
        if spec in (model.name, model.repo_id, model.repo_id.split("/", 1)[1]):
            return model
    return None


def is_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def cache_folder(cache_dir: PathLike | None = None) -> Path:
    """The Hugging Face cache folder: ``cache_dir``, else HF_HUB_CACHE, else huggingface_hub's default."""
    from huggingface_hub import constants

    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def checkpoint_in_folder(folder: PathLike) -> Path:
    """The checkpoint in a folder: its only .pth (or .pt) file, or the one named *avg*."""
    folder = Path(folder)
    for suffix in CHECKPOINT_SUFFIXES:
        # <model>.aligner.pt beside a model is its frame aligner (zipa.model.aligner), not a model.
        found = sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file() and not p.name.endswith(".aligner.pt"))
        if not found:
            continue
        if len(found) == 1:
            return found[0]
        averaged = [p for p in found if "avg" in p.name]
        if len(averaged) == 1:
            return averaged[0]
        names = ", ".join(str(p.relative_to(folder)) for p in found[:8])
        raise ModelNotFoundError(f"{folder}: several checkpoints ({names}); pass the file itself")
    raise ModelNotFoundError(f"{folder}: no checkpoint (*.pth or *.pt) in this folder")


def _files_of(snapshot: Path) -> list[str]:
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())


def cached_snapshot(repo_id: str, cache_dir: PathLike | None = None, revision: str = "main") -> Path | None:
    """The snapshot folder of ``repo_id`` that the cache's ``refs/<revision>`` points to, if any."""
    repo = cache_folder(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


Chooser = Callable[[list[str]], list[str] | None]


def fetch_files(
    repo_id: str,
    choose: Chooser,
    cache_dir: PathLike | None = None,
    *,
    what: str = "model",
    nothing_message: Callable[[list[str]], str],
    download_hint: str,
) -> list[Path]:
    """The files that ``choose`` picks from ``repo_id``'s file list, downloaded into the Hugging
    Face cache; offline (``HF_HUB_OFFLINE``), or when the Hub cannot be reached, the same choice
    made from the repo's cached snapshot. ``choose`` returns None when nothing in the list fits.

    ModelNotFoundError: no such repo; the repo holds nothing that fits (``nothing_message(files)``
    says why); or it is neither reachable nor cached (the message says what to download:
    ``download_hint``, the arguments of ``hf download <repo>``, and where to put it)."""
    from huggingface_hub import hf_hub_download, list_repo_files
    from huggingface_hub.errors import RepositoryNotFoundError

    cache = cache_folder(cache_dir)
    offline = is_offline()
    try:
        if offline:
            raise ConnectionError("offline")
        files = list_repo_files(repo_id)
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{what} {repo_id}: no such repo on the Hub (or it is private); `zipa models` lists the released ones"
        ) from None
    except Exception as e:  # offline, or the Hub unreachable: the cache may have them
        return _cached_or_raise(repo_id, choose, cache, offline, e, what, download_hint)
    chosen = choose(files)
    if not chosen:
        raise ModelNotFoundError(f"{what} {repo_id}: {nothing_message(files)}")
    try:
        return [Path(hf_hub_download(repo_id, name, cache_dir=str(cache))) for name in chosen]
    except Exception as e:  # the connection lost half-way
        return _cached_or_raise(repo_id, choose, cache, offline, e, what, download_hint)


def _cached_or_raise(
    repo_id: str, choose: Chooser, cache: Path, offline: bool, error: Exception, what: str, download_hint: str
) -> list[Path]:
    snapshot = cached_snapshot(repo_id, cache)
    if snapshot is not None:
        chosen = choose(_files_of(snapshot))
        if chosen and all((snapshot / name).is_file() for name in chosen):
            return [snapshot / name for name in chosen]
    reason = (
        f"not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set"
        if offline
        else f"cannot reach the Hub and not in the cache ({cache}): {type(error).__name__}: {error}"
    )
    raise ModelNotFoundError(
        f"{what} {repo_id}: {reason}.\n"
        f"  Download it where there is internet:\n"
        f"    hf download {repo_id} {download_hint}      (or: huggingface-cli download ...)\n"
        f"  then copy the cache folder {cache / ('models--' + repo_id.replace('/', '--'))} to the same place here\n"
        f"  (HF_HUB_CACHE chooses the cache folder), or download those files from\n"
        f"  https://huggingface.co/{repo_id}/tree/main and pass their path with --model"
    ) from None


def _checkpoint_choice(filename: str | None) -> Chooser:
    """The table's file when the repo has it, else the repo's averaged checkpoint (*avg*.pth)."""

    def choose(files: list[str]) -> list[str] | None:
        if filename is not None and filename in files:
            return [filename]
        pth = sorted(f for f in files if f.endswith(".pth"))
        averaged = [f for f in pth if "avg" in Path(f).name]
        return (averaged or pth)[:1] or None

    return choose


def _from_hub(repo_id: str, filename: str | None, cache_dir: PathLike | None) -> Path:
    hint = filename or '--include "*avg*.pth"'
    return fetch_files(
        repo_id,
        _checkpoint_choice(filename),
        cache_dir,
        download_hint=hint,
        nothing_message=lambda files: "the repo holds no .pth checkpoint",
    )[0]


def resolve_model(spec: PathLike, cache_dir: PathLike | None = None) -> Path:
    """Path of the checkpoint that `spec` names (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return checkpoint_in_folder(path)
    text = str(spec)
    repo_id, _, filename = text.partition(":")
    known = find_model(repo_id)
    if known is not None:
        return _from_hub(known.repo_id, filename or known.filename, cache_dir)
    looks_like_a_path = text.startswith((".", "/", "~")) or text.endswith(CHECKPOINT_SUFFIXES)
    if repo_id.count("/") == 1 and all(repo_id.split("/")) and not looks_like_a_path:
        return _from_hub(repo_id, filename or None, cache_dir)
    raise ModelNotFoundError(
        f"model {text!r}: not a file, a folder, a known model name or a Hub repo id (org/name); "
        "`zipa models` lists the known models"
    )


def is_cached(model: PretrainedModel, cache_dir: PathLike | None = None) -> bool:
    """Whether the model's checkpoint is in the local Hugging Face cache."""
    snapshot = cached_snapshot(model.repo_id, cache_dir)
    return snapshot is not None and _checkpoint_choice(model.filename)(_files_of(snapshot)) is not None


def format_table(cache_dir: PathLike | None = None) -> str:
    """The known models as an aligned text table (what `zipa models` prints)."""
    header = ("name", "kind", "params", "size", "steps", "diacritics", "licence", "cached", "repo id")
    rows = [
        (
            m.name,
            m.kind,
            m.params,
            "≈" + m.download_size,
            m.steps,
            "yes" if m.diacritics else "no",
            m.licence,
            "yes" if is_cached(m, cache_dir) else "no",
            m.repo_id,
        )
        for m in MODELS
    ]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]
    return "\n".join(lines) + "\n"
