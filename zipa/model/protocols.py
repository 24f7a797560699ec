"""What search and inference use of a model, as `typing.Protocol`s.

Two kinds of model run behind the one inference path: `zipa.model.asr_model.AsrModel` and the
onnxruntime models of `zipa.onnx.runtime`. `zipa.decoding`, `zipa.inference.transcriber` and
`zipa.train.test_sets` are written against these protocols, not against either class; a
class satisfies a protocol by having its members (no inheritance needed), and
tests/test_protocols.py checks that both kinds do.

- `EncoderModel`: features -> encoder output -> the head that `use_ctc` selects.
- `CtcHead`: `ctc_output`, encoder output -> CTC log-probs.
- `TransducerHead`: the `decoder` and `joiner` that transducer search and forced alignment use.

The protocols are not `runtime_checkable`: from Python 3.12, `isinstance` looks members up with
`inspect.getattr_static`, which does not see the submodules an `nn.Module` keeps in `_modules`
(`encoder`, `ctc_output`, `decoder`, `joiner`), so it would reject a conforming `AsrModel`.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class EncoderInfo(Protocol):
    """What is read from `model.encoder`."""

    # Encoder output frames are this many times 20 ms long (1: CR-CTC, 2: transducer).
    output_downsampling_factor: int


class CtcHead(Protocol):
    def ctc_output(self, encoder_out: Tensor) -> Tensor:
        """(N, T, V) log-probs of `forward_encoder`'s output."""
        ...


class TransducerDecoder(Protocol):
    """The stateless prediction network, one step at a time."""

    blank_id: int
    context_size: int

    def __call__(self, y: Tensor, *, need_pad: bool = ...) -> Tensor:
        """y: (N, context_size) token ids, -1 for "no token"; with need_pad=False (the only
        mode search uses) returns (N, 1, decoder output dim)."""
        ...


class TransducerJoiner(Protocol):
    def encoder_proj(self, encoder_out: Tensor) -> Tensor:
        """Encoder output -> joiner dim."""
        ...

    def decoder_proj(self, decoder_out: Tensor) -> Tensor:
        """Decoder output -> joiner dim."""
        ...

    def __call__(self, encoder_out: Tensor, decoder_out: Tensor, *, project_input: bool = ...) -> Tensor:
        """Logits of projected inputs (project_input=False) broadcast against each other,
        e.g. (N, 1, J) and (N, 1, J), or (T, 1, J) and (1, U, J): (..., vocab)."""
        ...


class TransducerHead(Protocol):
    """What `transducer_greedy_search`, `modified_beam_search` and `transducer_forced_align` take."""

    decoder: TransducerDecoder
    joiner: TransducerJoiner


class EncoderModel(CtcHead, TransducerHead, Protocol):
    """A model as inference uses it: fbank -> `forward_encoder` -> the CTC head when `use_ctc`,
    else the transducer head. Only the members of the head in use need exist (an `AsrModel`
    without a transducer has no `decoder`)."""

    use_ctc: bool
    encoder: EncoderInfo

    def forward_encoder(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, T, 80) zero-padded fbank, x_lens: (N,) -> (encoder_out (N, T', C), lengths (N,)).
        What `encoder_out` holds is the head's business: `AsrModel` returns the encoder output,
        the ONNX CTC model the log-probs (its `ctc_output` is the identity)."""
        ...

    # `Transcriber` moves the model and sets inference mode; an `nn.Module` has both.
    def to(self, device) -> EncoderModel: ...

    def eval(self) -> EncoderModel: ...
