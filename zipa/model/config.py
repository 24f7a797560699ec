"""Model hyper-parameters: one dataclass, the presets (released, demo, tiny), and helpers.

Field names follow the ZIPA/icefall `params` (so a `config.json` written by either is readable);
per-stack values are tuples of six ints.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipa.utils.atomic import write_text_atomic

IntTuple = tuple[int, ...]


def to_int_tuple(value: str | int | IntTuple | list) -> IntTuple:
    """Parse icefall's comma-separated per-stack strings ("2,2,3" or "192, 192") into a tuple."""
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(int(part) for part in value.split(","))
    return tuple(int(v) for v in value)


# The architecture fields with one value per encoder stack (comma-separated on the command line).
PER_STACK_FIELDS = (
    "num_encoder_layers",
    "downsampling_factor",
    "feedforward_dim",
    "num_heads",
    "encoder_dim",
    "query_head_dim",
    "value_head_dim",
    "pos_head_dim",
    "encoder_unmasked_dim",
    "cnn_module_kernel",
    "chunk_size",
    "left_context_frames",
)


@dataclass
class ModelConfig:
    """Everything needed to build an `AsrModel` (see `zipa.model.asr_model.build_model`)."""

    feature_dim: int = 80
    vocab_size: int = 127
    num_encoder_layers: IntTuple = (2, 2, 3, 4, 3, 2)
    downsampling_factor: IntTuple = (1, 2, 4, 8, 4, 2)
    feedforward_dim: IntTuple = (512, 768, 1024, 1536, 1024, 768)
    num_heads: IntTuple = (4, 4, 4, 8, 4, 4)
    encoder_dim: IntTuple = (192, 256, 384, 512, 384, 256)
    query_head_dim: IntTuple = (32,)
    value_head_dim: IntTuple = (12,)
    pos_head_dim: IntTuple = (4,)
    pos_dim: int = 48
    encoder_unmasked_dim: IntTuple = (192, 192, 256, 256, 256, 192)
    cnn_module_kernel: IntTuple = (31, 31, 15, 15, 15, 31)
    # 1: CR-CTC recipe (50 Hz output); 2: transducer recipe (25 Hz output).
    output_downsampling_factor: int = 1
    causal: bool = False
    chunk_size: IntTuple = (16, 32, 64, -1)
    left_context_frames: IntTuple = (64, 128, 256, -1)
    use_ctc: bool = True
    use_transducer: bool = False
    use_attention_decoder: bool = False
    decoder_dim: int = 512
    joiner_dim: int = 512
    context_size: int = 2
    blank_id: int = 0
    attention_decoder_dim: int = 512
    attention_decoder_num_layers: int = 6
    attention_decoder_attention_dim: int = 512
    attention_decoder_num_heads: int = 8
    attention_decoder_feedforward_dim: int = 2048
    sos_id: int = 1
    eos_id: int = 1

    def __post_init__(self) -> None:
        for name in PER_STACK_FIELDS:
            setattr(self, name, to_int_tuple(getattr(self, name)))

    @property
    def max_encoder_dim(self) -> int:
        return max(self.encoder_dim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ModelConfig:
        """Build from a dict such as ZIPA's `params` or our `config.json`; unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})

    def save_json(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# Presets as the fields they change from the defaults (the released small model).
_LARGE = dict(
    num_encoder_layers=(4, 3, 4, 5, 4, 4),
    feedforward_dim=(768, 768, 1536, 2048, 1536, 768),
    num_heads=(6, 6, 6, 8, 6, 6),
    encoder_dim=(512, 512, 768, 1024, 768, 512),
    query_head_dim=(64,),
    value_head_dim=(48,),
    encoder_unmasked_dim=(192, 192, 256, 320, 256, 192),
    decoder_dim=1024,
    joiner_dim=1024,
)
# One layer per stack, 7.6M parameters (CTC): what ./run.sh trains in 15 minutes on a 2-core
# CPU. Its measured results depend on these numbers: keep them.
_DEMO = dict(
    num_encoder_layers=(1, 1, 1, 1, 1, 1),
    encoder_dim=(128, 192, 256, 256, 256, 192),
    feedforward_dim=(256, 384, 512, 768, 512, 384),
    num_heads=(4, 4, 4, 4, 4, 4),
    query_head_dim=(32,),
    value_head_dim=(12,),
    encoder_unmasked_dim=(128, 128, 128, 128, 128, 128),
    decoder_dim=256,
    joiner_dim=256,
)
# One narrow layer per stack, 0.78M parameters (CTC): what the tests build, train and export in
# seconds. The tests' calibrated models (tests/tiny_models.py) depend on these numbers.
_TINY = dict(
    num_encoder_layers=(1, 1, 1, 1, 1, 1),
    feedforward_dim=(64, 96, 128, 192, 128, 96),
    num_heads=(2, 2, 2, 4, 2, 2),
    encoder_dim=(32, 48, 64, 96, 64, 48),
    query_head_dim=(8,),
    value_head_dim=(4,),
    pos_head_dim=(4,),
    pos_dim=16,
    encoder_unmasked_dim=(24, 24, 32, 48, 32, 24),
    decoder_dim=64,
    joiner_dim=64,
)
_TRANSDUCER = dict(use_ctc=False, use_transducer=True, output_downsampling_factor=2)

PRESETS: dict[str, dict[str, Any]] = {
    # The released ZIPA architectures.
    "small": {},
    "large": _LARGE,
    "small-transducer": _TRANSDUCER,
    "large-transducer": {**_LARGE, **_TRANSDUCER},
    # The demo recipe's model and the tests' model.
    "demo": _DEMO,
    "tiny": _TINY,
    "tiny-transducer": {**_TINY, **_TRANSDUCER},
}


def preset(name: str) -> ModelConfig:
    """A fresh `ModelConfig` for a named architecture: the released small, large,
    small-transducer and large-transducer; demo (./run.sh's CPU model); tiny and
    tiny-transducer (the tests' models)."""
    try:
        return ModelConfig(**PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Inferring the architecture from a state_dict
# ---------------------------------------------------------------------------------------------

_LAYER_KEY = re.compile(r"^encoder\.encoders\.(\d+)\.(encoder\.)?layers\.(\d+)\.")


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    """Shape of `state_dict[key]` (a tensor, or a plain shape sequence); ValueError if absent."""
    if key not in state_dict:
        raise ValueError(f"state_dict has no {key!r}: not a ZIPA/icefall Zipformer checkpoint")
    value = state_dict[key]
    return tuple(int(n) for n in getattr(value, "shape", value))


def _uniform(values: list[int]) -> IntTuple:
    """One value when all stacks agree (ZIPA's convention for head dims), else one per stack."""
    return (values[0],) if len(set(values)) == 1 else tuple(values)


def _head_dims(in_proj_rows: int, pos_rows: int, value_rows: int) -> tuple[int, int, int, int]:
    """Solve (num_heads, query_head_dim, pos_head_dim, value_head_dim) for one stack.

    in_proj rows = H*(2*q + p), linear_pos rows = H*p, self_attn1 rows = H*v. Only H*p is known,
    so p is ambiguous: prefer ZIPA's p=4, then other divisors of the linear_pos rows.
    """
    candidates = [4] + [p for p in range(1, pos_rows + 1) if p != 4]
    for p in candidates:
        if pos_rows % p:
            continue
        h = pos_rows // p
        per_head = in_proj_rows // h if in_proj_rows % h == 0 else -1
        if per_head > p and (per_head - p) % 2 == 0 and value_rows % h == 0:
            return h, (per_head - p) // 2, p, value_rows // h
    raise ValueError(
        f"cannot solve attention head dims from in_proj rows {in_proj_rows}, "
        f"linear_pos rows {pos_rows}, value rows {value_rows}"
    )


def _feature_dim(freq_bins: int, preferred: int) -> int:
    """Invert the conv embed's frequency subsampling ((F-1)//2 - 1)//2 = freq_bins.

    Four feature dims (4*b+3 .. 4*b+6) give the same number of bins; keep `preferred` when it is
    one of them, else take 4*b+4 (80 for 19 bins).
    """
    if ((preferred - 1) // 2 - 1) // 2 == freq_bins:
        return preferred
    return 4 * freq_bins + 4


def infer_config(state_dict: Mapping[str, Any], base: ModelConfig | None = None) -> ModelConfig:
    """Infer the architecture of an icefall/ZIPA Zipformer `state_dict` from key names and shapes.

    Everything that shapes the weights is read from them: vocab and feature size, per-stack
    layers, downsampling, dims, heads and kernels, causality, output downsampling, which heads
    (CTC, transducer, attention decoder) exist and their sizes. What the weights cannot show is
    taken from `base` (default `ModelConfig()`): `chunk_size`, `left_context_frames`,
    `attention_decoder_num_heads`, the token ids, and `encoder_unmasked_dim` (used only by the
    training-time feature masks; clamped to each stack's `encoder_dim` so the model stays valid).
    """
    base = base if base is not None else ModelConfig()
    sd = state_dict

    layers: dict[int, set] = {}
    for key in sd:
        m = _LAYER_KEY.match(key)
        if m:
            layers.setdefault(int(m.group(1)), set()).add(int(m.group(3)))
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ValueError("state_dict has no encoder.encoders.K.[encoder.]layers.N.* keys in order 0..K")
    num_stacks = len(layers)

    num_layers, factors, dims, ffs, kernels = [], [], [], [], []
    per_stack: tuple[list[int], ...] = ([], [], [], [], [])
    heads, q_dims, p_dims, v_dims, pos_dims = per_stack
    causal = False
    for k in range(num_stacks):
        if sorted(layers[k]) != list(range(len(layers[k]))):
            raise ValueError(f"encoder stack {k} has non-contiguous layer indices {sorted(layers[k])}")
        num_layers.append(len(layers[k]))
        down_key = f"encoder.encoders.{k}.downsample.bias"
        factors.append(_shape(sd, down_key)[0] if down_key in sd else 1)
        prefix = f"encoder.encoders.{k}." + ("encoder." if down_key in sd else "") + "layers.0."

        dims.append(_shape(sd, prefix + "norm.bias")[0])
        ffs.append(_shape(sd, prefix + "feed_forward2.in_proj.weight")[0])
        conv = prefix + "conv_module1.depthwise_conv."
        if conv + "chunkwise_conv.weight" in sd:  # ChunkCausalDepthwiseConv1d
            causal = True
            kernels.append(_shape(sd, conv + "chunkwise_conv.weight")[-1])
        else:
            kernels.append(_shape(sd, conv + "weight")[-1])

        pos_rows, pos_dim = _shape(sd, prefix + "self_attn_weights.linear_pos.weight")
        h, q, p, v = _head_dims(
            _shape(sd, prefix + "self_attn_weights.in_proj.weight")[0],
            pos_rows,
            _shape(sd, prefix + "self_attn1.in_proj.weight")[0],
        )
        for values, value in zip((heads, q_dims, p_dims, v_dims, pos_dims), (h, q, p, v, pos_dim)):
            values.append(value)

    if len(set(pos_dims)) != 1:
        raise ValueError(f"stacks disagree on pos_dim: {pos_dims}")

    embed_out, embed_in = _shape(sd, "encoder_embed.out.weight")
    channels = _shape(sd, "encoder_embed.conv.7.weight")[0]
    if embed_in % channels:
        raise ValueError(f"encoder_embed.out in-features {embed_in} not a multiple of {channels}")
    if embed_out != dims[0]:
        raise ValueError(f"encoder_embed output {embed_out} != first stack's encoder_dim {dims[0]}")

    unmasked = to_int_tuple(base.encoder_unmasked_dim)
    if len(unmasked) == 1:
        unmasked = unmasked * num_stacks
    if len(unmasked) != num_stacks:
        unmasked = tuple(dims)
    unmasked = tuple(min(u, d) for u, d in zip(unmasked, dims))

    out_factor_key = "encoder.downsample_output.bias"
    fields: dict[str, Any] = dict(
        feature_dim=_feature_dim(embed_in // channels, base.feature_dim),
        num_encoder_layers=tuple(num_layers),
        downsampling_factor=tuple(factors),
        feedforward_dim=tuple(ffs),
        num_heads=tuple(heads),
        encoder_dim=tuple(dims),
        query_head_dim=_uniform(q_dims),
        value_head_dim=_uniform(v_dims),
        pos_head_dim=_uniform(p_dims),
        pos_dim=pos_dims[0],
        encoder_unmasked_dim=unmasked,
        cnn_module_kernel=tuple(kernels),
        output_downsampling_factor=_shape(sd, out_factor_key)[0] if out_factor_key in sd else 1,
        causal=causal,
        use_ctc="ctc_output.1.weight" in sd,
        use_transducer="decoder.embedding.weight" in sd,
        use_attention_decoder="attention_decoder.decoder.embed.weight" in sd,
    )

    vocab_sizes = set()
    if fields["use_ctc"]:
        vocab_sizes.add(_shape(sd, "ctc_output.1.weight")[0])
    if fields["use_transducer"]:
        vocab, decoder_dim = _shape(sd, "decoder.embedding.weight")
        vocab_sizes.add(vocab)
        joiner_dim = _shape(sd, "joiner.output_linear.weight")[1]
        has_conv = "decoder.conv.weight" in sd
        fields.update(
            decoder_dim=decoder_dim,
            joiner_dim=joiner_dim,
            context_size=_shape(sd, "decoder.conv.weight")[-1] if has_conv else 1,
        )
    if fields["use_attention_decoder"]:
        prefix = "attention_decoder.decoder."
        vocab, d_model = _shape(sd, prefix + "embed.weight")
        vocab_sizes.add(vocab)
        layer_key = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
        n = len({m.group(1) for m in map(layer_key.match, sd) if m})
        fields.update(
            attention_decoder_dim=d_model,
            attention_decoder_num_layers=n,
            attention_decoder_attention_dim=_shape(sd, prefix + "layers.0.self_attn.linear_q.weight")[0],
            attention_decoder_feedforward_dim=_shape(sd, prefix + "layers.0.feed_forward.0.weight")[0],
        )
    if not vocab_sizes:
        raise ValueError("state_dict has no output head (ctc_output, decoder/joiner or attention_decoder)")
    if len(vocab_sizes) != 1:
        raise ValueError(f"output heads disagree on the vocabulary size: {sorted(vocab_sizes)}")
    fields["vocab_size"] = vocab_sizes.pop()
    return dataclasses.replace(base, **fields)
