"""Flags of ZIPA's and icefall's recipes that name features this project does not have.

Each is accepted with the original's type and default, so a command line written for the
original parses. `check_foreign_flags` then answers every one whose value asks for something
(not the default; for --wandb, whose default True asks for Weights & Biases, not False):
a flag that asks for a missing feature (k2 FSA decoding, an n-gram or neural LM, contextual
biasing, ...) stops the command with one line naming the feature and what to use instead (a
`UsageError`); a flag that only tunes such a feature, or names ZIPA's hard-coded data or its
logging service, has no effect and gets one line in the log saying so.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zipa.utils.flags import UsageError, str2bool

_AS_DEFAULT = object()


@dataclass(frozen=True)
class Foreign:
    flag: str
    type: Callable
    default: Any
    answer: str  # what the flag is for and what to use here instead
    fatal: bool = True  # False: another value has no effect (noted in the log)
    harmless: Any = _AS_DEFAULT  # the value that asks for nothing missing: the default unless given

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def quiet(self) -> Any:
        return self.default if self.harmless is _AS_DEFAULT else self.harmless


_K2 = "needs k2's FSA machinery, which this project does not use"
_CTC_INSTEAD = "decode with --decoding-method ctc-greedy-search or prefix-beam-search"
_RNNT_INSTEAD = "decode with --decoding-method greedy_search or modified_beam_search"
_NO_LM = "LM decoding is not supported here (no n-gram or neural LM)"


def _tuning(flag: str, type_: Callable, default: Any, feature: str) -> Foreign:
    return Foreign(flag, type_, default, f"has no effect here: it tunes {feature}", fatal=False)


DATA_FLAGS = (
    Foreign(
        "--concatenate-cuts",
        str2bool,
        False,
        "concatenating cuts into batches is not supported; batches hold whole utterances up to --max-duration seconds",
    ),
    _tuning("--duration-factor", float, 1.0, "--concatenate-cuts (not supported)"),
    _tuning("--gap", float, 3.0, "--concatenate-cuts (not supported)"),
    Foreign(
        "--input-strategy",
        str,
        "AudioSamples",
        "only AudioSamples is an input strategy here: for precomputed features give --on-the-fly-feats False",
    ),
    Foreign("--return-cuts", str2bool, True, "has no effect here: batches always carry their cuts", fatal=False),
    Foreign("--full-libri", str2bool, False, "has no effect here: the training data is --train-shar-dirs", fatal=False),
    Foreign("--subset", int, 25, "has no effect here: the training data is --train-shar-dirs", fatal=False),
    Foreign(
        "--train-manifest",
        str,
        "librispeech_cuts_train-clean-100.jsonl.gz",
        "has no effect here: the training data is --train-shar-dirs (lhotse shar folders)",
        fatal=False,
    ),
)

# ZIPA's add_model_arguments holds these training flags, so its decode and averaging scripts take them.
_TRAINING_ONLY = "has no effect here: a training flag; the model decodes the same whatever it was trained with"
_MASK_THRESHOLD = Foreign(
    "--use-mask-threshold", float, 0.8, "has no effect (nor in ZIPA's train.py, which reads it nowhere)", fatal=False
)
TRAINING_ONLY_FLAGS = (
    Foreign("--use-cr-ctc", str2bool, False, _TRAINING_ONLY, fatal=False),
    Foreign("--use-unsup-cr-ctc", str2bool, False, _TRAINING_ONLY, fatal=False),
    _MASK_THRESHOLD,
)

TRAINING_FLAGS = (
    _MASK_THRESHOLD,
    Foreign(
        "--wandb",
        str2bool,
        True,
        "has no effect here: Weights & Biases is not built in; the "
        "metrics go to TensorBoard (--tensorboard True, <exp-dir>/tensorboard) and the log",
        fatal=False,
        harmless=False,
    ),
    Foreign("--wandb_project", str, "transducer", "has no effect here: Weights & Biases is not built in", fatal=False),
    Foreign(
        "--wandb_run", str, "zipformer-transducer", "has no effect here: Weights & Biases is not built in", fatal=False
    ),
)

# Flags both recipes' decode scripts take.
_LANG_DIR = Foreign(
    "--lang-dir", str, "data/lang_bpe_500", "has no effect here: the tokens come from --bpe-model", fatal=False
)
_SKIP_SCORING = Foreign(
    "--skip-scoring",
    str2bool,
    False,
    "decoding here always scores against the references; transcribe audio without references with `zipa transcribe`",
)

CTC_DECODING_FLAGS = (
    _LANG_DIR,
    _tuning("--hlg-scale", float, 0.6, f"HLG decoding, which {_K2}"),
    _tuning("--lm-dir", str, "data/lm", f"n-gram LM rescoring, which {_K2}"),
    _tuning("--num-paths", int, 100, f"n-best decoding, which {_K2}"),
    _tuning("--nbest-scale", float, 1.0, f"n-best decoding, which {_K2}"),
    _SKIP_SCORING,
    Foreign("--nnlm-type", str, "rnn", f"has no effect here: {_NO_LM}", fatal=False),
    Foreign("--nnlm-scale", float, 0, f"neural LM rescoring: {_NO_LM}; {_CTC_INSTEAD}"),
    Foreign("--lodr-ngram", str, None, f"LODR: {_NO_LM}; {_CTC_INSTEAD}"),
    _tuning("--lodr-lm-scale", float, 0, "LODR (not supported)"),
    Foreign("--context-file", str, "", f"contextual biasing (a context graph) is not supported; {_CTC_INSTEAD}"),
    _tuning("--context-score", float, 0, "contextual biasing (not supported)"),
    _tuning("--backoff-id", int, 500, "LM decoding (not supported)"),
)

TRANSDUCER_DECODING_FLAGS = (
    _LANG_DIR,
    _tuning("--beam", float, 20.0, f"fast_beam_search, which {_K2}"),
    _tuning("--max-contexts", int, 8, f"fast_beam_search, which {_K2}"),
    _tuning("--max-states", int, 64, f"fast_beam_search, which {_K2}"),
    _tuning("--ngram-lm-scale", float, 0.01, f"fast_beam_search with an LG graph, which {_K2}"),
    Foreign(
        "--max-sym-per-frame",
        int,
        1,
        "greedy_search here emits at most one symbol per frame; "
        "for more, decode with --decoding-method modified_beam_search",
    ),
    _tuning("--num-paths", int, 200, f"fast_beam_search_nbest, which {_K2}"),
    _tuning("--nbest-scale", float, 0.5, f"fast_beam_search_nbest, which {_K2}"),
    Foreign("--use-shallow-fusion", str2bool, False, f"shallow fusion: {_NO_LM}; {_RNNT_INSTEAD}"),
    _tuning("--lm-type", str, "rnn", "LM shallow fusion (not supported)"),
    _tuning("--lm-scale", float, 0.3, "LM shallow fusion (not supported)"),
    _tuning("--tokens-ngram", int, 2, "LODR (not supported)"),
    _tuning("--backoff-id", int, 500, "LODR (not supported)"),
    _tuning("--context-score", float, 2, "contextual biasing (not supported)"),
    Foreign("--context-file", str, "", f"contextual biasing (a context graph) is not supported; {_RNNT_INSTEAD}"),
    _SKIP_SCORING,
    # icefall's LmScorer.add_arguments: the neural LM of shallow fusion and rescoring.
    _tuning("--lm-vocab-size", int, 500, "a neural LM (not supported)"),
    _tuning("--lm-epoch", int, 7, "a neural LM (not supported)"),
    _tuning("--lm-avg", int, 1, "a neural LM (not supported)"),
    _tuning("--lm-exp-dir", str, None, "a neural LM (not supported)"),
    _tuning("--rnn-lm-embedding-dim", int, 2048, "a neural LM (not supported)"),
    _tuning("--rnn-lm-hidden-dim", int, 2048, "a neural LM (not supported)"),
    _tuning("--rnn-lm-num-layers", int, 3, "a neural LM (not supported)"),
    _tuning("--rnn-lm-tie-weights", str2bool, True, "a neural LM (not supported)"),
    _tuning("--transformer-lm-exp-dir", str, None, "a neural LM (not supported)"),
    _tuning("--transformer-lm-dim-feedforward", int, 2048, "a neural LM (not supported)"),
    _tuning("--transformer-lm-encoder-dim", int, 768, "a neural LM (not supported)"),
    _tuning("--transformer-lm-embedding-dim", int, 768, "a neural LM (not supported)"),
    _tuning("--transformer-lm-nhead", int, 8, "a neural LM (not supported)"),
    _tuning("--transformer-lm-num-layers", int, 16, "a neural LM (not supported)"),
    _tuning("--transformer-lm-tie-weights", str2bool, True, "a neural LM (not supported)"),
)

# ZIPA's pseudo-labelling scripts (ctc_decode_train_data.py, decode_train_data.py) read their data
# through the data module; zipformer_crctc/pseudo_label.py reads --shar-dirs/--audio-dirs itself.
_OWN_BATCHES = "has no effect here: pseudo-labelling reads --shar-dirs/--audio-dirs in batches of its own"
PSEUDO_LABEL_DATA_FLAGS = (
    *DATA_FLAGS,
    *TRAINING_ONLY_FLAGS,
    Foreign("--bucketing-sampler", str2bool, True, _OWN_BATCHES, fatal=False),
    Foreign("--num-buckets", int, 10, _OWN_BATCHES, fatal=False),
    Foreign("--shuffle", str2bool, True, _OWN_BATCHES, fatal=False),
    Foreign("--drop-last", str2bool, True, _OWN_BATCHES, fatal=False),
    Foreign("--num-workers", int, 4, _OWN_BATCHES, fatal=False),
    Foreign("--enable-spec-aug", str2bool, True, "has no effect here: decoding never augments", fatal=False),
    Foreign("--spec-aug-time-warp-factor", int, 80, "has no effect here: decoding never augments", fatal=False),
)

AVERAGING_FLAGS = (
    *TRAINING_ONLY_FLAGS,
    Foreign(
        "--tokens",
        str,
        "data/lang_bpe_500/tokens.txt",
        "has no effect here: the vocabulary size is read off the checkpoint",
        fatal=False,
    ),
)

# ZIPA's and icefall's decoding methods that need what this project does not have.
UNSUPPORTED_CTC_METHODS = {
    **dict.fromkeys(
        ("1best", "nbest", "nbest-oracle", "nbest-rescoring", "whole-lattice-rescoring"),
        f"lattice decoding with an HLG graph {_K2}",
    ),
    "attention-decoder-rescoring-no-ngram": "attention-decoder rescoring of n-best lists is not implemented",
    "attention-decoder-rescoring-with-ngram": f"attention-decoder rescoring with an n-gram LM {_K2}",
}
UNSUPPORTED_TRANSDUCER_METHODS = {
    "beam_search": "icefall's one-hypothesis-at-a-time beam_search is not implemented (modified_beam_search is "
    "the one icefall recommends)",
    **{
        m: f"{m} {_K2}"
        for m in (
            "fast_beam_search",
            "fast_beam_search_nbest",
            "fast_beam_search_nbest_LG",
            "fast_beam_search_nbest_oracle",
            "fast_beam_search_LG",
        )
    },
    **dict.fromkeys(
        (
            "modified_beam_search_lm_shallow_fusion",
            "modified_beam_search_LODR",
            "modified_beam_search_lm_rescore",
            "modified_beam_search_lm_rescore_LODR",
        ),
        _NO_LM,
    ),
}


def add_foreign_flags(parser: argparse.ArgumentParser, flags: Sequence[Foreign], title: str) -> None:
    """Accept `flags` as the original does (a parser's own flag of the same name wins)."""
    group = parser.add_argument_group(title, "accepted so that the original recipes' command lines parse")
    taken = {option for action in parser._actions for option in action.option_strings}
    for entry in flags:
        if entry.flag not in taken:
            group.add_argument(
                entry.flag,
                dest=entry.dest,
                type=entry.type,
                default=entry.default,
                help=f"not supported here unless {entry.default!r}: {entry.answer}" if entry.fatal else entry.answer,
            )


def check_foreign_flags(args: argparse.Namespace, flags: Sequence[Foreign]) -> list[str]:
    """Raise a `UsageError` for the first flag whose value asks for a missing feature; return
    the notes (one line each) for flags set to a value that has no effect here."""
    notes = []
    for entry in flags:
        value = getattr(args, entry.dest, entry.default)
        if value == entry.quiet:
            continue
        line = f"{entry.flag} {value}: {entry.answer}"
        if entry.fatal:
            raise UsageError(line)
        notes.append(line)
    return notes


def check_decoding_methods(methods: Sequence[str], known: Sequence[str], unsupported: dict[str, str]) -> None:
    """A `UsageError` naming the first method that is not one of `known` (and why, for the
    original's methods this project does not have)."""
    for method in methods:
        if method in known:
            continue
        if method in unsupported:
            raise UsageError(f"--decoding-method {method}: {unsupported[method]}; use one of {', '.join(known)}")
        raise UsageError(f"--decoding-method {method}: unknown; choose from {', '.join(known)}")


def log_notes(notes: Sequence[str]) -> None:
    for note in notes:
        logging.info(note)
