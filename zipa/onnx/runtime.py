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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from zipa.onnx.export import CTC_FILES, PRECISION_SUFFIX, TRANSDUCER_FILES

PathLike = Union[str, Path]
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def make_session(
    path: PathLike, num_threads: Optional[int] = None, providers: Optional[Sequence[str]] = None
):
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


def _metadata(session) -> Dict[str, str]:
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("model_type") != "zipa":
        raise ValueError(
            "not a ZIPA ONNX export (its metadata has no model_type=zipa); export with "
            "`zipa export-onnx` or zipa.onnx.export"
        )
    return meta


class _EncoderInfo:
    """What the shared path reads from `model.encoder` (`zipa.model.protocols.EncoderInfo`)."""

    def __init__(self, output_downsampling_factor: int):
        self.output_downsampling_factor = output_downsampling_factor


class _OnnxEncoderMixin:
    min_feature_frames = 9

    def _run_encoder(self, session, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor]:
        if feats.ndim != 3 or feat_lens.ndim != 1 or feats.shape[0] != feat_lens.shape[0]:
            raise ValueError(f"expected feats (N, T, F) and feat_lens (N,), got {tuple(feats.shape)} and {tuple(feat_lens.shape)}")
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"the model takes {self.feature_dim}-dim features, got {feats.shape[-1]}")
        if feats.shape[0] and int(feat_lens.min()) < self.min_feature_frames:
            raise ValueError(
                f"input too short for the encoder: feature lengths {feat_lens.tolist()} (at least "
                f"{self.min_feature_frames}, about 0.1 s)"
            )
        out, lens = session.run(
            None,
            {"feats": feats.detach().float().cpu().numpy(), "feat_lens": feat_lens.detach().cpu().numpy().astype(np.int64)},
        )
        device = feats.device
        return torch.from_numpy(out).to(device), torch.from_numpy(lens).to(device)


class OnnxCtcModel(_OnnxEncoderMixin, nn.Module):
    """A CTC model exported as one graph (feats, feat_lens) -> (log_probs, out_lens); an
    `EncoderModel` with a `CtcHead` (`zipa.model.protocols`)."""

    use_ctc = True
    use_transducer = False

    def __init__(self, session):
        super().__init__()
        self.session = session
        meta = _metadata(session)
        if meta.get("kind") != "ctc":
            raise ValueError(f"expected a CTC graph, got kind={meta.get('kind')!r}")
        self.metadata = meta
        self.feature_dim = int(meta["feature_dim"])
        self.vocab_size = int(meta["vocab_size"])
        self.encoder = _EncoderInfo(int(meta["output_downsampling_factor"]))

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(CTC log-probs (N, T', V), lengths): the graph includes the CTC head."""
        return self._run_encoder(self.session, x, x_lens)

    def ctc_output(self, log_probs: Tensor) -> Tensor:
        """Identity: `forward_encoder` already returns log-probs."""
        return log_probs

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward_encoder(x, x_lens)


class OnnxDecoder(nn.Module):
    """The stateless decoder graph, projected: context (N, context_size) -> (N, 1, joiner_dim);
    a `zipa.model.protocols.TransducerDecoder`."""

    def __init__(self, session, blank_id: int, context_size: int):
        super().__init__()
        self.session = session
        self.blank_id = blank_id
        self.context_size = context_size

    def forward(self, y: Tensor, need_pad: bool = False) -> Tensor:
        if need_pad:
            raise ValueError("the ONNX decoder runs one step (need_pad=False): it cannot score whole sequences")
        if y.ndim != 2 or y.shape[1] != self.context_size:
            raise ValueError(f"expected a context of shape (N, {self.context_size}), got {tuple(y.shape)}")
        (out,) = self.session.run(None, {"context": y.detach().cpu().numpy().astype(np.int64)})
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
    `EncoderModel` with a `TransducerHead` (`zipa.model.protocols`)."""

    use_ctc = False
    use_transducer = True

    def __init__(self, encoder_session, decoder_session, joiner_session):
        super().__init__()
        meta = _metadata(encoder_session)
        if meta.get("kind") != "transducer":
            raise ValueError(f"expected transducer graphs, got kind={meta.get('kind')!r}")
        self.metadata = meta
        self.encoder_session = encoder_session
        self.feature_dim = int(meta["feature_dim"])
        self.vocab_size = int(meta["vocab_size"])
        self.encoder = _EncoderInfo(int(meta["output_downsampling_factor"]))
        self.decoder = OnnxDecoder(decoder_session, int(meta["blank_id"]), int(meta["context_size"]))
        self.joiner = OnnxJoiner(joiner_session, int(meta["joiner_dim"]), self.vocab_size)

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """(encoder_out projected by the joiner's encoder_proj (N, T', joiner_dim), lengths)."""
        return self._run_encoder(self.encoder_session, x, x_lens)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward_encoder(x, x_lens)


def _graph_files(folder: Path, precision: str) -> Tuple[str, Dict[str, Path]]:
    """(kind, {graph name: path}) of an export folder, from its config.json when present, else
    from the file names."""
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
    raise FileNotFoundError(
        f"{folder}: no ZIPA ONNX export found (expected {', '.join(p.name for p in ctc.values())} or "
        f"{', '.join(p.name for p in transducer.values())})"
    )


def load_onnx_model(
    path_or_dir: PathLike,
    num_threads: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
    precision: str = "fp32",
) -> Union[OnnxCtcModel, OnnxTransducerModel]:
    """Open an export: a folder written by `zipa.onnx.export.export_model` (its `precision`
    graphs: fp32, int8 or fp16), or a single CTC `.onnx` file."""
    path = Path(path_or_dir)
    if path.is_file():
        return OnnxCtcModel(make_session(path, num_threads, providers))
    if not path.is_dir():
        raise FileNotFoundError(f"ONNX model not found: {path} (a .onnx file or an export folder)")
    kind, files = _graph_files(path, precision)
    sessions = {name: make_session(file, num_threads, providers) for name, file in files.items()}
    if kind == "ctc":
        return OnnxCtcModel(sessions["model"])
    return OnnxTransducerModel(sessions["encoder"], sessions["decoder"], sessions["joiner"])


def bpe_model_for(path_or_dir: PathLike) -> Optional[Path]:
    """The sentencepiece model saved with an export (bpe.model beside the graphs), if any."""
    path = Path(path_or_dir)
    folder = path if path.is_dir() else path.parent
    candidate = folder / "bpe.model"
    return candidate if candidate.is_file() else None
