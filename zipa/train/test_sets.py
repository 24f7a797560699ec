"""Decode test sets and write icefall-style results: what ctc_decode.py and decode.py run.

For each test set (lhotse shar folders through the data module) and decoding method: hypotheses
from the shared model path, then recogs-*.txt, errs-*.txt, metrics-*.json and a PER summary
(`zipa.evaluation.metrics.save_results`), and a PER/PFER table at the end.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

import torch
from tqdm import tqdm

from zipa.data.protocols import DataModule
from zipa.decoding import ctc_greedy_search, ctc_prefix_beam_search, modified_beam_search, transducer_greedy_search
from zipa.evaluation.icefall_files import save_results
from zipa.evaluation.metrics import EvaluationResult, summarise_table
from zipa.model.io import default_device
from zipa.model.protocols import EncoderModel
from zipa.text.tokenizer import Tokenizer, default_bpe_model_path
from zipa.train.args import (
    BPE_MODEL_HELP,
    ZIPA_BPE_MODEL,
    add_checkpoint_selection_arguments,
    check_data_dirs,
    load_selected_model,
)
from zipa.train.compat import (
    CTC_DECODING_FLAGS,
    DATA_FLAGS,
    TRAINING_ONLY_FLAGS,
    TRANSDUCER_DECODING_FLAGS,
    UNSUPPORTED_CTC_METHODS,
    UNSUPPORTED_TRANSDUCER_METHODS,
    Foreign,
    add_foreign_flags,
    check_decoding_methods,
    check_foreign_flags,
    log_notes,
)
from zipa.utils.atomic import write_text_atomic
from zipa.utils.flags import UsageError, usage_errors_exit

# Decoding methods: name -> search(model, encoder_out, lens, beam) -> ids. ZIPA's default,
# k2's "ctc-decoding", is the best path through the CTC topology: with nothing else composed
# in, that path takes each frame's most probable token, so it is ctc-greedy-search.
CTC_METHODS: dict[str, Callable] = {
    "ctc-decoding": lambda model, out, lens, beam: ctc_greedy_search(model.ctc_output(out), lens),
    "ctc-greedy-search": lambda model, out, lens, beam: ctc_greedy_search(model.ctc_output(out), lens),
    "prefix-beam-search": lambda model, out, lens, beam: ctc_prefix_beam_search(model.ctc_output(out), lens, beam=beam),
}
TRANSDUCER_METHODS: dict[str, Callable] = {
    "greedy_search": lambda model, out, lens, beam: transducer_greedy_search(model, out, lens),
    "modified_beam_search": lambda model, out, lens, beam: modified_beam_search(model, out, lens, beam=beam),
}


def checkpoint_suffix(args: argparse.Namespace) -> str:
    if args.model_path is not None:
        return Path(args.model_path).stem
    selection = f"iter-{args.iter}" if args.iter > 0 else f"epoch-{args.epoch}"
    return f"{selection}-avg-{args.avg}" + ("-use-averaged-model" if args.use_averaged_model else "")


@torch.inference_mode()
def decode_dataset(
    loader,
    model: EncoderModel,
    tokenizer: Tokenizer,
    methods: Sequence[str],
    beam: int,
    device: torch.device,
    max_batches: int = 0,
) -> dict[str, list[EvaluationResult]]:
    """Hypotheses of every utterance in `loader` (its first `max_batches` batches when > 0) for
    each method in `methods`."""
    searches = {**CTC_METHODS, **TRANSDUCER_METHODS}
    results: dict[str, list[EvaluationResult]] = {m: [] for m in methods}
    for index, batch in enumerate(tqdm(loader, desc="decoding", unit="batch", leave=False)):
        if 0 < max_batches <= index:
            break
        sup = batch["supervisions"]
        feats, lens = batch["inputs"].to(device), sup["num_frames"].to(device)
        encoder_out, encoder_out_lens = model.forward_encoder(feats, lens)
        cut_ids = [cut.id for cut in sup["cut"]]
        languages = sup.get("language") or [None] * len(cut_ids)
        for method in methods:
            ids = searches[method](model, encoder_out, encoder_out_lens, beam)
            for cut_id, ref, hyp, lang in zip(cut_ids, sup["text"], tokenizer.decode_batch(ids), languages):
                results[method].append(EvaluationResult(cut_id, ref, hyp.split(), lang))
    return results


def add_decoding_arguments(
    parser: argparse.ArgumentParser, methods: Sequence[str], default: str, bpe_model: str = ZIPA_BPE_MODEL
) -> None:
    add_checkpoint_selection_arguments(parser)
    group = parser.add_argument_group("decoding")
    same = " (ctc-decoding, ZIPA's default, is k2's best path through the CTC topology: the greedy path)"
    group.add_argument(
        "--decoding-method",
        default=default,
        help=f"one or more, comma-separated: {', '.join(methods)}" + (same if "ctc-decoding" in methods else ""),
    )
    group.add_argument("--beam-size", type=int, default=4)
    group.add_argument("--bpe-model", default=bpe_model, help=BPE_MODEL_HELP)
    group.add_argument("--res-dir", type=Path, default=None, help="results folder (default: <exp-dir>/<method>)")
    group.add_argument("--device", default=str(default_device()))
    group.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="decode only the first N batches of each test set (0: all); for trying a command line",
    )


def run_decoding(
    args: argparse.Namespace,
    data_module_class: type[DataModule],
    known_methods: Sequence[str],
    output_downsampling_factor: int,
    config_overrides: dict | None = None,
) -> dict[str, dict[str, dict]]:
    """Decode every --test-shar-dirs set with every requested method; returns the metrics."""
    methods = [m.strip() for m in args.decoding_method.split(",") if m.strip()]
    check_decoding_methods(methods, known_methods, {**UNSUPPORTED_CTC_METHODS, **UNSUPPORTED_TRANSDUCER_METHODS})
    if not getattr(args, "test_shar_dirs", None):
        raise UsageError(
            "no test sets: give --test-shar-dirs NAME=DIR ... (lhotse shar folders; ZIPA's test-set "
            "paths are not built in)"
        )
    check_data_dirs(args, "test_shar_dirs")
    device = torch.device(args.device)
    model, config = load_selected_model(args, device=str(device), **(config_overrides or {}))
    if any(m in CTC_METHODS for m in methods) and not config.use_ctc:
        raise UsageError(
            f"--decoding-method {args.decoding_method}: this model has no CTC head; "
            "use greedy_search or modified_beam_search (zipformer_transducer/decode.py)"
        )
    if any(m in TRANSDUCER_METHODS for m in methods) and not config.use_transducer:
        raise UsageError(
            f"--decoding-method {args.decoding_method}: this model has no transducer head; "
            "use ctc-greedy-search or prefix-beam-search (zipformer_crctc/ctc_decode.py)"
        )
    tokenizer = Tokenizer.from_file(args.bpe_model or default_bpe_model_path())
    data = data_module_class(args, output_downsampling_factor=config.output_downsampling_factor, ctc=config.use_ctc)
    test_sets = data.test_cuts()
    suffix = checkpoint_suffix(args)
    res_dir = args.res_dir or (Path(args.exp_dir if args.model_path is None else args.model_path.parent) / methods[0])
    res_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[str, dict]] = {}
    for name, cuts in test_sets.items():
        logging.info(f"decoding {name}")
        results = decode_dataset(
            data.test_dataloaders(cuts),
            model,
            tokenizer,
            methods,
            args.beam_size,
            device,
            getattr(args, "max_batches", 0),
        )
        metrics[name] = save_results(res_dir, name, suffix, results)
    table = summarise_table({f"{name} {m}": v for name, by in metrics.items() for m, v in by.items()})
    write_text_atomic(res_dir / f"summary-{suffix}.txt", table + "\n")
    print(table)
    print(f"results in {res_dir}")
    return metrics


# What differs between the two recipes' decode scripts: their methods, ZIPA's default method
# and --bpe-model, and the flags of the original's k2 and LM decoding.
class RecipeDecoding(TypedDict):
    """The keyword arguments a recipe's decode script passes to `decoding_parser` and `main`."""

    methods: dict[str, Callable]
    default_method: str
    bpe_model: str
    foreign: Sequence[Foreign]


CTC_DECODING: RecipeDecoding = {
    "methods": CTC_METHODS,
    "default_method": "ctc-decoding",
    "bpe_model": ZIPA_BPE_MODEL,
    "foreign": CTC_DECODING_FLAGS,
}
TRANSDUCER_DECODING: RecipeDecoding = {
    "methods": TRANSDUCER_METHODS,
    "default_method": "greedy_search",
    "bpe_model": "data/lang_bpe_500/bpe.model",
    "foreign": TRANSDUCER_DECODING_FLAGS,
}


def decoding_parser(
    description: str,
    data_module_class: type[DataModule],
    methods: dict[str, Callable],
    default_method: str,
    bpe_model: str,
    foreign: Sequence[Foreign],
) -> argparse.ArgumentParser:
    """A recipe's decode flags: ZIPA's model flags (accepted; what the weights cannot show is
    taken from them), checkpoint selection, decoding and data flags, and the original's flags
    for what this project does not have (`zipa.train.compat`)."""
    from zipa.train.args import add_model_arguments

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(parser, from_checkpoint=True)
    add_decoding_arguments(parser, list(methods), default=default_method, bpe_model=bpe_model)
    data_module_class.add_arguments(parser)
    add_foreign_flags(parser, [*foreign, *DATA_FLAGS, *TRAINING_ONLY_FLAGS], "original flags")
    return parser


def main(
    description: str,
    data_module_class: type[DataModule],
    methods: dict[str, Callable],
    default_method: str,
    output_downsampling_factor: int,
    argv: Sequence[str] | None = None,
    bpe_model: str = ZIPA_BPE_MODEL,
    foreign: Sequence[Foreign] = (),
) -> dict[str, dict[str, dict]]:
    """A recipe's decode script: `decoding_parser`'s flags, then `run_decoding`. A user error
    ends in one line and exit status 2."""
    from zipa.train.args import decoding_overrides, parse_noting_given, resolve_bpe_model

    parser = decoding_parser(description, data_module_class, methods, default_method, bpe_model, foreign)
    args = parse_noting_given(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with usage_errors_exit(parser.prog):
        resolve_bpe_model(args)
        log_notes(check_foreign_flags(args, [*foreign, *DATA_FLAGS, *TRAINING_ONLY_FLAGS]))
        return run_decoding(
            args, data_module_class, list(methods), output_downsampling_factor, decoding_overrides(args)
        )
