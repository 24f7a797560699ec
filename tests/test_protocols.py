"""The protocols of the seams (`zipa.model.protocols`, `zipa.data.protocols`) and the classes
that fill them: `AsrModel` and the ONNX runtime models for search and inference,
`AsrDataModule` for the recipes.

The protocols are structural and not `runtime_checkable` (see `zipa.model.protocols`), so
conformance is checked here member by member: each member exists (module members of an
`nn.Module` included), data members of a plain type have it, members typed with a protocol
conform to it in turn, and each callable accepts the calls its declaration allows (positional
parameters positionally, keyword-only ones by keyword; an `nn.Module` through its `forward`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from types import SimpleNamespace
from typing import Any, Dict, Iterable, List, Optional, Protocol

import pytest
import torch.nn as nn

from zipa.data.module import AsrDataModule
from zipa.data.protocols import DataModule
from zipa.model.asr_model import build_model
from zipa.model.config import preset
from zipa.model.protocols import CtcHead, EncoderModel, TransducerDecoder, TransducerHead
from zipa.onnx.runtime import OnnxCtcModel, OnnxTransducerModel

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _is_protocol(cls: Any) -> bool:
    return isinstance(cls, type) and getattr(cls, "_is_protocol", False) and cls is not Protocol


def protocol_members(protocol: type) -> Dict[str, Optional[Any]]:
    """{name: declared function, or None for a data member} of `protocol` and its protocol bases."""
    members: Dict[str, Optional[Any]] = {}
    for cls in reversed(protocol.__mro__):
        if not _is_protocol(cls):
            continue
        for name in vars(cls).get("__annotations__", {}):
            members[name] = None
        for name, value in vars(cls).items():
            value = value.__func__ if isinstance(value, classmethod) else value
            declared_here = inspect.isfunction(value) and value.__qualname__ == f"{cls.__qualname__}.{name}"
            if declared_here and (not name.startswith("_") or name in ("__init__", "__call__")):
                members[name] = value
    return members


def _accepts(target: Any, declared: Any) -> bool:
    """Whether `target` accepts every call `declared` (a protocol function, with self) allows."""
    params = list(inspect.signature(declared).parameters.values())[1:]
    args = [object() for p in params if p.kind in _POSITIONAL]
    kwargs = {p.name: object() for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY}
    try:
        inspect.signature(target).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def conformance_problems(obj: Any, protocol: type, skip: Iterable[str] = ()) -> List[str]:
    """What keeps `obj` from satisfying `protocol` (empty when it does); `skip`: members not checked."""
    hints = typing.get_type_hints(protocol)
    problems = []
    for name, declared in protocol_members(protocol).items():
        if name in skip:
            continue
        if name == "__init__":
            target = type(obj)
        elif name == "__call__":
            target = obj
        elif hasattr(obj, name):
            target = getattr(obj, name)
        else:
            problems.append(f"no {name}")
            continue
        if declared is None:
            hint = hints.get(name)
            if _is_protocol(hint):
                problems += [f"{name}: {p}" for p in conformance_problems(target, hint)]
            elif isinstance(hint, type) and not isinstance(target, hint):
                problems.append(f"{name} is a {type(target).__name__}, not a {hint.__name__}")
            continue
        if not callable(target):
            problems.append(f"{name} is not callable")
            continue
        target = target.forward if isinstance(target, nn.Module) else target
        if not _accepts(target, declared):
            problems.append(f"{name}{inspect.signature(target)} refuses calls as {name}{inspect.signature(declared)}")
    return problems


# The members of the head a model does not use need not exist.
CTC_ONLY = set(protocol_members(TransducerHead))
TRANSDUCER_ONLY = set(protocol_members(CtcHead))


# -- search and inference: AsrModel and the ONNX runtime models -----------------------------------


@pytest.mark.parametrize("name, skip", [("tiny", CTC_ONLY), ("tiny-transducer", TRANSDUCER_ONLY)])
def test_asr_model_is_an_encoder_model(name, skip):
    assert conformance_problems(build_model(preset(name)), EncoderModel, skip=skip) == []


def test_asr_model_with_both_heads_has_every_member():
    config = dataclasses.replace(preset("tiny"), use_transducer=True)
    assert conformance_problems(build_model(config), EncoderModel) == []


class _Session:
    """What the ONNX model classes read from an onnxruntime session when they are built: its
    metadata (as `zipa.onnx.export` writes it). Conformance is about the classes' members; that
    the graphs run behind them is tests/test_onnx.py's business."""

    def __init__(self, **metadata: Any):
        self.metadata = {"model_type": "zipa", "feature_dim": "80", "vocab_size": "127",
                         **{k: str(v) for k, v in metadata.items()}}

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map=self.metadata)


def test_onnx_ctc_model_is_an_encoder_model():
    model = OnnxCtcModel(_Session(kind="ctc", output_downsampling_factor=1))
    assert conformance_problems(model, EncoderModel, skip=CTC_ONLY) == []


def test_onnx_transducer_model_is_an_encoder_model():
    meta = dict(kind="transducer", output_downsampling_factor=2, blank_id=0, context_size=2, joiner_dim=64)
    sessions = [_Session(**meta), _Session(**meta), _Session(**meta)]
    assert conformance_problems(OnnxTransducerModel(*sessions), EncoderModel, skip=TRANSDUCER_ONLY) == []


def test_conformance_check_reports_what_is_missing_or_refused():
    ctc = OnnxCtcModel(_Session(kind="ctc", output_downsampling_factor=1))
    assert conformance_problems(ctc, TransducerHead) == ["no decoder", "no joiner"]

    class OneArgDecoder:  # no need_pad keyword, and a context_size of the wrong type
        blank_id = 0
        context_size = "2"

        def __call__(self, y):
            return y

    problems = conformance_problems(OneArgDecoder(), TransducerDecoder)
    assert [p.split()[0] for p in problems] == ["context_size", "__call__(y)"]


# -- the recipes' data module ---------------------------------------------------------------------


def test_asr_data_module_is_a_data_module():
    parser = argparse.ArgumentParser()
    AsrDataModule.add_arguments(parser)
    data = AsrDataModule(parser.parse_args([]), output_downsampling_factor=2, ctc=False)
    assert conformance_problems(data, DataModule) == []
    # The check covered the constructor and the classmethod too.
    assert set(protocol_members(DataModule)) == {
        "add_arguments", "__init__", "train_cuts", "unsup_cuts", "dev_cuts", "test_cuts",
        "train_dataloaders", "valid_dataloaders", "test_dataloaders",
    }
