"""Run exported ZIPA graphs (see `zipa.onnx.export`) with onnxruntime as models that satisfy
`zipa.model.protocols.EncoderModel`, the protocol `zipa.inference.transcriber.Transcriber` and
`zipa.decoding` are written against (tests/test_protocols.py checks both classes).

So the ONNX backend shares every step of the one inference path (features, search, alignment,
tokenizer, long audio) and replaces only the network:

- `OnnxCtcModel`: `forward_encoder(feats, feat_lens)` runs the whole CTC graph and returns the
  CTC *log-probs* (not the encoder output) with their lengths; `ctc_output` is therefore the
  identity. Code that calls `model.ctc_output(model.forward_encoder(...)[0])`, as the shared
  path does, gets the same log-probs as from the PyTorch model.
- `OnnxTransducerModel`: `forward_encoder` returns the encoder output already projected by the
  joiner's `encoder_proj`; `decoder(context, need_pad=False)` returns (N, 1, joiner_dim) already
  projected by `decoder_proj`; `joiner.encoder_proj` / `joiner.decoder_proj` are identities and
  `joiner(enc, dec, project_input=False)` broadcasts its inputs like the PyTorch joiner.

Both are `nn.Module`s without parameters so that `Transcriber` can call `.to()` / `.eval()`;
the graphs run on onnxruntime's providers (CPU by default), and results are returned as torch
tensors on the device of the inputs.

Two layouts of graphs load into these classes (`load_onnx_model`), told apart by each graph's
metadata and input/output names:

- this project's exports (`zipa.onnx.export`, metadata model_type=zipa; a folder with
  config.json, tokens.txt and bpe.model, or a lone .onnx file);
- the graphs upstream ZIPA publishes in the Hub repos of its final models
  (`zipa.onnx.upstream` has their names and shapes): ``model.onnx`` (CR-CTC: x, x_lens ->
  log_probs, log_probs_len; model_type=zipformer2_ctc) or ``encoder-epoch-999-avg-1.onnx``,
  ``decoder-...``, ``joiner-...`` (transducers: x, x_lens -> encoder_out, encoder_out_lens;
  y -> decoder_out; encoder_out, decoder_out -> logit), each also as ``.int8.onnx`` and
  ``.fp16.onnx``, with tokens.txt. They compute what this project's graphs compute (the
  encoder and decoder graphs already projected, log-softmax in the CTC graph), under other
  names; their metadata has no frame rate, so the encoder is run once on a 103-frame probe
  when loading to measure it (50 Hz CR-CTC, 25 Hz transducer). Blank is id 0; the decoder's
  context size and vocabulary come from its metadata, the joiner's width from its own.

A path is taken as it is; a model name (``zipa-cr-small-500k``) or Hub repo id is resolved to
upstream's graphs of the asked precision in the Hugging Face cache (`resolve_onnx`). Without a
bpe.model beside the graphs the packaged tokenizer is used, after `onnx_tokenizer` has checked
that the tokens.txt beside them lists the same pieces at the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from zipa.onnx import upstream
from zipa.onnx.export import CTC_FILES, PRECISION_SUFFIX, TRANSDUCER_FILES

PathLike = Union[str, Path]
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def make_session(path: PathLike, num_threads: int | None = None, providers: Sequence[str] | None = None):
    """An onnxruntime InferenceSession; `num_threads` sets the intra-op threads (one inter-op
    thread: the graphs are sequential).

    All graph optimisations, except for fp16 graphs (`*.fp16.onnx`): there onnxruntime 1.32's
    CPU session crashes (segmentation fault) while applying the ORT_ENABLE_ALL level, so they
    stop at ORT_ENABLE_EXTENDED, which runs them correctly."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("the ONNX backend needs onnxruntime: pip install 'zipa-phones[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    fp16 = path.name.endswith(PRECISION_SUFFIX["fp16"])
    level = "ORT_ENABLE_EXTENDED" if fp16 else "ORT_ENABLE_ALL"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fp16 graphs warn about every unfoldable node
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers or DEFAULT_PROVIDERS))


def _metadata(session) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def _io_names(session) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs())


def graph_role(session, where: str = "graph") -> tuple[str, str]:
    """(layout, role) of a session: ("zipa", "ctc" | "transducer" | decoder/joiner's "graph")
    for this project's exports, ("upstream", "ctc" | "encoder" | "decoder" | "joiner") for
    upstream ZIPA's (recognised by their input and output names, and model_type)."""
    meta = _metadata(session)
    if meta.get("model_type") == "zipa":
        return "zipa", meta["graph"] if meta.get("graph") in ("decoder", "joiner") else meta.get("kind", "")
    role = upstream.graph_role(*_io_names(session))
    if role is None:
        inputs, outputs = _io_names(session)
        raise ValueError(
            f"{where}: not a ZIPA ONNX graph: inputs {list(inputs)}, outputs {list(outputs)}, metadata "
            f"model_type={meta.get('model_type')!r}. The ONNX backend runs exports of `zipa export-onnx` "
            "(model_type=zipa) and upstream ZIPA's published graphs (x, x_lens -> log_probs, "
            "log_probs_len or encoder_out, encoder_out_lens)"
        )
    upstream.check_model_type(role, meta, where)
    return "upstream", role


def _static_dim(value_info, axis: int) -> int | None:
    dim = value_info.shape[axis] if value_info.shape is not None and len(value_info.shape) > axis else None
    return dim if isinstance(dim, int) else None


# Probe input for measuring an upstream encoder's frame rate: 103 fbank frames give 48 frames
# after the conv front end ((T - 7) // 2), which output downsampling by 1, 2 or 4 divides.
_PROBE_FRAMES = 103
_EMBED_FRAMES = (_PROBE_FRAMES - 7) // 2


def _upstream_encoder_settings(session, kind: str) -> dict[str, int]:
    """feature_dim, output_downsampling_factor and the output's last dim of an upstream CTC or
    encoder graph. The metadata has no frame rate: one run on a short probe measures it."""
    x = session.get_inputs()[0]
    feature_dim = _static_dim(x, 2) or 80
    probe = np.zeros((1, _PROBE_FRAMES, feature_dim), dtype=np.float32)
    out, lens = session.run(None, {"x": probe, "x_lens": np.array([_PROBE_FRAMES], dtype=np.int64)})
    frames = int(lens[0])
    if frames <= 0 or _EMBED_FRAMES % frames or out.shape[1] != frames:
        raise ValueError(
            f"upstream {kind} graph: {_PROBE_FRAMES} feature frames gave {frames} output frames "
            f"(shape {out.shape}); cannot tell its frame rate"
        )
    return {
        "feature_dim": feature_dim,
        "output_downsampling_factor": _EMBED_FRAMES // frames,
        "out_dim": int(out.shape[-1]),
    }


class _EncoderInfo:
    """What the shared path reads from `model.encoder` (`zipa.model.protocols.EncoderInfo`)."""

    def __init__(self, output_downsampling_factor: int):
        self.output_downsampling_factor = output_downsampling_factor


class _OnnxEncoderMixin:
    feature_dim: int
    files: dict[str, Path]  # the graphs it runs (set by load_onnx_model)
    min_feature_frames = 9
    # Input names of the graph that takes features: ("feats", "feat_lens") in this project's
    # exports, ("x", "x_lens") in upstream ZIPA's.
    input_names = ("feats", "feat_lens")

    def _run_encoder(self, session, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        if feats.ndim != 3 or feat_lens.ndim != 1 or feats.shape[0] != feat_lens.shape[0]:
            raise ValueError(
                f"expected feats (N, T, F) and feat_lens (N,), got {tuple(feats.shape)} and {tuple(feat_lens.shape)}"
            )
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"the model takes {self.feature_dim}-dim features, got {feats.shape[-1]}")
        if feats.shape[0] and int(feat_lens.min()) < self.min_feature_frames:
            raise ValueError(
                f"input too short for the encoder: feature lengths {feat_lens.tolist()} (at least "
                f"{self.min_feature_frames}, about 0.1 s)"
            )
        out, lens = session.run(
            None,
            {
                self.input_names[0]: feats.detach().float().cpu().numpy(),
                self.input_names[1]: feat_lens.detach().cpu().numpy().astype(np.int64),
            },
        )
        device = feats.device
        return torch.from_numpy(out).to(device), torch.from_numpy(lens).to(device)


class OnnxCtcModel(_OnnxEncoderMixin, nn.Module):
    """A CTC model exported as one graph (feats, feat_lens) -> (log_probs, out_lens); an
    `EncoderModel` with a `CtcHead` (`zipa.model.protocols`). Either layout: this project's
    (model_type=zipa) or upstream ZIPA's (x, x_lens -> log_probs, log_probs_len)."""

    use_ctc = True
    use_transducer = False

    def __init__(self, session):
        super().__init__()
        self.session = session
        meta = _metadata(session)
        self.layout, role = graph_role(session, "CTC graph")
        self.metadata = meta
        if self.layout == "upstream":
            if role != "ctc":
                raise ValueError(f"expected a CTC graph, got upstream ZIPA's transducer {role}")
            settings = _upstream_encoder_settings(session, "CTC")
            self.input_names = upstream.CTC_IO[0]
            self.feature_dim = settings["feature_dim"]
            self.vocab_size = settings["out_dim"]
            self.encoder = _EncoderInfo(settings["output_downsampling_factor"])
            return
        if meta.get("kind") != "ctc":
            raise ValueError(f"expected a CTC graph, got kind={meta.get('kind')!r}")
        self.feature_dim = int(meta["feature_dim"])
        self.vocab_size = int(meta["vocab_size"])
        self.encoder = _EncoderInfo(int(meta["output_downsampling_factor"]))

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(CTC log-probs (N, T', V), lengths): the graph includes the CTC head."""
        return self._run_encoder(self.session, x, x_lens)

    def ctc_output(self, log_probs: Tensor) -> Tensor:
        """Identity: `forward_encoder` already returns log-probs."""
        return log_probs

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_encoder(x, x_lens)


class OnnxDecoder(nn.Module):
    """The stateless decoder graph, projected: context (N, context_size) -> (N, 1, joiner_dim);
    a `zipa.model.protocols.TransducerDecoder`."""

    def __init__(self, session, blank_id: int, context_size: int, input_name: str = "context"):
        super().__init__()
        self.session = session
        self.blank_id = blank_id
        self.context_size = context_size
        self.input_name = input_name  # "y" in upstream ZIPA's decoder graphs

    def forward(self, y: Tensor, need_pad: bool = False) -> Tensor:
        if need_pad:
            raise ValueError("the ONNX decoder runs one step (need_pad=False): it cannot score whole sequences")
        if y.ndim != 2 or y.shape[1] != self.context_size:
            raise ValueError(f"expected a context of shape (N, {self.context_size}), got {tuple(y.shape)}")
        (out,) = self.session.run(None, {self.input_name: y.detach().cpu().numpy().astype(np.int64)})
        return torch.from_numpy(out).to(y.device).unsqueeze(1)


class OnnxJoiner(nn.Module):
    """The joiner graph on projected inputs (a `zipa.model.protocols.TransducerJoiner`);
    `encoder_proj`/`decoder_proj` are identities because the encoder and decoder graphs already
    project."""

    def __init__(self, session, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.session = session
        self.joiner_dim = joiner_dim
        self.vocab_size = vocab_size
        self.encoder_proj = nn.Identity()
        self.decoder_proj = nn.Identity()

    def forward(self, encoder_out: Tensor, decoder_out: Tensor, project_input: bool = False) -> Tensor:
        """Inputs broadcast against each other, e.g. (N, 1, J) and (N, 1, J), or (T, 1, J) and
        (1, U, J); returns logits of the broadcast shape with J replaced by the vocabulary."""
        if project_input:
            raise ValueError("the ONNX joiner takes projected inputs (project_input=False)")
        enc, dec = torch.broadcast_tensors(encoder_out, decoder_out)
        shape = enc.shape[:-1]
        enc = enc.reshape(-1, self.joiner_dim)
        dec = dec.reshape(-1, self.joiner_dim)
        if enc.shape[0] == 0:
            return encoder_out.new_zeros(shape + (self.vocab_size,))
        (logits,) = self.session.run(
            None,
            {"encoder_out": enc.detach().float().cpu().numpy(), "decoder_out": dec.detach().float().cpu().numpy()},
        )
        return torch.from_numpy(logits).to(encoder_out.device).reshape(shape + (self.vocab_size,))


class OnnxTransducerModel(_OnnxEncoderMixin, nn.Module):
    """A transducer exported as encoder/decoder/joiner graphs (icefall's split); an
    `EncoderModel` with a `TransducerHead` (`zipa.model.protocols`). Either layout: this
    project's (model_type=zipa) or upstream ZIPA's (x, x_lens -> encoder_out, encoder_out_lens;
    y -> decoder_out; encoder_out, decoder_out -> logit)."""

    use_ctc = False
    use_transducer = True

    def __init__(self, encoder_session, decoder_session, joiner_session):
        super().__init__()
        meta = _metadata(encoder_session)
        self.layout, role = graph_role(encoder_session, "transducer encoder")
        self.metadata = meta
        self.encoder_session = encoder_session
        if self.layout == "upstream":
            self._init_upstream(role, encoder_session, decoder_session, joiner_session)
            return
        if meta.get("kind") != "transducer":
            raise ValueError(f"expected transducer graphs, got kind={meta.get('kind')!r}")
        self.feature_dim = int(meta["feature_dim"])
        self.vocab_size = int(meta["vocab_size"])
        self.encoder = _EncoderInfo(int(meta["output_downsampling_factor"]))
        self.decoder = OnnxDecoder(decoder_session, int(meta["blank_id"]), int(meta["context_size"]))
        self.joiner = OnnxJoiner(joiner_session, int(meta["joiner_dim"]), self.vocab_size)

    def _init_upstream(self, role: str, encoder_session, decoder_session, joiner_session) -> None:
        """Upstream ZIPA's graphs: settings from the decoder's and joiner's metadata (context_size,
        vocab_size; joiner_dim), the frame rate measured on the encoder; blank id 0."""
        sessions = ((encoder_session, "encoder"), (decoder_session, "decoder"), (joiner_session, "joiner"))
        for session, expected in sessions:
            layout, got = (
                (self.layout, role) if session is encoder_session else graph_role(session, f"transducer {expected}")
            )
            if (layout, got) != ("upstream", expected):
                raise ValueError(f"expected upstream ZIPA's transducer {expected} graph, got a {layout} {got} graph")
        settings = _upstream_encoder_settings(encoder_session, "transducer encoder")
        decoder_meta, joiner_meta = _metadata(decoder_session), _metadata(joiner_session)
        y = decoder_session.get_inputs()[0]
        context_size = int(decoder_meta.get("context_size") or _static_dim(y, 1) or 2)
        joiner_dim = int(joiner_meta.get("joiner_dim") or settings["out_dim"])
        if joiner_dim != settings["out_dim"]:
            raise ValueError(f"the encoder outputs {settings['out_dim']}-dim frames, the joiner takes {joiner_dim}")
        vocab = decoder_meta.get("vocab_size") or _static_dim(joiner_session.get_outputs()[0], 1)
        if vocab is None:
            raise ValueError("upstream transducer graphs: no vocab_size in the decoder's metadata")
        self.input_names = upstream.ENCODER_IO[0]
        self.feature_dim = settings["feature_dim"]
        self.vocab_size = int(vocab)
        self.encoder = _EncoderInfo(settings["output_downsampling_factor"])
        self.decoder = OnnxDecoder(
            decoder_session, upstream.BLANK_ID, context_size, input_name=upstream.DECODER_IO[0][0]
        )
        self.joiner = OnnxJoiner(joiner_session, joiner_dim, self.vocab_size)

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder_out projected by the joiner's encoder_proj (N, T', joiner_dim), lengths)."""
        return self._run_encoder(self.encoder_session, x, x_lens)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_encoder(x, x_lens)


def _graph_files(folder: Path, precision: str) -> tuple[str, dict[str, Path]]:
    """(kind, {graph name: path}) of an export folder: from its config.json when present, else
    from the file names, this project's (model.onnx; encoder.onnx, decoder.onnx, joiner.onnx)
    or upstream ZIPA's (model.onnx; encoder-*.onnx, decoder-*.onnx, joiner-*.onnx)."""
    if precision not in PRECISION_SUFFIX:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_SUFFIX)}, got {precision!r}")
    config_path = folder / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        kind = config.get("kind")
        files = config.get("files", {}).get(precision)
        if files is None:
            have = ", ".join(config.get("files", {})) or "none"
            raise FileNotFoundError(
                f"{folder}: no {precision} graphs in this export (has: {have}); re-export with "
                f"`zipa export-onnx ... --{precision}`"
            )
        return kind, {name: folder / file for name, file in files.items()}
    suffix = PRECISION_SUFFIX[precision]
    ctc = {name: folder / (Path(f).stem + suffix) for name, f in CTC_FILES.items()}
    transducer = {name: folder / (Path(f).stem + suffix) for name, f in TRANSDUCER_FILES.items()}
    if all(p.is_file() for p in ctc.values()):
        return "ctc", ctc
    if all(p.is_file() for p in transducer.values()):
        return "transducer", transducer
    picked = upstream.pick_graphs(sorted(p.name for p in folder.iterdir() if p.is_file()), precision, str(folder))
    if picked is not None:
        kind, names = picked
        return kind, {name: folder / file for name, file in names.items()}
    upstream_names = upstream.expected_files("ctc", precision) + upstream.expected_files("transducer", precision)
    raise FileNotFoundError(
        f"{folder}: no {precision} ZIPA ONNX graphs found (expected {', '.join(p.name for p in ctc.values())} or "
        f"{', '.join(p.name for p in transducer.values())} from `zipa export-onnx`, or upstream ZIPA's "
        f"{', '.join(upstream_names)})"
    )


def load_onnx_model(
    path_or_dir: PathLike,
    num_threads: int | None = None,
    providers: Sequence[str] | None = None,
    precision: str = "fp32",
) -> OnnxCtcModel | OnnxTransducerModel:
    """Open an export: a folder (its `precision` graphs: fp32, int8 or fp16) written by
    `zipa.onnx.export.export_model` or laid out as upstream ZIPA publishes its graphs; or one
    `.onnx` file: a CTC graph, or a transducer's encoder with its decoder and joiner beside it
    (the file decides the precision). The model's `files` attribute lists the graphs it runs."""
    path = Path(path_or_dir)
    if path.is_file():
        session = make_session(path, num_threads, providers)
        _, role = graph_role(session, str(path))
        if role == "ctc":
            model = OnnxCtcModel(session)
            model.files = {"model": path}
            return model
        if role not in ("encoder", "transducer"):
            raise ValueError(f"{path}: a transducer {role} graph; pass the encoder graph or the folder")
        files = upstream.sibling_graphs(path)
        sessions = {"encoder": session}
        sessions.update({name: make_session(files[name], num_threads, providers) for name in ("decoder", "joiner")})
    elif path.is_dir():
        kind, files = _graph_files(path, precision)
        sessions = {name: make_session(file, num_threads, providers) for name, file in files.items()}
        if kind == "ctc":
            model = OnnxCtcModel(sessions["model"])
            model.files = files
            return model
    else:
        raise FileNotFoundError(f"ONNX model not found: {path} (a .onnx file or an export folder)")
    transducer = OnnxTransducerModel(sessions["encoder"], sessions["decoder"], sessions["joiner"])
    transducer.files = files
    return transducer


def bpe_model_for(path_or_dir: PathLike) -> Path | None:
    """The sentencepiece model saved with an export (bpe.model beside the graphs), if any."""
    path = Path(path_or_dir)
    folder = path if path.is_dir() else path.parent
    candidate = folder / "bpe.model"
    return candidate if candidate.is_file() else None


def onnx_tokenizer(path_or_dir: PathLike, model=None, bpe_model: PathLike | None = None):
    """The tokenizer for the graphs at `path_or_dir`: `bpe_model`, else the bpe.model beside
    them (this project's exports), else the packaged one (upstream ZIPA ships only tokens.txt).
    A tokens.txt beside the graphs must list the tokenizer's pieces at the same ids, and the
    tokenizer must have as many pieces as `model` outputs (ValueError otherwise)."""
    from zipa.text.tokenizer import Tokenizer, default_bpe_model_path

    path = Path(path_or_dir)
    folder = path if path.is_dir() else path.parent
    if bpe_model is None:
        bpe_model = bpe_model_for(path) or default_bpe_model_path()
    tokenizer = Tokenizer.from_file(bpe_model)
    tokens = folder / upstream.TOKENS_FILE
    if tokens.is_file():
        upstream.check_tokens(tokens, tokenizer)
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and vocab != tokenizer.vocab_size:
        raise ValueError(
            f"{path}: the graphs output {vocab} token scores, the tokenizer ({bpe_model}) has "
            f"{tokenizer.vocab_size} pieces; pass the graphs' sentencepiece model with --bpe-model"
        )
    return tokenizer


def resolve_onnx(spec: PathLike, precision: str = "fp32", cache_dir: PathLike | None = None) -> Path:
    """A local file or folder for an ONNX model spec: a path as it is, or a model name / Hub
    repo id whose upstream graphs of `precision` are fetched into (or found offline in) the
    Hugging Face cache (`zipa.onnx.upstream.resolve_onnx`)."""
    return upstream.resolve_onnx(spec, precision, cache_dir)
