"""The ONNX backend on graphs laid out as upstream ZIPA publishes them (scripts/onnx_scripts/ in
lingjzhu/zipa; facts in zipa/onnx/upstream.py), built here from the tiny models.

`export_like_upstream` writes this project's graph computations under upstream's file names,
input/output names, dtypes, dynamic axes (N, T) and metadata, spelled out literally below (not
taken from zipa.onnx.upstream, so that the runtime's constants are checked against them), with a
tokens.txt in upstream's "<piece> <id>" format. The graphs must then run through
`Transcriber.from_onnx` and `zipa transcribe --backend onnx` by path and, from a local Hub cache,
by model name, and give the torch model's hypotheses, times and TextGrids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_pretrained import make_hub_cache  # noqa: E402
from test_protocols import CTC_ONLY, TRANSDUCER_ONLY, conformance_problems  # noqa: E402
from tiny_models import speechlike, tiny_model_path, write_wav  # noqa: E402

from zipa.audio.features import compute_fbank  # noqa: E402
from zipa.hub.pretrained import ModelNotFoundError  # noqa: E402
from zipa.inference.transcriber import Transcriber  # noqa: E402
from zipa.model.io import load_model  # noqa: E402
from zipa.model.protocols import EncoderModel  # noqa: E402
from zipa.onnx import export as ex  # noqa: E402
from zipa.onnx.runtime import OnnxCtcModel, OnnxTransducerModel, load_onnx_model  # noqa: E402
from zipa.text.tokenizer import Tokenizer  # noqa: E402

# What upstream's export scripts write (zipformer_crctc/export-onnx-ctc.py and
# zipformer_transducer/export-onnx.py, run by scripts/onnx_scripts/run_export.sh).
UPSTREAM_OPSET = 13
STEM = "epoch-999-avg-1"
CTC_META = {"model_type": "zipformer2_ctc", "version": "1", "model_author": "k2-fsa",
            "comment": "non-streaming zipformer2 CTC"}
ENCODER_META = {"model_type": "zipformer2", "version": "1", "model_author": "k2-fsa",
                "comment": "non-streaming zipformer2"}
SUFFIX = {"fp32": ".onnx", "int8": ".int8.onnx", "fp16": ".fp16.onnx"}


def _convert(path: Path, precisions) -> None:
    for precision in precisions:
        if precision == "int8":
            ex.quantize_int8(path, path.with_name(path.name[: -len(".onnx")] + SUFFIX["int8"]))
        elif precision == "fp16":
            ex.convert_fp16(path, path.with_name(path.name[: -len(".onnx")] + SUFFIX["fp16"]))


def _graph(module, args, path: Path, inputs, outputs, axes, metadata) -> None:
    ex._torch_export(module, args, path, inputs, outputs, axes, UPSTREAM_OPSET, dynamo=False)
    ex.fold_constants(path)
    ex.add_metadata(path, metadata)


def export_like_upstream(model, out: Path, precisions=("fp32",)) -> Path:
    """`model`'s graphs in upstream's layout in `out` (fp32 plus `precisions`), with tokens.txt."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    feats = ex._example_features(80)
    extra = [p for p in precisions if p != "fp32"]
    if model.use_ctc:
        path = out / "model.onnx"
        _graph(ex.CtcGraph(model), feats, path, ["x", "x_lens"], ["log_probs", "log_probs_len"],
               {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T"}, "log_probs_len": {0: "N"}},
               CTC_META)
        _convert(path, extra)
    else:
        decoder, joiner_dim = model.decoder, model.joiner.encoder_proj.out_features
        path = out / f"encoder-{STEM}.onnx"
        _graph(ex.TransducerEncoderGraph(model), feats, path, ["x", "x_lens"], ["encoder_out", "encoder_out_lens"],
               {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T"}, "encoder_out_lens": {0: "N"}},
               ENCODER_META)
        context = torch.zeros(10, decoder.context_size, dtype=torch.int64)
        _graph(ex.TransducerDecoderGraph(model), (context,), out / f"decoder-{STEM}.onnx", ["y"], ["decoder_out"],
               {"y": {0: "N"}, "decoder_out": {0: "N"}},
               {"context_size": str(decoder.context_size), "vocab_size": str(model.joiner.output_linear.out_features)})
        example = torch.rand(11, joiner_dim, generator=torch.Generator().manual_seed(0))
        _graph(ex.TransducerJoinerGraph(model), (example, example.flip(0)), out / f"joiner-{STEM}.onnx",
               ["encoder_out", "decoder_out"], ["logit"],
               {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}, {"joiner_dim": str(joiner_dim)})
        for graph in ("encoder", "decoder", "joiner"):
            _convert(out / f"{graph}-{STEM}.onnx", extra)
    tokenizer = Tokenizer.default()  # upstream's generate_tokens.py: "<piece> <id>" for every id
    lines = [f"{tokenizer.id_to_piece(i)} {i}" for i in range(tokenizer.vocab_size)]
    (out / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module", params=["ctc", "transducer"])
def up(request, tmp_path_factory):
    """(kind, torch model path, torch model, upstream-layout folder)."""
    torch.set_num_threads(2)
    kind = request.param
    model_path = tiny_model_path(tmp_path_factory, kind)
    model, _ = load_model(model_path)
    precisions = ("fp32", "int8", "fp16") if kind == "ctc" else ("fp32", "int8")
    folder = export_like_upstream(model, tmp_path_factory.mktemp(f"upstream_{kind}"), precisions)
    return kind, model_path, model, folder


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upstream_audio")
    return [write_wav(folder / f"clip{i}.wav", speechlike(seconds, 40 + i)) for i, seconds in enumerate((3.0, 1.7, 2.4))]


def _torch_transcriber(model):
    return Transcriber(model, Tokenizer.default(), device="cpu")


def test_graphs_are_in_upstreams_layout(up):
    """The fixture is what upstream publishes: file names, I/O names, dtypes, axes, metadata."""
    import onnx

    kind, _, _, folder = up
    names = sorted(p.name for p in folder.iterdir())
    if kind == "ctc":
        assert names == ["model.fp16.onnx", "model.int8.onnx", "model.onnx", "tokens.txt"]
        graphs = {"model.onnx": (["x", "x_lens"], ["log_probs", "log_probs_len"], CTC_META)}
    else:
        assert names == [f"{g}-{STEM}{s}" for g in ("decoder", "encoder", "joiner") for s in (".int8.onnx", ".onnx")] + ["tokens.txt"]
        graphs = {
            f"encoder-{STEM}.onnx": (["x", "x_lens"], ["encoder_out", "encoder_out_lens"], ENCODER_META),
            f"decoder-{STEM}.onnx": (["y"], ["decoder_out"], {"context_size": "2", "vocab_size": "127"}),
            f"joiner-{STEM}.onnx": (["encoder_out", "decoder_out"], ["logit"], {"joiner_dim": None}),
        }
    for name, (inputs, outputs, meta) in graphs.items():
        proto = onnx.load(str(folder / name))
        assert [i.name for i in proto.graph.input] == inputs
        assert [o.name for o in proto.graph.output] == outputs
        got = {p.key: p.value for p in proto.metadata_props}
        assert set(got) == set(meta) and all(v is None or got[k] == v for k, v in meta.items())
        if inputs[0] == "x":
            x, x_lens = proto.graph.input
            assert x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["N", "T", 80]
            assert x_lens.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert (folder / "tokens.txt").read_text(encoding="utf-8").splitlines()[:4] == ["<blk> 0", "<sos/eos> 1", "<unk> 2", "▁ 3"]


def test_loads_as_upstream_with_the_right_frame_rate(up):
    kind, _, model, folder = up
    onnx_model = load_onnx_model(folder, num_threads=2)
    assert onnx_model.layout == "upstream"
    assert isinstance(onnx_model, OnnxCtcModel if kind == "ctc" else OnnxTransducerModel)
    # Not in upstream's metadata: measured by the runtime.
    assert onnx_model.encoder.output_downsampling_factor == model.encoder.output_downsampling_factor == (1 if kind == "ctc" else 2)
    assert onnx_model.vocab_size == 127 and onnx_model.feature_dim == 80
    if kind == "transducer":
        assert onnx_model.decoder.context_size == 2 and onnx_model.decoder.blank_id == 0
        assert onnx_model.joiner.joiner_dim == model.joiner.encoder_proj.out_features
    skip = CTC_ONLY if kind == "ctc" else TRANSDUCER_ONLY
    assert conformance_problems(onnx_model, EncoderModel, skip=skip) == []


def test_hypotheses_equal_the_torch_models(up, audio):
    """Folder, lone file (CTC model.onnx / a transducer's encoder file) and the torch model give
    the same greedy ids on a padded batch."""
    kind, _, model, folder = up
    feats, feat_lens = compute_fbank([speechlike(s, 60 + i) for i, s in enumerate((2.5, 0.9, 1.8))])
    expected = _torch_transcriber(model).token_ids(feats, feat_lens)
    assert all(len(hyp) >= 3 for hyp in expected), expected
    file = folder / ("model.onnx" if kind == "ctc" else f"encoder-{STEM}.onnx")
    for path in (folder, file):
        transcriber = Transcriber.from_onnx(path, num_threads=2)
        assert transcriber.token_ids(feats, feat_lens) == expected, path
    assert transcriber.transcribe(audio) == _torch_transcriber(model).transcribe(audio)


def test_beam_search_and_timestamps_as_torch(up, audio):
    _, _, model, folder = up
    onnx_t, torch_t = Transcriber.from_onnx(folder, num_threads=2), _torch_transcriber(model)
    assert onnx_t.frame_shift == torch_t.frame_shift
    feats, feat_lens = onnx_t.features(audio)
    for decoding in ("greedy", "beam"):
        a = onnx_t.token_spans(feats, feat_lens, decoding=decoding, beam=3)
        b = torch_t.token_spans(feats, feat_lens, decoding=decoding, beam=3)
        assert [[(s.token, s.start, s.end) for s in row] for row in a] == [[(s.token, s.start, s.end) for s in row] for row in b]
        for row_a, row_b in zip(a, b):
            assert [s.confidence for s in row_a] == pytest.approx([s.confidence for s in row_b], abs=1e-4)


def test_cli_transcribe_and_textgrid_as_torch(up, audio, tmp_path, capsys):
    from zipa.cli import main

    _, model_path, _, folder = up
    clips = [str(p) for p in audio]
    outputs = []
    for model_args in (["--model", str(folder), "--backend", "onnx"], ["--model", str(model_path)]):
        assert main(["transcribe", *clips, *model_args, "-q", "--timestamps", "--format", "tsv"]) == 0
        outputs.append(capsys.readouterr().out)
    rows = [[line.split("\t") for line in out.splitlines()] for out in outputs]
    assert len(rows[0]) == len(rows[1]) > 3
    for a, b in zip(*rows):  # path, start, end, phone exactly; confidence to rounding
        assert a[:4] == b[:4] and (a[0] == "path" or abs(float(a[4]) - float(b[4])) <= 2e-4), (a, b)
    grids = []
    for name, model_args in (("onnx", ["--model", str(folder), "--backend", "onnx"]), ("torch", ["--model", str(model_path)])):
        target = tmp_path / f"{name}.TextGrid"
        assert main(["align", clips[0], *model_args, "-q", "--format", "textgrid", "--output", str(target)]) == 0
        grids.append(target.read_text(encoding="utf-8"))
    assert grids[0] == grids[1] and '"phones"' in grids[0] and '"words"' in grids[0]


def test_transducer_graphs_are_found_by_pattern_for_each_precision(up, tmp_path):
    """As upstream's inference scripts find them: the one encoder-*<suffix> of the precision
    (fp32: not .int8/.fp16), whatever its epoch/avg stem, with its decoder and joiner."""
    kind, _, _, folder = up
    if kind != "transducer":
        pytest.skip("transducer graphs only")
    copy = tmp_path / "exp"
    copy.mkdir()
    for path in folder.iterdir():
        shutil.copyfile(path, copy / path.name.replace(STEM, "iter-1000-avg-3"))
    for precision in ("fp32", "int8"):
        files = load_onnx_model(copy, precision=precision).files
        assert {g: p.name for g, p in files.items()} == {
            g: f"{g}-iter-1000-avg-3{SUFFIX[precision]}" for g in ("encoder", "decoder", "joiner")
        }
    (copy / "joiner-iter-1000-avg-3.int8.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="without joiner-iter-1000-avg-3.int8.onnx"):
        load_onnx_model(copy, precision="int8")


def _precision_folder(folder: Path, precision: str, kind: str) -> dict:
    """{name in the repo: local file} of one precision's graphs and tokens.txt."""
    graphs = ["model"] if kind == "ctc" else [f"{g}-{STEM}" for g in ("encoder", "decoder", "joiner")]
    files = {g + SUFFIX[precision]: folder / (g + SUFFIX[precision]) for g in graphs}
    files["tokens.txt"] = folder / "tokens.txt"
    return files


def test_by_model_name_from_the_hub_cache_offline(up, audio, tmp_path, monkeypatch, capsys):
    from zipa.cli import main

    kind, _, _, folder = up
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    if kind == "ctc":
        name, repo_id, precisions = "zipa-cr-small-500k", "anyspeech/zipa-small-crctc-500k", ("fp32", "int8", "fp16")
    else:
        name, repo_id, precisions = "zipa-t-small-300k", "anyspeech/zipa-small-noncausal-300k", ("fp32", "int8")
    files = {}
    for precision in precisions:
        files.update(_precision_folder(folder, precision, kind))
    snapshot = make_hub_cache(cache, repo_id, files)
    graph, stem = ("model", "model") if kind == "ctc" else ("encoder", f"encoder-{STEM}")
    for precision in precisions:  # each precision's own graphs
        transcriber = Transcriber.from_onnx(name, precision=precision, cache_dir=cache, num_threads=2)
        assert transcriber.model.files[graph] == snapshot / (stem + SUFFIX[precision])
    clips = [str(p) for p in audio]
    assert main(["transcribe", *clips, "--backend", "onnx", "--model", name, "--cache-dir", str(cache), "-q"]) == 0
    by_name = capsys.readouterr().out
    assert main(["transcribe", *clips, "--backend", "onnx", "--model", str(folder), "-q"]) == 0
    assert by_name == capsys.readouterr().out and by_name.strip()
    # The repo id works as the name does.
    assert Transcriber.from_onnx(repo_id, cache_dir=cache).model.files[graph].parent == snapshot


def test_by_model_name_offline_without_the_files_says_what_to_download(up, audio, tmp_path, monkeypatch, capsys):
    from zipa.cli import main

    kind, _, _, folder = up
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    if kind == "ctc":
        name, repo_id, wanted = "zipa-cr-large-500k", "anyspeech/zipa-large-crctc-500k", "model.fp16.onnx tokens.txt"
    else:
        name, repo_id, wanted = "zipa-t-large-500k", "anyspeech/zipa-large-noncausal-500k", (
            f"encoder-{STEM}.fp16.onnx decoder-{STEM}.fp16.onnx joiner-{STEM}.fp16.onnx tokens.txt")
    make_hub_cache(cache, repo_id, _precision_folder(folder, "fp32", kind))  # fp32 only
    with pytest.raises(ModelNotFoundError) as info:
        Transcriber.from_onnx(name, precision="fp16", cache_dir=cache)
    assert f"hf download {repo_id} {wanted}" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
    assert main(["transcribe", str(audio[0]), "--backend", "onnx", "--model", name, "--onnx-precision", "fp16",
                 "--cache-dir", str(cache), "-q"]) == 2
    assert f"hf download {repo_id}" in capsys.readouterr().err


def test_tokens_txt_must_match_the_tokenizer(up, audio, tmp_path, capsys):
    from zipa.cli import main

    _, _, _, folder = up
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    original = (copy / "tokens.txt").read_text(encoding="utf-8").splitlines()
    lines = list(original)
    lines[40], lines[41] = f"{lines[41].split()[0]} 40", f"{lines[40].split()[0]} 41"  # two pieces swapped
    (copy / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="first difference at id 40"):
        Transcriber.from_onnx(copy)
    assert main(["transcribe", str(audio[0]), "--backend", "onnx", "--model", str(copy), "-q"]) == 2
    assert "first difference at id 40" in capsys.readouterr().err
    # A shorter list differs where it ends.
    (copy / "tokens.txt").write_text("\n".join(original[:100]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="first difference at id 100"):
        Transcriber.from_onnx(copy)
    # Without tokens.txt, the packaged tokenizer is used as it is (same vocabulary size).
    (copy / "tokens.txt").unlink()
    assert Transcriber.from_onnx(copy).tokenizer.vocab_size == 127


def test_graphs_with_other_names_or_model_type_are_refused(up, tmp_path):
    kind, _, _, folder = up
    if kind != "ctc":
        pytest.skip("one graph is enough")
    other = tmp_path / "model.onnx"
    shutil.copyfile(folder / "model.onnx", other)
    ex.add_metadata(other, {"model_type": "zipformer2_streaming"})
    with pytest.raises(ValueError, match="model_type='zipformer2_streaming'"):
        load_onnx_model(other)
    renamed = tmp_path / "renamed.onnx"
    import onnx

    proto = onnx.load(str(folder / "model.onnx"))
    for node in proto.graph.node:
        node.input[:] = ["feats" if n == "x" else n for n in node.input]
    proto.graph.input[0].name = "feats"
    onnx.save(proto, str(renamed))
    with pytest.raises(ValueError, match="not a ZIPA ONNX graph"):
        load_onnx_model(renamed)
