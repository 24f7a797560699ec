"""Export ZIPA models to ONNX: one graph for CTC models, encoder/decoder/joiner for transducers.

Layout of an export folder (what `export_model` and `zipa export-onnx` write)::

    CTC:         model.onnx        (feats (N, T, 80), feat_lens (N,)) -> (log_probs (N, T', V), out_lens (N,))
    transducer:  encoder.onnx      (feats, feat_lens) -> (encoder_out (N, T', joiner_dim), out_lens)
                                   encoder_out is already projected by joiner.encoder_proj
                 decoder.onnx      context (N, context_size) int64 -> decoder_out (N, joiner_dim),
                                   already projected by joiner.decoder_proj
                 joiner.onnx       (encoder_out (N, joiner_dim), decoder_out (N, joiner_dim)) -> logits (N, V)
    both:        *.int8.onnx       (--int8) dynamic int8 quantisation of the MatMul/Gemm weights
                 *.fp16.onnx       (--fp16) float16 weights and compute, float32 inputs and outputs
                 config.json       kind, frame rate, vocabulary size, files
                 tokens.txt        "<piece> <id>" per line (icefall / sherpa-onnx format)
                 bpe.model         the sentencepiece model, so the folder is self-contained

Transducer graphs are split as icefall's `export-onnx.py` splits them: the search loop calls the
decoder and joiner once per emitted token / frame, which a single static graph cannot express.
The projections sit in the encoder and decoder graphs so that the joiner, run most often, is
just add + tanh + linear.

Every graph carries its settings as ONNX metadata (`kind`, `output_downsampling_factor`,
`vocab_size`, ...), so one `.onnx` file is enough to load a CTC model.

Exporter: the TorchScript-based exporter (`dynamo=False`) by default. It exports the tiny test
models in ~3 s where the dynamo exporter takes ~40-100 s, and both give the same graphs' values
(onnxruntime matches PyTorch to ~5e-7 either way). Where a torch release no longer has it, the
dynamo exporter is used instead. The Zipformer takes export-only paths while tracing (see
`zipa.model.zipformer._exporting`) so that nothing depends on the example's length: the exported
graphs take any batch size and any length of at least 9 feature frames.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
import torch.nn as nn
from torch import Tensor

from zipa.utils.atomic import open_atomic, write_text_atomic

if TYPE_CHECKING:
    from zipa.model.asr_model import AsrModel

PathLike = Union[str, Path]

FORMAT_VERSION = 1
DEFAULT_OPSET = 17
# ONNX protobufs cannot hold more than 2 GiB: larger models keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 1
# Example input of the traces: two utterances of different lengths, so padding is exercised.
_EXAMPLE_LENGTHS = (400, 323)

CTC_FILES = {"model": "model.onnx"}
TRANSDUCER_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joiner": "joiner.onnx"}
PRECISION_SUFFIX = {"fp32": ".onnx", "int8": ".int8.onnx", "fp16": ".fp16.onnx"}


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxruntime ({e}): pip install 'zipa-phones[onnx]'") from None


def _too_big_for_one_file(model: AsrModel) -> bool:
    return sum(p.numel() * 4 for p in model.parameters()) > _PROTOBUF_LIMIT


# ---------------------------------------------------------------------------------------------
# The graphs, as small modules around the AsrModel's parts
# ---------------------------------------------------------------------------------------------


def _encode(model: AsrModel, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
    """`AsrModel.forward_encoder` without its data-dependent branches: the padding mask is
    always built (it changes nothing without padding) and the input-length check is left to
    the caller (`zipa.onnx.runtime` checks lengths before running a graph)."""
    x, x_lens = model.encoder_embed(feats, feat_lens)
    padding_mask = torch.arange(x.shape[1], device=x.device).unsqueeze(0) >= x_lens.unsqueeze(1)
    encoder_out, encoder_out_lens = model.encoder(x.permute(1, 0, 2), x_lens, padding_mask)
    return encoder_out.permute(1, 0, 2), encoder_out_lens


class CtcGraph(nn.Module):
    """(feats, feat_lens) -> (CTC log-probs, output lengths)."""

    def __init__(self, model: AsrModel):
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        encoder_out, lens = _encode(self.model, feats, feat_lens)
        return self.model.ctc_output(encoder_out), lens


class TransducerEncoderGraph(nn.Module):
    """(feats, feat_lens) -> (joiner.encoder_proj(encoder_out), output lengths)."""

    def __init__(self, model: AsrModel):
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        encoder_out, lens = _encode(self.model, feats, feat_lens)
        return self.model.joiner.encoder_proj(encoder_out), lens


class TransducerDecoderGraph(nn.Module):
    """context (N, context_size) int64 -> joiner.decoder_proj(decoder(context)) (N, joiner_dim)."""

    def __init__(self, model: AsrModel):
        super().__init__()
        self.decoder = model.decoder
        self.decoder_proj = model.joiner.decoder_proj

    def forward(self, context: Tensor) -> Tensor:
        return self.decoder_proj(self.decoder(context, need_pad=False)).squeeze(1)


class TransducerJoinerGraph(nn.Module):
    """(projected encoder frame (N, J), projected decoder output (N, J)) -> logits (N, V)."""

    def __init__(self, model: AsrModel):
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out, project_input=False)


# ---------------------------------------------------------------------------------------------
# Writing graphs
# ---------------------------------------------------------------------------------------------


def _check_exportable(model: AsrModel) -> None:
    if getattr(model.encoder, "causal", False):
        # ChunkCausalDepthwiseConv1d picks its chunking from the input length in Python.
        raise NotImplementedError(
            "ONNX export of causal (chunked) Zipformers is not supported; the released ZIPA models are all non-causal"
        )


def _example_features(feature_dim: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(len(_EXAMPLE_LENGTHS), max(_EXAMPLE_LENGTHS), feature_dim, generator=generator)
    for i, n in enumerate(_EXAMPLE_LENGTHS):
        feats[i, n:] = 0.0
    return feats, torch.tensor(_EXAMPLE_LENGTHS, dtype=torch.int64)


def _legacy_exporter_available() -> bool:
    """Whether this torch still has the TorchScript-based exporter (deprecated in torch 2.9)."""
    import importlib.util

    return importlib.util.find_spec("torch.onnx._internal.torchscript_exporter") is not None


def _torch_export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    dynamo: bool,
) -> None:
    """torch.onnx.export into one self-contained file (see the module docstring for the choice
    of exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about Python-level shape checks (taken care of) and the legacy
        # exporter's deprecation notice would only confuse a user.
        warnings.simplefilter("ignore")
        if dynamo or not _legacy_exporter_available():
            _dynamo_export(module, args, path, input_names, output_names, dynamic_axes, opset)
        else:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )


def _dynamo_export(module, args, path, input_names, output_names, dynamic_axes, opset) -> None:
    from torch.export import Dim

    dims: dict[str, Dim] = {}
    names = list(module.forward.__code__.co_varnames[1 : 1 + len(args)])
    dynamic_shapes = {}
    for arg_name, input_name in zip(names, input_names):
        axes = dynamic_axes.get(input_name, {})
        spec = {}
        for axis, dim_name in axes.items():
            if dim_name not in dims:
                dims[dim_name] = Dim(dim_name, min=9, max=2**20) if dim_name == "T" else Dim(dim_name)
            spec[axis] = dims[dim_name]
        dynamic_shapes[arg_name] = spec or None
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=max(opset, 18),
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
    )


def _save(model_proto, path: Path) -> None:
    """Save an ONNX model as one file (atomically); beyond protobuf's 2 GiB, with a
    `<name>.data` beside it."""
    import onnx

    if model_proto.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save(
            model_proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
    else:
        with open_atomic(path, "wb") as f:
            f.write(model_proto.SerializeToString())


def fold_constants(path: PathLike, external_data: bool = False) -> None:
    """Rewrite the graph at `path` with onnxruntime's basic (hardware-independent) optimisations:
    constant folding and redundant-node removal, in standard ONNX ops.

    The eval paths fold activation shifts into biases computed from the weights
    (`zipa.model.scaling.bias_absorbing_constant`: a ReduceSum over each weight), which the
    torch exporter leaves in the graph. Folded, every weight is used once: int8 quantisation
    then replaces it instead of keeping a float copy beside it, and fp16 graphs do not need
    float16 ReduceSum kernels that onnxruntime's CPU provider lacks.
    """
    import onnxruntime as ort

    path = Path(path)
    tmp = path.with_name(path.name + ".folded.tmp")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp)
    options.log_severity_level = 3
    if external_data:  # beyond protobuf's 2 GiB
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", tmp.name + ".data")
    try:
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def add_metadata(path: PathLike, metadata: dict[str, object]) -> None:
    """Store `metadata` (values as strings) in the ONNX file's metadata_props."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key, prop.value = key, str(value)
    _save(proto, path)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file (without loading its weights into memory twice:
    onnxruntime reads them when it opens the session; this is for tools and tests)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _common_metadata(model: AsrModel, kind: str) -> dict[str, object]:
    encoder = model.encoder
    factor = int(encoder.output_downsampling_factor)
    meta = {
        "model_type": "zipa",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "output_downsampling_factor": factor,
        "frame_shift": 0.02 * factor,  # 100 Hz fbank, conv embed /2, then /factor
        "feature_dim": _feature_dim(model),
        "min_feature_frames": 9,
    }
    return meta


def _feature_dim(model: AsrModel) -> int:
    """Input feature dim of the conv front end (inverted from its output width)."""
    out_width = model.encoder_embed.out_width
    return 4 * out_width + 4  # 80 for the released models (as zipa.model.config._feature_dim)


def export_ctc(
    model: AsrModel,
    out_path: PathLike,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    feature_dim: int | None = None,
) -> Path:
    """Export a CTC AsrModel as one graph: (feats (N, T, F) float32, feat_lens (N,) int64) ->
    (log_probs (N, T', V), out_lens (N,) int64), dynamic batch and time axes. Returns the path."""
    _require_onnx()
    if not getattr(model, "use_ctc", False):
        raise ValueError("export_ctc: the model has no CTC head (a transducer: use export_transducer)")
    _check_exportable(model)
    out_path = Path(out_path)
    feature_dim = feature_dim or _feature_dim(model)
    with _eval_cpu(model):
        _torch_export(
            CtcGraph(model),
            _example_features(feature_dim),
            out_path,
            input_names=["feats", "feat_lens"],
            output_names=["log_probs", "out_lens"],
            dynamic_axes={
                "feats": {0: "N", 1: "T"},
                "feat_lens": {0: "N"},
                "log_probs": {0: "N", 1: "T_out"},
                "out_lens": {0: "N"},
            },
            opset=opset,
            dynamo=dynamo,
        )
    fold_constants(out_path, _too_big_for_one_file(model))
    meta = _common_metadata(model, "ctc")
    meta.update(feature_dim=feature_dim, vocab_size=model.ctc_output[1].out_features, blank_id=0, graph="model")
    add_metadata(out_path, meta)
    return out_path


def export_transducer(
    model: AsrModel,
    out_dir: PathLike,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    feature_dim: int | None = None,
) -> dict[str, Path]:
    """Export a transducer AsrModel as encoder.onnx, decoder.onnx and joiner.onnx in `out_dir`
    (see the module docstring for their inputs and outputs). Returns {graph name: path}."""
    _require_onnx()
    if not getattr(model, "use_transducer", False):
        raise ValueError("export_transducer: the model has no transducer (decoder and joiner)")
    _check_exportable(model)
    out_dir = Path(out_dir)
    feature_dim = feature_dim or _feature_dim(model)
    decoder, joiner = model.decoder, model.joiner
    joiner_dim = joiner.encoder_proj.out_features
    paths = {name: out_dir / file for name, file in TRANSDUCER_FILES.items()}
    with _eval_cpu(model):
        _torch_export(
            TransducerEncoderGraph(model),
            _example_features(feature_dim),
            paths["encoder"],
            input_names=["feats", "feat_lens"],
            output_names=["encoder_out", "out_lens"],
            dynamic_axes={
                "feats": {0: "N", 1: "T"},
                "feat_lens": {0: "N"},
                "encoder_out": {0: "N", 1: "T_out"},
                "out_lens": {0: "N"},
            },
            opset=opset,
            dynamo=dynamo,
        )
        context = torch.tensor([[-1] * (decoder.context_size - 1) + [decoder.blank_id], [5] * decoder.context_size])
        _torch_export(
            TransducerDecoderGraph(model),
            (context,),
            paths["decoder"],
            input_names=["context"],
            output_names=["decoder_out"],
            dynamic_axes={"context": {0: "N"}, "decoder_out": {0: "N"}},
            opset=opset,
            dynamo=dynamo,
        )
        example = torch.randn(3, joiner_dim, generator=torch.Generator().manual_seed(0))
        _torch_export(
            TransducerJoinerGraph(model),
            (example, example.flip(0)),
            paths["joiner"],
            input_names=["encoder_out", "decoder_out"],
            output_names=["logits"],
            dynamic_axes={"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logits": {0: "N"}},
            opset=opset,
            dynamo=dynamo,
        )
    meta = _common_metadata(model, "transducer")
    meta.update(
        feature_dim=feature_dim,
        vocab_size=joiner.output_linear.out_features,
        blank_id=decoder.blank_id,
        context_size=decoder.context_size,
        joiner_dim=joiner_dim,
    )
    for name, path in paths.items():
        fold_constants(path, name == "encoder" and _too_big_for_one_file(model))
        add_metadata(path, dict(meta, graph=name))
    return paths


class _eval_cpu:
    """Context: the model in eval mode on CPU in float32; its mode and device restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        param = next(self.model.parameters())
        self.device, self.dtype, self.training = param.device, param.dtype, self.model.training
        self.model.to("cpu", torch.float32).eval()
        return self.model

    def __exit__(self, *exc):
        self.model.to(self.device, self.dtype).train(self.training)
        return False


# ---------------------------------------------------------------------------------------------
# Smaller variants
# ---------------------------------------------------------------------------------------------


def quantize_int8(in_path: PathLike, out_path: PathLike) -> Path:
    """Dynamic int8 quantisation (onnxruntime): MatMul/Gemm weights stored as int8 (QInt8,
    which onnxruntime's x86 and ARM kernels run as u8 activations x s8 weights), activations
    quantised on the fly. Convolutions stay float (ConvInteger has no int8-weight CPU kernel),
    as in icefall's and sherpa-onnx's exports."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ImportError("int8 quantisation needs onnxruntime: pip install 'zipa-phones[onnx]'") from None
    out_path = Path(out_path)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the model (shape inference) first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                model_input=str(in_path),
                model_output=str(out_path),
                op_types_to_quantize=["MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
            )
    finally:
        root.setLevel(level)
    return out_path


def convert_fp16(in_path: PathLike, out_path: PathLike) -> Path:
    """float16 weights and compute, with float32 (and int64) inputs and outputs kept, so that
    callers feed the same arrays. Uses the converter shipped in onnxruntime
    (`onnxruntime.transformers.float16`, the same code as onnxconverter-common's). fp16 pays off
    on GPUs (CUDAExecutionProvider); onnxruntime's CPU kernels for it are few and slow."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ImportError("fp16 conversion needs onnxruntime: pip install 'zipa-phones[onnx]'") from None
    proto = onnx.load(str(in_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = convert_float_to_float16(proto, keep_io_types=True)
    out_path = Path(out_path)
    _save(proto, out_path)
    return out_path


# ---------------------------------------------------------------------------------------------
# A whole export folder
# ---------------------------------------------------------------------------------------------


def write_tokens(tokenizer, path: PathLike) -> Path:
    """tokens.txt: "<piece> <id>" per line, ids 0..V-1."""
    path = Path(path)
    lines = [f"{tokenizer.id_to_piece(i)} {i}" for i in range(tokenizer.vocab_size)]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def export_model(
    model: AsrModel,
    out_dir: PathLike,
    int8: bool = False,
    fp16: bool = False,
    bpe_model: PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
) -> dict[str, Path]:
    """Export `model` (CTC, else transducer) into `out_dir` with its tokenizer and config.json;
    `int8`/`fp16` add quantised / half-precision copies of each graph. Returns {label: path}.

    A model with both heads is exported as CTC (what `zipa.inference.transcriber` decodes with)."""
    from zipa.text.tokenizer import Tokenizer, default_bpe_model_path

    _require_onnx()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "ctc" if getattr(model, "use_ctc", False) else "transducer"
    if kind == "ctc":
        graphs = {"model": export_ctc(model, out_dir / CTC_FILES["model"], opset=opset, dynamo=dynamo)}
    else:
        graphs = export_transducer(model, out_dir, opset=opset, dynamo=dynamo)
    written: dict[str, Path] = {f"{name}.fp32": path for name, path in graphs.items()}
    precisions = ["fp32"]
    for wanted, precision, convert in ((int8, "int8", quantize_int8), (fp16, "fp16", convert_fp16)):
        if not wanted:
            continue
        precisions.append(precision)
        for name, path in graphs.items():
            target = path.with_name(path.name[: -len(".onnx")] + PRECISION_SUFFIX[precision])
            written[f"{name}.{precision}"] = convert(path, target)

    bpe_path = Path(bpe_model) if bpe_model is not None else default_bpe_model_path()
    tokenizer = Tokenizer.from_file(bpe_path)
    written["tokens"] = write_tokens(tokenizer, out_dir / "tokens.txt")
    written["bpe_model"] = out_dir / "bpe.model"
    if bpe_path.resolve() != written["bpe_model"].resolve():
        shutil.copyfile(bpe_path, written["bpe_model"])

    meta = read_metadata(next(iter(graphs.values())))
    config = {
        "model_type": "zipa",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "output_downsampling_factor": int(meta["output_downsampling_factor"]),
        "frame_rate": 50 / int(meta["output_downsampling_factor"]),
        "frame_shift": float(meta["frame_shift"]),
        "feature_dim": int(meta["feature_dim"]),
        "vocab_size": int(meta["vocab_size"]),
        "blank_id": int(meta["blank_id"]),
        "opset": opset,
        "precisions": precisions,
        "files": {
            precision: {name: path.name[: -len(".onnx")] + PRECISION_SUFFIX[precision] for name, path in graphs.items()}
            for precision in precisions
        },
        "tokens": "tokens.txt",
        "bpe_model": "bpe.model",
    }
    if kind == "transducer":
        config.update(context_size=int(meta["context_size"]), joiner_dim=int(meta["joiner_dim"]))
    written["config"] = out_dir / "config.json"
    write_text_atomic(written["config"], json.dumps(config, indent=1) + "\n")
    return written
