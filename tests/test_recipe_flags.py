"""Every flag of ZIPA's (and icefall's) recipe scripts is accepted by the script of the same name
here, with the original's default unless a documented reason keeps another one.

tests/data/zipa_recipe_flags.json lists the original parsers' flags and defaults (read off their
argparse calls; data only). A flag dropped from a parser here, or a default changed away from the
original's without a reason in KEPT_DEFAULTS (and the README), fails these tests.
"""

import importlib.util
import json

import pytest
from conftest import REPO

from zipa.model.config import to_int_tuple
from zipa.train.args import model_config_from_args

ORIGINAL = json.loads((REPO / "tests" / "data" / "zipa_recipe_flags.json").read_text())["scripts"]
SCRIPTS = sorted(ORIGINAL)

# The defaults kept different from the original's, with the reason (each flag is named in the
# README's "Flags and defaults of the original recipes" section, which the last test checks).
_FROM_CHECKPOINT = "the architecture is read from the checkpoint (the original builds it from the flags)"
KEPT_DEFAULTS = {
    "--max-duration": "pseudo_label.py: not given, 600 s a batch unless --batch-size is given (its own batching)",
}
MODEL_FLAGS_FROM_CHECKPOINT = ("decode", "generate_averaged_model", "pseudo_label")


def load_script(name: str):
    path = REPO / name
    spec = importlib.util.spec_from_file_location(f"recipe_{name.replace('/', '_')[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parsers():
    return {name: load_script(name).get_parser() for name in SCRIPTS}


def options(parser):
    return {option: action for action in parser._actions for option in action.option_strings}


def effective_defaults(name: str, parser):
    """The value each flag takes when not given: the parsed namespace, with a training script's
    model flags resolved through its preset (what the model is built with)."""
    required = [a.option_strings[0] for a in parser._actions if a.required]
    args = parser.parse_args([x for flag in required for x in (flag, "x")])
    values = vars(args)
    if name.endswith("train.py"):
        config = model_config_from_args(args, 1)
        values.update({k: v for k, v in config.to_dict().items() if k in values})
    return values


def same(ours, theirs) -> bool:
    """Equal as the command line means them: "2,2,3" == (2, 2, 3), "48" == 48, a Path == its str."""
    if ours == theirs:
        return True
    if isinstance(ours, tuple) or isinstance(theirs, tuple):
        try:
            return to_int_tuple(ours) == to_int_tuple(theirs)
        except (TypeError, ValueError):
            return False
    return str(ours) == str(theirs)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_original_flag_is_accepted(parsers, name):
    ours = options(parsers[name])
    original = {**ORIGINAL[name]["zipa"], **ORIGINAL[name]["icefall"]}
    missing = sorted(flag for flag in original if flag not in ours)
    assert not missing, f"{name} lacks the original's {missing}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_defaults_are_the_originals_unless_a_reason_keeps_ours(parsers, name):
    ours = effective_defaults(name, parsers[name])
    actions = options(parsers[name])
    original = {**ORIGINAL[name]["icefall"], **ORIGINAL[name]["zipa"]}
    model_dests = set(model_config_from_args.__globals__["ModelConfig"].__dataclass_fields__) | {"preset"}
    differing = {}
    for flag, entry in original.items():
        dest = actions[flag].dest
        if same(ours[dest], entry["default"]):
            continue
        if dest in model_dests and any(part in name for part in MODEL_FLAGS_FROM_CHECKPOINT) and ours[dest] is None:
            continue  # _FROM_CHECKPOINT
        if flag in KEPT_DEFAULTS and "pseudo_label" in name:
            continue
        differing[flag] = (ours[dest], entry["default"])
    assert not differing, f"{name}: defaults (ours, original) differ: {differing}"


def test_training_defaults_follow_zipa_objective(parsers):
    """ZIPA's train.py trains a transducer, without CR-CTC, when no flag names the objective."""
    for name in ("zipformer_crctc/train.py", "zipformer_transducer/train.py"):
        args = parsers[name].parse_args([])
        config = model_config_from_args(args, 1)
        assert (config.use_transducer, config.use_ctc, args.use_cr_ctc, args.enable_spec_aug) == (True, False, False, True)


def test_readme_names_every_kept_default():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Flags and defaults of the original recipes"):]
    section = section[: section.index("\n## ")]
    for flag in KEPT_DEFAULTS:
        assert flag in section, flag
    assert _FROM_CHECKPOINT.split(" (")[0] in section
