"""Phone inventories and the token mask that restricts a search to them.

An `Inventory` is a set of phones: the user's (`Inventory.from_file`: one phone per line or
several per line separated by spaces; ``#`` starts a comment) or a built-in one
(`Inventory.for_language`: PHOIBLE-derived, see below). `token_mask` turns it into a boolean
mask over the model's tokens, and the search only ever emits allowed tokens:

- ZIPA's tokens are single IPA characters, so the mask is at token level: a phone allows each
  of its characters. ``tʰ`` allows ``t`` and ``ʰ``; modifiers (``ʰ ː ʲ ̃`` ...) are allowed as
  characters, so once ``tʰ`` and ``p`` are in, ``pʰ`` can be emitted too.
- Blank and the word boundary ``▁`` are always allowed; ``<sos/eos>`` and ``<unk>`` are not.
- A phone with characters that are not tokens of the model's tokenizer is mapped with
  `zipa.text.ipa.normalize_ipa` (``ɡ``→``g``, tie bars and tones removed, other marks dropped)
  and reported in `TokenMask.missing` (the Transcriber warns, naming each one): never dropped
  silently.

Applying the mask (`mask_log_probs` for CTC log-probs, `mask_logits` for the transducer's
joiner): tokens outside the inventory get -inf and the distribution is renormalised over the
allowed tokens, so confidences and top-k alternatives are probabilities of the restricted
model. For CTC, renormalising adds the same constant to every path at a frame, so greedy and
beam search pick exactly what they would pick from the masked log-probs without it. A mask
that allows every token leaves the inputs untouched.

Built-in inventories (``zipa/assets/inventories/phoible.tsv``, made by
``local/make_inventories.py``): for 2099 ISO 639-3 codes, the union of the phonemes and their
allophones over PHOIBLE 2.0's inventories of the language, as extended by Allophoible and
shipped in the ``allophant`` package on PyPI (MIT licence), normalised to ZIPA's inventory.
`available_languages` lists them (also ``zipa inventories``). `resolve_language` also takes a few
macrolanguage codes (`MACROLANGUAGES`: ``ara``→``arb``, ``msa``→``zsm``...) and the espeak-ng
voices and codes of `zipa.text.g2p.ISO3_TO_ESPEAK` (``en-us``, ``es``, ``fr-fr``), so that one
``--lang`` serves the G2P and the inventory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from zipa.assets import INVENTORIES as BUILTIN_INVENTORIES

WORD_BOUNDARY = "\u2581"  # ▁
_SPECIAL = re.compile(r"^<[^<>]+>$")  # <blk>, <sos/eos>, <unk>
# ISO 639-3 macrolanguage codes -> the individual language PHOIBLE has an inventory for.
MACROLANGUAGES = {
    "ara": "arb",
    "msa": "zsm",
    "swa": "swh",
    "fas": "pes",
    "zho": "cmn",
    "est": "ekk",
    "lav": "lvs",
    "aze": "azj",
    "uzb": "uzn",
    "sqi": "als",
    "ori": "ory",
    "kur": "kmr",
    "pus": "pbu",
}

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Inventory:
    """A set of phones (IPA strings) and a name for messages."""

    phones: tuple[str, ...]
    name: str = "inventory"

    @classmethod
    def from_phones(cls, phones: Iterable[str], name: str = "inventory") -> Inventory:
        """Phones as given (whitespace inside an item separates phones); duplicates merged."""
        seen: dict[str, None] = {}
        for item in phones:
            if not isinstance(item, str):
                raise TypeError(f"{name}: phones must be strings, got {type(item).__name__}")
            for phone in item.split():
                seen[phone] = None
        if not seen:
            raise ValueError(f"{name}: no phones")
        return cls(tuple(seen), name)

    @classmethod
    def from_file(cls, path: PathLike) -> Inventory:
        """A text file of phones: one per line, or several per line separated by spaces or
        tabs; ``#`` starts a comment; empty lines are skipped."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the inventory {path}: {e}") from None
        lines = [line.split("#", 1)[0] for line in text.splitlines()]
        return cls.from_phones(lines, name=str(path))

    @classmethod
    def for_language(cls, code: str) -> Inventory:
        """The built-in inventory of a language: an ISO 639-3 code, or an espeak-ng voice /
        code that `resolve_language` maps to one. ValueError naming how to list them if none."""
        iso = resolve_language(code)
        name, phones = _builtin()[iso]
        return cls(phones, f"{iso} ({name}, PHOIBLE)")


def available_languages() -> dict[str, tuple[str, int]]:
    """The built-in inventories: ISO 639-3 code -> (language name, number of phones)."""
    return {code: (name, len(phones)) for code, (name, phones) in _builtin().items()}


def resolve_language(code: str) -> str:
    """The ISO 639-3 code of the built-in inventory for `code`: an ISO 639-3 code itself, or an
    espeak-ng voice / code that `zipa.text.g2p.ISO3_TO_ESPEAK` knows (``en-us``, ``es``,
    ``en``); ValueError naming ``zipa inventories`` when there is none."""
    table = _builtin()
    key = code.strip().lower()
    if key in table:
        return key
    from zipa.text.g2p import ISO3_TO_ESPEAK

    if MACROLANGUAGES.get(key) in table:
        return MACROLANGUAGES[key]
    primary = key.replace("_", "-").split("-")[0]
    exact = [iso for iso, voice in ISO3_TO_ESPEAK.items() if voice.lower() == key]
    close = [iso for iso, voice in ISO3_TO_ESPEAK.items() if voice.lower().split("-")[0] == primary]
    for iso in exact + close + ([ISO3_TO_ESPEAK[primary]] if primary in ISO3_TO_ESPEAK else []):
        iso = iso if iso in table else MACROLANGUAGES.get(iso, iso)
        if iso in table:
            return iso
    raise ValueError(
        f"no built-in phone inventory for language {code!r}; `zipa inventories` lists the {len(table)} "
        f"available ISO 639-3 codes (Python: zipa.decoding.inventory.available_languages()), or give "
        f"your own with --inventory FILE"
    )


@lru_cache(maxsize=1)
def _builtin() -> dict[str, tuple[str, tuple[str, ...]]]:
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    with open(BUILTIN_INVENTORIES, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if not line.startswith("#")]
    for line in lines[1:]:  # after the header
        code, name, _, phones = line.split("\t")
        table[code] = (name, tuple(phones.split()))
    return table


# ---------------------------------------------------------------------------------------------
# Token masks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenMask:
    """Which tokens a search may emit (`allowed`: (vocab,) bool), for the inventory `name`.

    `missing`: the inventory's phones that have characters the tokenizer lacks, each with what
    it was mapped to (its characters that are tokens after normalisation; "" for nothing)."""

    allowed: Tensor
    name: str = "inventory"
    missing: tuple[tuple[str, str], ...] = ()

    @property
    def full(self) -> bool:
        """True when every token is allowed (the mask changes nothing)."""
        return bool(self.allowed.all())

    def warning(self) -> str | None:
        """A message naming the phones with symbols the tokenizer lacks, or None."""
        if not self.missing:
            return None
        shown = ", ".join(f"{phone} -> {mapped or '(nothing)'}" for phone, mapped in self.missing)
        return (
            f"{self.name}: {len(self.missing)} phone(s) have symbols that are not in the model's tokenizer; "
            f"they are mapped to its inventory as shown and the other symbols left out: {shown}"
        )


def token_mask(inventory: Inventory | Iterable[str], tokenizer) -> TokenMask:
    """The mask of `inventory` over `tokenizer`'s tokens (see the module docstring).

    `tokenizer`: anything with `vocab_size`, `id_to_piece` and `blank_id`
    (`zipa.text.tokenizer.Tokenizer`). ValueError when no phone maps to a token.
    """
    if not isinstance(inventory, Inventory):
        inventory = Inventory.from_phones(inventory)
    vocab = int(tokenizer.vocab_size)
    pieces = {tokenizer.id_to_piece(i): i for i in range(vocab)}
    chars = {p: i for p, i in pieces.items() if p and not _SPECIAL.match(p) and p != WORD_BOUNDARY}
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[int(getattr(tokenizer, "blank_id", 0))] = True
    if WORD_BOUNDARY in pieces:
        allowed[pieces[WORD_BOUNDARY]] = True
    missing: list[tuple[str, str]] = []
    any_phone = False
    for phone in inventory.phones:
        if all(c in chars for c in phone):
            ids = [chars[c] for c in phone]
        else:
            from zipa.text.ipa import normalize_ipa

            normalised = normalize_ipa(phone).replace(" ", "")
            ids = [chars[c] for c in normalised if c in chars]
            missing.append((phone, "".join(c for c in normalised if c in chars)))
        any_phone = any_phone or bool(ids)
        allowed[ids] = True
    if not any_phone:
        raise ValueError(f"{inventory.name}: none of its {len(inventory.phones)} phones is in the model's tokenizer")
    return TokenMask(allowed, inventory.name, tuple(missing))


def _allowed(mask: TokenMask | Tensor | None) -> Tensor | None:
    if mask is None:
        return None
    allowed = mask.allowed if isinstance(mask, TokenMask) else mask
    return None if bool(allowed.all()) else allowed


def mask_logits(logits: Tensor, mask: TokenMask | Tensor | None) -> Tensor:
    """Logits (..., vocab) with the tokens outside the mask set to -inf (unchanged when the mask
    is None or allows every token); a softmax over them renormalises over the allowed ones."""
    allowed = _allowed(mask)
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


def mask_log_probs(log_probs: Tensor, mask: TokenMask | Tensor | None) -> Tensor:
    """CTC log-probs (..., vocab) restricted to the mask and renormalised over the allowed
    tokens (log-softmax of the masked values); unchanged when the mask is None or full."""
    allowed = _allowed(mask)
    if allowed is None:
        return log_probs
    return mask_logits(log_probs, allowed).log_softmax(dim=-1)
