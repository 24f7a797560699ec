"""ONNX export and the onnxruntime backend, on the tiny parity fixtures.

The exported fp32 graphs must match PyTorch (rel. L2 < 1e-4 on valid frames) on the fixture
features and on a batch of another size and other lengths than the export example (so nothing
was baked in for the example's shape, including lengths beyond the positional table's cached
1000 frames), give the original's greedy hypotheses, and give its phones from the WAV files
through `Transcriber.from_onnx` and `zipa transcribe --backend onnx`. int8 and fp16 graphs
have to run, keep the output shapes and give non-empty hypotheses of valid tokens where fp32's
are non-empty; fp16's stay close to fp32's, int8's may differ (dynamic quantisation moves the
argmax of these random-weight fixtures).
"""

import json

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import PARITY, edit_distance, needs_parity, rel_l2  # noqa: E402

from zipa.inference.transcriber import Transcriber  # noqa: E402
from zipa.model import kernels, scaling, zipformer  # noqa: E402
from zipa.model.io import load_model  # noqa: E402
from zipa.onnx.export import export_model, read_metadata  # noqa: E402
from zipa.onnx.runtime import OnnxCtcModel, OnnxTransducerModel, load_onnx_model  # noqa: E402
from zipa.text.tokenizer import Tokenizer  # noqa: E402

pytestmark = needs_parity

TOL = 1e-4
# Another batch size and lengths than the export example (2 x 400/323 frames): the longest one
# gives 1047 frames at 50 Hz, past the 1000 frames the PyTorch positional table starts with.
OTHER_LENGTHS = [2101, 777, 9]


def _other_batch():
    generator = torch.Generator().manual_seed(1)
    feats = torch.randn(len(OTHER_LENGTHS), max(OTHER_LENGTHS), 80, generator=generator)
    for i, n in enumerate(OTHER_LENGTHS):
        feats[i, n:] = 0.0
    return feats, torch.tensor(OTHER_LENGTHS)


def _assert_close(actual, expected, lengths, tol=TOL):
    assert actual.shape == expected.shape
    for i, n in enumerate(lengths.tolist()):
        assert rel_l2(actual[i, :n], expected[i, :n]) < tol, f"utterance {i}"


@pytest.fixture(scope="module", params=["ctc_tiny", "transducer_tiny"])
def exported(request, tmp_path_factory):
    torch.set_num_threads(2)
    folder = PARITY / request.param
    model, _ = load_model(folder / "model.pth")
    out = tmp_path_factory.mktemp(request.param)
    written = export_model(model, out, int8=True, fp16=True)
    expected = torch.load(folder / "expected.pt", weights_only=True)
    return request.param, folder, model, out, written, expected


def _torch_outputs(model, feats, feat_lens):
    """What the ONNX graphs compute, from the PyTorch model."""
    with torch.inference_mode():
        out, lens = model.forward_encoder(feats, feat_lens)
        return (model.ctc_output(out) if model.use_ctc else model.joiner.encoder_proj(out)), lens


def test_export_paths_match_eager_paths(monkeypatch):
    """The export-only paths of the model (in-graph positional table, an index instead of
    as_strided, padding by indexing, softplus from vectorised ops) compute what the eager
    paths compute."""
    model, _ = load_model(PARITY / "ctc_tiny" / "model.pth")
    feats, feat_lens = _other_batch()
    with torch.inference_mode():
        eager, lens = model.forward_encoder(feats, feat_lens)
        for module in (kernels, scaling, zipformer):  # each module's own reference to the function
            monkeypatch.setattr(module, "is_exporting", lambda: True)
        exported, lens2 = model.forward_encoder(feats, feat_lens)
    assert torch.equal(lens, lens2)
    _assert_close(exported, eager, lens, tol=1e-6)


def test_files_and_metadata(exported):
    name, _, model, out, written, _ = exported
    config = json.loads((out / "config.json").read_text())
    kind = "ctc" if name.startswith("ctc") else "transducer"
    assert config["kind"] == kind and config["vocab_size"] == 127
    assert config["frame_shift"] == pytest.approx(0.02 if kind == "ctc" else 0.04)
    assert config["precisions"] == ["fp32", "int8", "fp16"]
    graphs = ["model"] if kind == "ctc" else ["encoder", "decoder", "joiner"]
    for graph in graphs:
        for precision in config["precisions"]:
            assert (out / config["files"][precision][graph]).is_file()
        meta = read_metadata(written[f"{graph}.fp32"])
        assert meta["kind"] == kind and meta["graph"] == graph
    assert not list(out.glob("*.data")), "weights must be embedded in the .onnx files"
    tokens = (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(tokens) == 127 and tokens[0] == "<blk> 0" and tokens[3] == "▁ 3"
    assert (out / "bpe.model").is_file()


def test_fp32_matches_pytorch_on_fixture_features(exported):
    _, _, model, out, _, e = exported
    onnx_model = load_onnx_model(out, num_threads=2)
    actual, lens = onnx_model.forward_encoder(e["feats"], e["feat_lens"])
    assert torch.equal(lens, e["encoder_out_lens"])
    if onnx_model.use_ctc:
        _assert_close(onnx_model.ctc_output(actual), e["ctc_log_probs"], lens)
    else:
        with torch.inference_mode():
            expected = model.joiner.encoder_proj(e["encoder_out"])
        _assert_close(actual, expected, lens)


def test_fp32_matches_pytorch_on_other_batch_and_lengths(exported):
    _, _, model, out, _, _ = exported
    feats, feat_lens = _other_batch()
    expected, expected_lens = _torch_outputs(model, feats, feat_lens)
    actual, lens = load_onnx_model(out, num_threads=2).forward_encoder(feats, feat_lens)
    assert torch.equal(lens, expected_lens)
    assert (max(OTHER_LENGTHS) - 7) // 2 > 1000  # frames at 50 Hz, in the first stack
    _assert_close(actual, expected, lens)


def test_transducer_decoder_and_joiner_match(exported):
    name, _, model, out, _, e = exported
    if not name.startswith("transducer"):
        pytest.skip("transducer graphs only")
    onnx_model = load_onnx_model(out, num_threads=2)
    assert isinstance(onnx_model, OnnxTransducerModel)
    decoder_out = onnx_model.decoder(e["decoder_probe_tokens"], need_pad=False)  # (16, 1, J)
    with torch.inference_mode():
        expected_decoder = model.joiner.decoder_proj(e["decoder_out"])
    assert rel_l2(decoder_out, expected_decoder) < TOL
    encoder_out, lens = onnx_model.forward_encoder(e["feats"], e["feat_lens"])
    joiner = onnx_model.joiner
    logits = joiner(joiner.encoder_proj(encoder_out).unsqueeze(2), joiner.decoder_proj(decoder_out.squeeze(1))[None, None])
    for i, n in enumerate(lens.tolist()):
        assert rel_l2(logits[i, :n], e["joiner_logits"][i, :n]) < TOL


def test_greedy_hypotheses_and_phones_from_wavs(exported):
    _, folder, _, out, _, e = exported
    transcriber = Transcriber.from_onnx(out, num_threads=2)
    assert transcriber.token_ids(e["feats"], e["feat_lens"]) == e["token_ids"]
    clips = [folder / "audio" / f"clip{i}.wav" for i in range(3)]
    assert transcriber.transcribe(clips) == e["phones"]


def test_beam_search_and_timestamps_as_pytorch(exported):
    """The rest of the shared path (beam search, forced alignment, times) runs on the ONNX
    model and gives what it gives with the PyTorch model."""
    _, _, model, out, _, e = exported
    onnx_t = Transcriber.from_onnx(out, num_threads=2)
    torch_t = Transcriber(model, Tokenizer.default(), device="cpu")
    for decoding in ("greedy", "beam"):
        a = onnx_t.token_spans(e["feats"], e["feat_lens"], decoding=decoding, beam=3)
        b = torch_t.token_spans(e["feats"], e["feat_lens"], decoding=decoding, beam=3)
        assert [[(s.token, s.start, s.end) for s in row] for row in a] == [
            [(s.token, s.start, s.end) for s in row] for row in b
        ]
        for row_a, row_b in zip(a, b):
            assert [s.confidence for s in row_a] == pytest.approx([s.confidence for s in row_b], abs=1e-4)
    assert onnx_t.frame_shift == torch_t.frame_shift


def test_inventory_and_topk_as_pytorch(exported):
    """The inventory mask and top-k alternatives live in the shared search: the ONNX backend
    gives what the PyTorch model gives."""
    _, _, model, out, _, e = exported
    onnx_t = Transcriber.from_onnx(out, num_threads=2)
    torch_t = Transcriber(model, Tokenizer.default(), device="cpu")
    for decoding in ("greedy", "beam"):
        a, b = (t.token_spans(e["feats"], e["feat_lens"], decoding=decoding, beam=3, inventory="eng", topk=3)
                for t in (onnx_t, torch_t))
        assert [[s.token for s in row] for row in a] == [[s.token for s in row] for row in b]
        alternatives = [(x.alternatives, y.alternatives) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b)]
        assert any(x for x, _ in alternatives)
        for x, y in alternatives:
            assert (x is None) == (y is None)
            if x is not None:
                assert [t for t, _ in x] == [t for t, _ in y]
                assert [p for _, p in x] == pytest.approx([p for _, p in y], abs=1e-4)


# Most token errors (edits / fp32 tokens, over the fixture batch) a reduced precision may make.
MAX_TOKEN_ERROR_RATE = {"fp16": 0.5}


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_int8_and_fp16_run_with_the_right_shapes_and_give_hypotheses(exported, precision):
    _, _, model, out, _, e = exported
    fp32 = load_onnx_model(out, num_threads=2)
    reduced = load_onnx_model(out, num_threads=2, precision=precision)
    expected, lens = fp32.forward_encoder(e["feats"], e["feat_lens"])
    actual, actual_lens = reduced.forward_encoder(e["feats"], e["feat_lens"])
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    assert torch.equal(actual_lens, lens) and torch.isfinite(actual).all()
    # Same model, less precision: close to fp32 but not bit-exact.
    for i, n in enumerate(lens.tolist()):
        assert rel_l2(actual[i, :n], expected[i, :n]) < 0.2
    hyps = Transcriber(reduced, Tokenizer.default(), device="cpu").token_ids(e["feats"], e["feat_lens"])
    assert len(hyps) == 3 and all(isinstance(t, int) for hyp in hyps for t in hyp)
    # Hypotheses to compare: fp32's say enough, and the reduced graphs say something too.
    reference = Transcriber(fp32, Tokenizer.default(), device="cpu").token_ids(e["feats"], e["feat_lens"])
    assert reference == e["token_ids"]
    assert all(len(ref) >= 5 for ref in reference), f"fp32 hypotheses too short to compare: {reference}"
    vocab = Tokenizer.default().vocab_size
    assert all(hyp and all(0 < t < vocab for t in hyp) for hyp in hyps), f"{precision} hypotheses: {hyps}"
    if precision in MAX_TOKEN_ERROR_RATE:
        errors = sum(edit_distance(hyp, ref) for hyp, ref in zip(hyps, reference))
        assert errors / sum(map(len, reference)) <= MAX_TOKEN_ERROR_RATE[precision], (hyps, reference)


def test_int8_graph_is_quantised(exported):
    import onnx

    _, _, _, _, written, _ = exported
    name = "model" if "model.int8" in written else "encoder"
    ops = {node.op_type for node in onnx.load(str(written[f"{name}.int8"])).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_single_ctc_file_loads_without_its_folder(exported, tmp_path):
    name, _, _, out, _, e = exported
    if not name.startswith("ctc"):
        pytest.skip("a CTC model is one file")
    alone = tmp_path / "zipa.onnx"
    alone.write_bytes((out / "model.onnx").read_bytes())
    model = load_onnx_model(alone)
    assert isinstance(model, OnnxCtcModel) and model.encoder.output_downsampling_factor == 1
    assert Transcriber.from_onnx(alone).token_ids(e["feats"], e["feat_lens"]) == e["token_ids"]


def test_clear_errors(exported, tmp_path):
    _, _, _, out, _, e = exported
    with pytest.raises(FileNotFoundError, match="not found"):
        load_onnx_model(tmp_path / "missing")
    partial = tmp_path / "partial"
    partial.mkdir()
    config = json.loads((out / "config.json").read_text())
    config["files"].pop("int8")
    (partial / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="--int8"):
        load_onnx_model(partial, precision="int8")
    with pytest.raises(ValueError, match="too short"):
        load_onnx_model(out).forward_encoder(e["feats"][:, :8], torch.tensor([8, 8, 8]))


def test_causal_models_are_refused(tmp_path):
    model, _ = load_model(PARITY / "ctc_tiny_causal" / "model.pth", chunk_size=(16,), left_context_frames=(64,))
    with pytest.raises(NotImplementedError, match="causal"):
        export_model(model, tmp_path)


def test_cli_export_and_transcribe_with_onnx_backend(tmp_path, capsys):
    from zipa.cli import main

    folder = PARITY / "ctc_tiny"
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(folder / "model.pth"), "--out", str(out)]) == 0
    assert (out / "model.onnx").is_file()
    capsys.readouterr()
    clips = [str(folder / "audio" / f"clip{i}.wav") for i in range(3)]
    # One batch of the three clips, padded to the longest as the fixture's batch was.
    assert main(["transcribe", *clips, "--model", str(out), "--backend", "onnx", "-q"]) == 0
    onnx_text = capsys.readouterr().out
    assert main(["transcribe", *clips, "--model", str(folder / "model.pth"), "-q"]) == 0
    assert onnx_text == capsys.readouterr().out
    expected = json.loads((folder / "config.json").read_text())["phones"]
    # Files are written as they finish (longest first), so compare by file.
    by_clip = dict(line.split("\t") for line in onnx_text.splitlines())
    assert [by_clip[clip] for clip in clips] == [" ".join(p) for p in expected]
