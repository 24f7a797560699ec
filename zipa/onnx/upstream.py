"""The ONNX graphs that upstream ZIPA publishes, as facts: file names, inputs and outputs,
metadata, tokens.txt, and where to find them by model name.

Upstream (github.com/lingjzhu/zipa, ``scripts/onnx_scripts/``) exports each final averaged
model with icefall's ``export-onnx-ctc.py`` (CR-CTC) or ``export-onnx.py`` (transducer, run with
``--epoch 999 --avg 1``, hence the file names) and uploads every ``.onnx`` file, ``tokens.txt``
and ``README_ONNX.md`` to the root of the model's Hub repo (the repos of
`zipa.hub.pretrained.MODELS`)::

    CR-CTC      model.onnx                      x (N, T, 80) float32, x_lens (N,) int64
                                                -> log_probs (N, T', V) (log-softmax), log_probs_len (N,) int64
                                                metadata model_type=zipformer2_ctc, version=1,
                                                model_author=k2-fsa, comment
    transducer  encoder-epoch-999-avg-1.onnx    x, x_lens -> encoder_out (N, T', joiner_dim), already
                                                projected by the joiner's encoder_proj, encoder_out_lens (N,)
                                                metadata model_type=zipformer2, version=1, ...
                decoder-epoch-999-avg-1.onnx    y (N, context_size) int64 -> decoder_out (N, joiner_dim),
                                                projected by decoder_proj; metadata context_size, vocab_size
                joiner-epoch-999-avg-1.onnx     encoder_out (N, J), decoder_out (N, J) -> logit (N, V)
                                                (output_linear(tanh(enc + dec))); metadata joiner_dim
    both        <name>.int8.onnx                dynamic int8 quantisation (MatMul; the decoder's Gather too)
                <name>.fp16.onnx                float16 inside, float32/int64 inputs and outputs
                tokens.txt                      "<piece> <id>", ids 0..126: the pieces of the
                                                ipa_simplified sentencepiece model (<blk> 0, ... ▁ 3 ...)

Batch and time axes are dynamic; the blank is id 0. What the metadata does not say is the frame
rate: CR-CTC graphs output 50 Hz frames, transducer encoders 25 Hz (icefall's
``output_downsampling_factor`` 1 and 2); `zipa.onnx.runtime` measures it by running the encoder
once. The graphs take the same 80-dim fbank as this project's models (lhotse's Fbank, no dither,
``snip_edges=False``), so features, search, timestamps and writers run unchanged on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]

# (input names, output names) of each graph, as upstream's export scripts name them.
CTC_IO = (("x", "x_lens"), ("log_probs", "log_probs_len"))
ENCODER_IO = (("x", "x_lens"), ("encoder_out", "encoder_out_lens"))
DECODER_IO = (("y",), ("decoder_out",))
JOINER_IO = (("encoder_out", "decoder_out"), ("logit",))
GRAPH_IO = {"ctc": CTC_IO, "encoder": ENCODER_IO, "decoder": DECODER_IO, "joiner": JOINER_IO}
# The metadata model_type of the (non-streaming) graphs that take features.
MODEL_TYPES = {"ctc": "zipformer2_ctc", "encoder": "zipformer2"}
BLANK_ID = 0
CTC_FILE = "model.onnx"
TRANSDUCER_STEM = "epoch-999-avg-1"  # upstream's run_export.sh: --epoch 999 --avg 1
TRANSDUCER_GRAPHS = ("encoder", "decoder", "joiner")
TOKENS_FILE = "tokens.txt"
PRECISION_SUFFIX = {"fp32": ".onnx", "int8": ".int8.onnx", "fp16": ".fp16.onnx"}


def graph_role(input_names: Iterable[str], output_names: Iterable[str]) -> str | None:
    """ "ctc", "encoder", "decoder" or "joiner" for a graph with upstream's input and output
    names, else None."""
    io = (tuple(input_names), tuple(output_names))
    for role, names in GRAPH_IO.items():
        if io == names:
            return role
    return None


def check_model_type(role: str, metadata: dict[str, str], where: str) -> None:
    """A CTC or encoder graph with upstream's names must also carry upstream's model_type."""
    expected = MODEL_TYPES.get(role)
    if expected is not None and metadata.get("model_type") != expected:
        raise ValueError(
            f"{where}: a graph with upstream ZIPA's {role} inputs and outputs, but metadata "
            f"model_type={metadata.get('model_type')!r} (upstream's non-streaming exports say "
            f"{expected!r}); not a graph this backend knows how to run"
        )


def has_precision(name: str, precision: str) -> bool:
    """Whether file `name` is a graph of `precision` (fp32: ``.onnx`` but not int8/fp16)."""
    if precision not in PRECISION_SUFFIX:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_SUFFIX)}, got {precision!r}")
    if precision == "fp32":
        others = [s for p, s in PRECISION_SUFFIX.items() if p != "fp32"]
        return name.endswith(".onnx") and not name.endswith(tuple(others))
    return name.endswith(PRECISION_SUFFIX[precision])


def expected_files(kind: str, precision: str) -> list[str]:
    """The graph files upstream publishes for a model of `kind` ("ctc" or "transducer")."""
    suffix = PRECISION_SUFFIX[precision]
    if kind == "ctc":
        return [CTC_FILE[: -len(".onnx")] + suffix]
    return [f"{graph}-{TRANSDUCER_STEM}{suffix}" for graph in TRANSDUCER_GRAPHS]


def pick_graphs(names: Iterable[str], precision: str, where: str = "") -> tuple[str, dict[str, str]] | None:
    """(kind, {graph: name}) of upstream's graphs of `precision` among file `names` (a Hub
    repo's files or a folder's), else None. Only top-level names count, as upstream uploads
    to the repo root. Transducer graphs are found as upstream's inference scripts find them:
    the one ``encoder-*`` file of that precision, its decoder and joiner named alike."""
    names = [n for n in names if "/" not in n]
    ctc = expected_files("ctc", precision)[0]
    if ctc in names:
        return "ctc", {"model": ctc}
    encoders = sorted(n for n in names if n.startswith("encoder-") and has_precision(n, precision))
    if not encoders:
        return None
    if len(encoders) > 1:
        preferred = expected_files("transducer", precision)[0]
        if preferred not in encoders:
            raise ValueError(f"{where}: several {precision} encoders ({', '.join(encoders)}); pass the one to use")
        encoders = [preferred]
    encoder = encoders[0]
    graphs = {graph: graph + encoder[len("encoder") :] for graph in TRANSDUCER_GRAPHS}
    missing = [name for name in graphs.values() if name not in names]
    if missing:
        raise FileNotFoundError(f"{where}: {encoder} without {' and '.join(missing)} beside it")
    return "transducer", graphs


def sibling_graphs(encoder_path: PathLike) -> dict[str, Path]:
    """{graph: path} of a transducer's graphs from its encoder file: ``encoder-X.onnx`` ->
    ``decoder-X.onnx``, ``joiner-X.onnx`` (``encoder.onnx`` -> ``decoder.onnx``: this project's
    exports), which must exist."""
    path = Path(encoder_path)
    if not path.name.startswith("encoder"):
        raise ValueError(f"{path}: a transducer encoder graph whose file name does not start with 'encoder'")
    rest = path.name[len("encoder") :]
    graphs = {graph: path.with_name(graph + rest) for graph in TRANSDUCER_GRAPHS}
    missing = [p.name for p in graphs.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: a transducer encoder without {' and '.join(missing)} beside it")
    return graphs


# ---------------------------------------------------------------------------------------------
# tokens.txt
# ---------------------------------------------------------------------------------------------

_TOKEN_LINE = re.compile(r"^(.*\S)\s+(\d+)\s*$")


def read_tokens(path: PathLike) -> dict[int, str]:
    """{id: piece} of a tokens.txt ("<piece> <id>" per line, icefall's and sherpa-onnx's format)."""
    path = Path(path)
    tokens: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected '<piece> <id>', got {line!r}")
        piece, index = match.group(1), int(match.group(2))
        if index in tokens:
            raise ValueError(f"{path}:{number}: id {index} listed twice")
        tokens[index] = piece
    return tokens


def check_tokens(path: PathLike, tokenizer) -> None:
    """Raise ValueError unless tokens.txt at `path` lists the tokenizer's pieces at the same ids
    (the error names the first id where they differ)."""
    tokens = read_tokens(path)
    size = tokenizer.vocab_size
    for index in range(max(size, max(tokens, default=-1) + 1)):
        ours = tokenizer.id_to_piece(index) if index < size else None
        theirs = tokens.get(index)
        if ours != theirs:
            raise ValueError(
                f"{path} does not match the tokenizer ({size} pieces): first difference at id {index}: "
                f"tokens.txt has {theirs!r}, the tokenizer {ours!r}. Pass the sentencepiece model these "
                f"graphs were trained with (--bpe-model)"
            )


# ---------------------------------------------------------------------------------------------
# By model name: the Hub repo and its local cache
# ---------------------------------------------------------------------------------------------


def resolve_onnx(spec: PathLike, precision: str = "fp32", cache_dir: PathLike | None = None) -> Path:
    """A local path (file or folder) for `spec`: returned as it is when it exists; else a known
    model name (``zipa models``), its Hub repo id or repo name, or another Hub repo id, whose
    `precision` graphs and tokens.txt are fetched into the Hugging Face cache (or found there
    offline, ``HF_HUB_OFFLINE=1``). Returns the snapshot folder holding them."""
    from zipa.hub.pretrained import CHECKPOINT_SUFFIXES, ModelNotFoundError, find_model

    has_precision("", precision)  # validates it
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    known = find_model(text)
    looks_like_a_path = text.startswith((".", "/", "~")) or text.endswith((".onnx",) + CHECKPOINT_SUFFIXES)
    if known is not None:
        return _from_hub(known.repo_id, known.kind, precision, cache_dir)
    if text.count("/") == 1 and all(text.split("/")) and not looks_like_a_path:
        return _from_hub(text, None, precision, cache_dir)
    raise ModelNotFoundError(
        f"ONNX model {text!r}: not a file, a folder, a known model name or a Hub repo id (org/name); "
        "`zipa models` lists the known models"
    )


def _from_hub(repo_id: str, kind: str | None, precision: str, cache_dir: PathLike | None) -> Path:
    from zipa.hub.pretrained import fetch_files

    def choose(files: list[str]) -> list[str] | None:
        picked = pick_graphs(files, precision, repo_id)
        return None if picked is None else list(picked[1].values()) + ([TOKENS_FILE] if TOKENS_FILE in files else [])

    def nothing(files: list[str]) -> str:
        onnx = ", ".join(f for f in files if f.endswith(".onnx")) or "none"
        return f"the repo holds no {precision} graphs in upstream ZIPA's layout (its .onnx files: {onnx})"

    graphs = " ".join(expected_files(kind, precision)) if kind else f'--include "*{PRECISION_SUFFIX[precision]}"'
    paths = fetch_files(
        repo_id,
        choose,
        cache_dir,
        what=f"ONNX model ({precision})",
        nothing_message=nothing,
        download_hint=f"{graphs} {TOKENS_FILE}",
    )
    return paths[0].parent
