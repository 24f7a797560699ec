"""The objective a model was trained with, recorded beside its architecture.

Training writes it (the heads trained, CR-CTC or not, the loss scales) into <exp-dir>/config.json
under "objective" and into every checkpoint; generate_averaged_model carries it into the averaged
model's config.json. Fine-tuning reads it back: a run started from a model trains with that
model's objective unless its own flags say otherwise, and logs both. A model that does not record
one (trained before this was written, or elsewhere) falls back to the released models' own
objective when it is one of them, else to the recipe's defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from zipa.model.config import ModelConfig
from zipa.utils.atomic import write_text_atomic

HEADS = ("use_ctc", "use_transducer", "use_attention_decoder")
# The training flags that make up the objective besides the heads (the architecture's flags).
LOSS_FLAGS = (
    "use_cr_ctc",
    "ctc_loss_scale",
    "cr_loss_scale",
    "cr_loss_masked_scale",
    "time_mask_ratio",
    "simple_loss_scale",
    "prune_range",
    "lm_scale",
    "am_scale",
    "attention_decoder_loss_scale",
)

# ZIPA's train.py defaults for the loss scales: the released models were trained with them
# (ZIPA's README commands set the heads and --use-cr-ctc, no scale).
_ZIPA_SCALES = dict(
    ctc_loss_scale=0.2,
    cr_loss_scale=0.15,
    cr_loss_masked_scale=1.0,
    time_mask_ratio=2.0,
    simple_loss_scale=0.5,
    prune_range=5,
    lm_scale=0.25,
    am_scale=0.1,
    attention_decoder_loss_scale=0.8,
)
RELEASED = {
    "ctc": dict(use_ctc=True, use_transducer=False, use_attention_decoder=False, use_cr_ctc=True, **_ZIPA_SCALES),
    "transducer": dict(
        use_ctc=False, use_transducer=True, use_attention_decoder=False, use_cr_ctc=False, **_ZIPA_SCALES
    ),
}


def objective_of(args: argparse.Namespace, config: ModelConfig) -> dict[str, Any]:
    """The objective a run trains with: the heads of the model it built, the loss flags (CR-CTC
    only where there is a CTC head to regularise, as the loss computes it)."""
    objective = {**{h: getattr(config, h) for h in HEADS}, **{f: getattr(args, f) for f in LOSS_FLAGS}}
    objective["use_cr_ctc"] = bool(args.use_cr_ctc and config.use_ctc)
    return objective


def describe(objective: dict[str, Any] | None) -> str:
    """'CR-CTC (ctc_loss_scale 0.2, cr_loss_scale 0.15, ...)': the losses and their scales."""
    if objective is None:
        return "an objective it does not record"
    parts, scales = [], []
    if objective.get("use_ctc"):
        parts.append("CR-CTC" if objective.get("use_cr_ctc") else "CTC")
        scales += ["ctc_loss_scale"] + (["cr_loss_scale", "time_mask_ratio"] if objective.get("use_cr_ctc") else [])
    if objective.get("use_transducer"):
        parts.append("transducer")
        scales += ["simple_loss_scale", "prune_range", "lm_scale", "am_scale"]
    if objective.get("use_attention_decoder"):
        parts.append("attention decoder")
        scales.append("attention_decoder_loss_scale")
    shown = ", ".join(f"{name} {objective[name]}" for name in scales if name in objective)
    return " + ".join(parts or ["no head"]) + (f" ({shown})" if shown else "")


def save_config(config: ModelConfig, objective: dict[str, Any], path: Path) -> None:
    """config.json: the architecture's fields (what `ModelConfig.load_json` reads) and "objective"."""
    write_text_atomic(path, json.dumps({**config.to_dict(), "objective": objective}, indent=1) + "\n")


def read_objective(config_json: Path | None) -> dict[str, Any] | None:
    """The "objective" a config.json records, or None."""
    if config_json is None or not Path(config_json).is_file():
        return None
    try:
        objective = json.loads(Path(config_json).read_text()).get("objective")
    except (OSError, ValueError, AttributeError):
        return None
    return objective if isinstance(objective, dict) else None


def add_objective(config_json: Path, objective: dict[str, Any] | None) -> None:
    """Record `objective` (when known) in the config.json `config_json` (an averaged model's)."""
    if objective is not None and Path(config_json).is_file():
        data = json.loads(Path(config_json).read_text())
        write_text_atomic(config_json, json.dumps({**data, "objective": objective}, indent=1) + "\n")


def checkpoint_objective(spec: str, path: Path) -> dict[str, Any] | None:
    """The objective of the model `--finetune-ckpt SPEC` resolved to `path`: recorded in the
    config.json beside it, else the released objective when SPEC or the file is a released model."""
    from zipa.hub.pretrained import MODELS, find_model
    from zipa.model.io import config_json_for

    recorded = read_objective(config_json_for(Path(path)))
    if recorded is not None:
        return recorded
    released = find_model(str(spec)) or next((m for m in MODELS if m.filename == Path(path).name), None)
    return dict(RELEASED[released.kind]) if released is not None else None


def follow_checkpoint(args: argparse.Namespace, recorded: dict[str, Any] | None) -> str:
    """Set the loss flags the command line did not give (`args.given_flags`) to the checkpoint's
    `recorded` objective; returns where this run's loss settings come from, for the log. With
    CR-CTC taken from the checkpoint, SpecAugment moves into the model (--enable-spec-aug False)
    unless that flag was given too. The heads are the checkpoint's already (`FinetuneInit`)."""
    given: frozenset[str] = getattr(args, "given_flags", frozenset())
    taken: list[str] = []
    if recorded is not None:
        taken = [f for f in LOSS_FLAGS if f not in given and f in recorded]
        for name in taken:
            setattr(args, name, recorded[name])
    if "use_cr_ctc" in taken and args.use_cr_ctc and "enable_spec_aug" not in given:
        args.enable_spec_aug = False
    overridden = " ".join(f"--{f.replace('_', '-')} {getattr(args, f)}" for f in LOSS_FLAGS if f in given)
    if recorded is None:
        return "this recipe's defaults" + (f", and {overridden}" if overridden else "")
    return "the checkpoint's" + (f", except {overridden}" if overridden else "")
