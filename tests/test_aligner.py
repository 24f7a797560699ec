"""The frame aligner (`zipa.model.aligner`, `zipa.train.aligner`): its Viterbi pass against brute
force, its file (round trip, the wrong encoder refused), training (a planted problem solved; on
espeak speech with the tiny model, phone starts closer to the truth than CTC's), and its use:
`model.align`, refined free timestamps, long audio, the fallback to CTC times without one,
`zipa align --aligner` and `train_aligner.py`."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO
from tiny_models import speechlike, tiny_model_path, write_wav

from zipa.cli import main as zipa_main
from zipa.decoding.alignment import aligner_spans, phone_forced_align
from zipa.inference.forced import FitWarning
from zipa.evaluation.timing import ReferencePhone, TimedUtterance, forced_errors, timing_stats
from zipa.inference import forced
from zipa.inference import transcriber as transcriber_module
from zipa.decoding.timestamps import FRAME_OFFSET, split_phones
from zipa.inference.transcriber import Transcriber
from zipa.model.aligner import (
    AlignerConfig,
    AlignerMismatchError,
    FrameAligner,
    aligner_path_for,
    encoder_fingerprint,
    load_aligner,
    read_aligner_info,
    save_aligner,
)
from zipa.text.espeak import PhonemeEvent
from zipa.train import aligner as training

pytest.importorskip("espeakng_loader")


# ---------------------------------------------------------------------------------------------
# The Viterbi pass
# ---------------------------------------------------------------------------------------------


def _brute_force(lp, classes):
    """Best score and phone spans over every state path [sil] p1 [sil] ... pN [sil] (each phone
    at least one frame) of len(lp) frames."""
    num_states = 2 * len(classes) + 1
    label = [0 if s % 2 == 0 else classes[s // 2] for s in range(num_states)]
    best, best_path = -np.inf, None
    for path in itertools.product(range(num_states), repeat=lp.shape[0]):
        if path[0] > 1 or path[-1] < num_states - 2:
            continue
        steps = [b - a for a, b in zip(path, path[1:])]
        if any(d < 0 or d > 2 or (d == 2 and path[i] % 2 == 0) for i, d in enumerate(steps)):
            continue  # only a phone may skip the silence after it
        if set(range(1, num_states, 2)) - set(path):
            continue  # every phone at least one frame
        score = sum(lp[t, label[s]] for t, s in enumerate(path))
        if score > best:
            best, best_path = score, path
    spans = [(classes[k], best_path.index(2 * k + 1), len(best_path) - best_path[::-1].index(2 * k + 1))
             for k in range(len(classes))]
    return best, spans


def test_phone_viterbi_is_the_best_path_of_brute_force():
    rng = np.random.default_rng(0)
    cases = [([1], 3), ([1, 2], 4), ([2, 2], 2), ([2, 2], 5), ([1, 1, 2], 5), ([3, 1, 3], 5), ([1, 2, 3], 3)]
    for classes, frames in cases:
        for _ in range(3):
            lp = torch.from_numpy(rng.normal(size=(frames, 4)) * 2).log_softmax(-1)  # float64
            best, expected = _brute_force(lp.numpy(), classes)
            spans = phone_forced_align(lp, classes)
            assert [(s.token, s.start, s.end) for s in spans] == expected
            # float64 throughout: the path's score is the brute force's best to the last bits
            score = sum(lp[t, 0].item() for t in range(frames) if all(not s.start <= t < s.end for s in spans))
            score += sum(lp[s.start : s.end, s.token].sum().item() for s in spans)
            assert score == pytest.approx(best, abs=1e-12)
            for span in spans:
                assert span.confidence == pytest.approx(lp[span.start : span.end, span.token].exp().mean().item())


def test_phone_viterbi_respects_not_before_and_refuses_too_few_frames():
    lp = torch.full((8, 3), -5.0, dtype=torch.float64)
    lp[:, 1] = 0.0  # class 1 everywhere: unconstrained, phone 1 would start at frame 0
    lp[:, 2] = -1.0
    free = phone_forced_align(lp, [1, 2])
    assert free[0].start == 0
    held = phone_forced_align(lp, [1, 2], not_before=[3, 0])
    assert held[0].start == 3 and held[1].start >= held[0].end
    with pytest.raises(ValueError, match="need at least 3"):
        phone_forced_align(lp[:2], [1, 2, 1])
    assert [s.end - s.start for s in phone_forced_align(lp[:2], [1, 1])] == [1, 1]  # equal phones may touch


# ---------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A copy of the tiny CTC model in a folder of its own (aligner files are written beside it)."""
    folder = tmp_path_factory.mktemp("aligner_model")
    source = tiny_model_path(tmp_path_factory, "ctc")
    shutil.copy(source, folder / "model.pth")
    shutil.copy(source.with_name("config.json"), folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def ctc(model_dir):
    return Transcriber.from_checkpoint(model_dir / "model.pth", device="cpu", aligner=None)


def _aligner_for(transcriber, seed=0):
    torch.manual_seed(seed)
    dim = transcriber.model.forward_encoder(torch.zeros(1, 50, 80), torch.tensor([50]))[0].shape[-1]
    config = AlignerConfig(encoder_dim=dim, vocab_size=transcriber.tokenizer.vocab_size, frame_shift=0.02,
                           time_offset=FRAME_OFFSET, channels=16, kernel_size=3)
    return FrameAligner(config, encoder_fingerprint(transcriber.model))


def test_aligner_file_round_trip_and_the_wrong_encoder_is_refused(ctc, model_dir, tmp_path):
    aligner = _aligner_for(ctc)
    path = tmp_path / "a.aligner.pt"
    save_aligner(aligner, path, {"note": "x"})
    loaded = load_aligner(path, ctc.model, ctc.tokenizer.vocab_size, 0.02)
    assert loaded.config == aligner.config and read_aligner_info(path) == {"note": "x"}
    x = torch.randn(2, 30, aligner.config.encoder_dim)
    with torch.no_grad():
        assert torch.equal(loaded(x), aligner(x))
        out = aligner(x, torch.tensor([30, 20]))
        assert out.shape == (2, 60, ctc.tokenizer.vocab_size)
        assert torch.allclose(out.exp().sum(-1), torch.ones(2, 60))
        # Padding does not reach an item: its frames after its length are zeroed first.
        assert torch.allclose(out[1, :40], aligner(x[1:, :20])[0], atol=1e-6)

    other = Transcriber.from_checkpoint(model_dir / "model.pth", device="cpu", aligner=None)
    with torch.no_grad():
        next(other.model.encoder.parameters()).add_(1e-3)  # a slightly different encoder
    with pytest.raises(AlignerMismatchError, match="trained on another encoder"):
        load_aligner(path, other.model, other.tokenizer.vocab_size, 0.02)
    with pytest.raises(AlignerMismatchError, match="trained on another encoder"):
        other.aligner = aligner
    with pytest.raises(AlignerMismatchError, match="40 ms frames"):
        load_aligner(path, ctc.model, ctc.tokenizer.vocab_size, 0.04)
    with pytest.raises(AlignerMismatchError, match="127 classes, the model's tokenizer 100"):
        load_aligner(path, ctc.model, 100, 0.02)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a ZIPA aligner file"):
        load_aligner(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not a ZIPA aligner file"):
        load_aligner(tmp_path / "model.pt")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def test_frame_targets_follow_espeak_phones_and_pauses():
    phones = [ReferencePhone("h", 0.1), ReferencePhone("a", 0.2), ReferencePhone("ɪ", None), ReferencePhone("tʰ", 0.5)]
    events = [PhonemeEvent("", 0.4, 0.41, 0, 1), PhonemeEvent("", 0.6, 0.7, 0, 1)]
    utt = TimedUtterance("", "x", np.zeros(8000, np.float32), 10000, "haɪ tʰ", phones, events)
    segments = training.phone_segments(utt)  # ɪ, without a start, shares a's stretch
    assert [s[2] for s in segments] == ["h", "a", "ɪ", "tʰ"]
    assert [s[:2] for s in segments] == [pytest.approx(x) for x in [(0.1, 0.2), (0.2, 0.35), (0.35, 0.5), (0.5, 0.8)]]
    ids = {"h": 5, "a": 6, "ɪ": 7, "tʰ": 8}
    targets = training.frame_targets(utt, segments, lambda label: ids[label], 80, 0.0, 0.01, 0.02)
    centres = (np.arange(80) + 0.5) * 0.01
    expected = np.select([centres < 0.1, centres < 0.2, centres < 0.35, centres < 0.5,
                          (centres >= 0.6) & (centres < 0.7)], [0, 5, 6, 7, 0], 8)
    assert targets.tolist() == expected.tolist()  # the 10 ms pause at 0.4 s is too short to count
    untimed_first = TimedUtterance("", "x", np.zeros(10), 10000, "a", [ReferencePhone("a", None)])
    assert training.phone_segments(untimed_first) is None


def test_training_sentences_are_the_corpus_train_split_and_deterministic():
    from zipa.data.demo_corpus import DemoCorpusConfig, plan_corpus

    cfg = training.AlignerTrainingConfig(languages=("es", "fi"), sentences_per_language=5, renderings=2, seed=3,
                                         festival_voices=(), augment=False)
    plan = training.plan_speech(cfg)
    assert plan == training.plan_speech(cfg) and plan != training.plan_speech(
        training.AlignerTrainingConfig(languages=("es", "fi"), sentences_per_language=5, renderings=2, seed=4,
                                       festival_voices=(), augment=False))
    corpus = plan_corpus(DemoCorpusConfig(languages=("es", "fi"), heldout=()))
    unseen = {(u.language, u.sentence) for split in ("dev", "test") for u in corpus[split]}
    assert len(plan) == 2 * 5 * 2 and not {(code, n) for code, n, *_ in plan} & unseen
    corpus_cfg = DemoCorpusConfig()
    for code, n, text, voice, prosody, seed, augment_seed in plan:
        assert augment_seed is None and voice.split("+")[0] == code and (voice.partition("+")[2] in corpus_cfg.variants)
        assert corpus_cfg.rate[0] <= prosody["rate"] <= corpus_cfg.rate[1]
    for k in range(0, len(plan), 2):  # the two renderings of a sentence use two voice variants
        assert plan[k][:3] == plan[k + 1][:3] and plan[k][3] != plan[k + 1][3]


def test_fit_solves_a_planted_problem_deterministically():
    """Encoder frames that carry the classes of their two sub-frames: training lowers the loss
    and the Viterbi pass on the trained aligner recovers every planted phone boundary."""
    rng = np.random.default_rng(0)
    vocab, width = 6, 8
    embedding = rng.normal(size=(vocab, width))
    examples, planted = [], []
    for _ in range(6):
        classes, starts, labels = [], [], [0] * int(rng.integers(1, 4))
        for _ in range(5):
            c = int(rng.integers(1, vocab))
            classes.append(c)
            starts.append(len(labels))
            labels += [c] * int(rng.integers(2, 7)) + [0] * int(rng.integers(1, 3))
        labels += [0] * (len(labels) % 2)
        frames = np.concatenate([embedding[labels[0::2]], embedding[labels[1::2]]], axis=1)
        frames += 0.1 * rng.normal(size=frames.shape)
        examples.append(training.Example("x", 0, torch.tensor(frames, dtype=torch.float32),
                                         torch.tensor(labels), None, classes))
        planted.append(starts)
    config = AlignerConfig(encoder_dim=2 * width, vocab_size=vocab, frame_shift=0.02, time_offset=0.0,
                           channels=32, kernel_size=3)

    def train():
        torch.manual_seed(0)
        aligner = FrameAligner(config)
        return aligner, training.fit(aligner, examples, epochs=40, lr=5e-3, seed=0)

    aligner, losses = train()
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        for example, starts in zip(examples, planted):
            spans = phone_forced_align(aligner(example.encoder_out[None])[0], example.classes)
            assert [s.start for s in spans] == starts
    again, losses_again = train()
    assert losses_again == losses
    assert all(torch.equal(a, b) for a, b in zip(aligner.state_dict().values(), again.state_dict().values()))


def test_plan_adds_festival_and_augmented_renderings_and_refuses_held_out_voices():
    cfg = training.AlignerTrainingConfig(languages=("en", "fi"), sentences_per_language=3, renderings=2, seed=1,
                                         festival_voices=("ked_diphone",))
    plan = training.plan_speech(cfg)
    english = [p for p in plan if p[0] == "en"]
    assert len(plan) == 2 * 3 * 2 + 3 * 2 and len(english) == 3 * 4
    festival_items = [p for p in plan if p[3].startswith(training.FESTIVAL)]
    assert {p[3] for p in festival_items} == {"festival:ked_diphone"}
    assert {(p[0], p[1]) for p in festival_items} == {(p[0], p[1]) for p in english}  # same sentences
    # The first rendering of each sentence and voice is clean, the second augmented.
    for k in range(0, len(english), 4):
        first, second, f_first, f_second = english[k:k + 4]
        assert first[6] is None and second[6] is not None and f_first[6] is None and f_second[6] is not None
        assert f_first[4] == {"stretch": 1.0} and 0.85 <= f_second[4]["stretch"] <= 1.15
    with pytest.raises(ValueError, match="held-out Festival voice"):
        training.plan_speech(training.AlignerTrainingConfig(languages=("en",), festival_voices=("kal_diphone",)))
    with pytest.raises(ValueError, match="none of the languages"):
        training.plan_speech(training.AlignerTrainingConfig(languages=("es",), festival_voices=("ked_diphone",)))


def test_augmented_utterance_moves_times_with_its_speed():
    rate = 16000
    x = np.zeros(rate, np.float32)
    x[8000:9600] = np.sin(np.arange(1600) * 0.3)  # a sound from 0.5 s
    phones = [ReferencePhone("a", 0.5), ReferencePhone("ɪ", None)]
    events = [PhonemeEvent("", 0.0, 0.5, 0, 1), PhonemeEvent("a", 0.5, 1.0, 8000, 1)]
    utt = TimedUtterance("", "x", x, rate, "aɪ", phones, events)
    for seed in (0, 1, 2, 3, 5):  # seed 4 adds noise at 0 dB SNR: no onset to read
        aug = training.augment_utterance(utt, seed)
        speed = rate / len(aug.samples)  # the chain's speed factor
        assert aug.sample_rate == rate and aug.phones[1].start is None
        assert aug.phones[0].start == pytest.approx(0.5 / speed, rel=1e-3)
        assert aug.events[1].start == pytest.approx(0.5 / speed, rel=1e-3) and abs(aug.events[1].sample - 0.5 / speed * rate) <= 2
        env = np.sqrt(np.convolve(aug.samples.astype(np.float64) ** 2, np.ones(160) / 160, mode="same"))
        loud = np.flatnonzero(env > 0.2 * env.max())
        assert abs(loud[0] / rate - aug.phones[0].start) < 0.01  # the sound moved with its time


def _stop_targets(utt, ctc_like_ids):
    """Targets of ``utt`` on a 10 ms grid from 0, and the (start, label) of its stops after a vowel."""
    segments = training.phone_segments(utt)
    targets = training.frame_targets(utt, segments, ctc_like_ids, int(utt.duration / 0.01), 0.0, 0.01, 0.02)
    return targets, segments


def test_targets_place_a_stop_start_at_its_closure():
    # The boundary convention: a stop begins where its closure begins. espeak-ng's p/t/k events
    # fire at the burst after a digital-silence closure; the targets give that closure to the stop.
    from zipa.evaluation.timing import espeak_reference, phone_class

    ids = {}

    def class_of(label):
        return ids.setdefault(label[0], len(ids) + 1)

    utt = espeak_reference("Papa took a cookie to the kitten.", "en-us", seed=4)
    targets, segments = _stop_targets(utt, class_of)
    x, sr = utt.samples, utt.sample_rate
    moved = 0
    for (start, _, label), (previous_start, _, _) in zip(segments[1:], segments):
        if label not in ("p", "t", "k"):
            continue
        # In the audio: the burst is the first sound after the stop's start; before it, silence.
        burst = int(start * sr) + np.flatnonzero(np.abs(x[int(start * sr):]) > 1e-3)[0]
        if burst / sr - start < 0.02 or np.abs(x[int(start * sr):burst]).max(initial=0) >= 1e-3:
            continue
        # Every 10 ms sub-frame centred in that silent closure is the stop's.
        for k in range(int(np.ceil(start / 0.01 - 0.5)), int(burst / sr / 0.01 - 0.5)):
            assert targets[k] == class_of(label), (label, start, k)
        moved += 1
    assert moved >= 4
    assert all(phone_class(label) for _, _, label in segments)


def test_festival_targets_place_a_stop_start_at_its_segment_start():
    from zipa.evaluation.timing import festival_reference
    from zipa.text import festival

    if "ked_diphone" not in festival.installed_voices():
        pytest.skip("Festival voice ked_diphone is not installed (apt-get install festival festvox-kdlpc16k)")
    ids = {}

    def class_of(label):
        return ids.setdefault(label[0], len(ids) + 1)

    (speech,) = festival.synthesize(["Papa took a cookie to the kitten."], "ked_diphone")
    utt = festival_reference(speech)
    targets, _ = _stop_targets(utt, class_of)
    stops = [p for p in speech.phones if p.name in ("p", "t", "k")]
    assert len(stops) >= 5
    for p in stops:
        first = int(np.ceil(p.start / 0.01 - 0.5))  # the first sub-frame centred inside the segment
        assert targets[first] == class_of(p.ipa), p


@pytest.fixture(scope="module")
def trained(ctc):
    """An aligner trained on a few espeak utterances by the tiny model's encoder, with the
    training utterances."""
    cfg = training.AlignerTrainingConfig(languages=("es",), sentences_per_language=6, renderings=1,
                                         heldout_fraction=0.0, epochs=60, channels=128, lr=5e-3, seed=0,
                                         festival_voices=(), augment=False)
    aligner, info = training.train_aligner(ctc, cfg, log=lambda line: None)
    utterances = training.synthesize_plan(training.plan_speech(cfg))
    return aligner, info, utterances


def test_trained_aligner_places_phones_closer_to_espeak_than_ctc(ctc, trained):
    aligner, info, utterances = trained
    assert info["losses"][-1] < 0.5 * info["losses"][0]
    assert info["utterances"] == {"train": 6, "heldout": 0, "skipped": 0}
    errors = {"ctc": [], "aligner": []}
    for utt in utterances:
        for name, timing in (("ctc", None), ("aligner", aligner)):
            ctc.aligner = timing
            (alignment,) = ctc.align([utt.samples], utt.transcript, sampling_rate=utt.sample_rate)
            errors[name] += forced_errors(utt.phones, alignment.phones)
    ctc.aligner = None
    ctc_stats, aligner_stats = timing_stats(errors["ctc"]), timing_stats(errors["aligner"])
    assert aligner_stats.within_20 > ctc_stats.within_20 + 0.2 and aligner_stats.within_20 > 0.6
    assert aligner_stats.median < ctc_stats.median
    assert info["results"]["train"]["within_20ms"] == pytest.approx(aligner_stats.within_20, abs=0.1)


# ---------------------------------------------------------------------------------------------
# Use
# ---------------------------------------------------------------------------------------------


def _on_grid(times, offset=FRAME_OFFSET, step=0.01):
    return all(abs((t - offset) / step - round((t - offset) / step)) < 1e-3 for t in times)


def _aligner_times(times):
    """On the aligner's 10 ms grid and not all on the 20 ms grid of CTC frames (which it contains)."""
    return _on_grid(times) and not _on_grid(times, step=0.02)


def test_aligner_spans_give_each_token_its_phone(ctc):
    tokens = forced.prepare_transcript("hə tʰa", ctc.tokenizer).tokens
    pieces = [ctc.tokenizer.id_to_piece(t) for t in tokens]
    assert pieces == ["▁", "h", "ə", "▁", "t", "ʰ", "a"]
    planted = [0, 0, "h", "h", "h", "ə", "ə", 0, "t", "t", "a", "a"]
    lp = torch.full((len(planted), ctc.tokenizer.vocab_size), -10.0)
    for t, label in enumerate(planted):
        lp[t, 0 if label == 0 else ctc.tokenizer.piece_to_id(label)] = 0.0
    spans = aligner_spans(lp.log_softmax(-1), tokens, ctc.phone_groups(tokens))
    assert [(s.start, s.end) for s in spans] == [(2, 3), (2, 5), (5, 7), (8, 9), (8, 10), (8, 10), (10, 12)]
    assert spans[4].confidence == spans[5].confidence > 0.99 and spans[0].confidence == 0.0  # tʰ; ▁


def test_align_and_timestamps_use_the_aligner_and_fall_back_without_it(ctc, trained, monkeypatch):
    aligner = trained[0]
    audio = [speechlike(2.5, 31)]
    ctc.aligner = None
    plain_forced = ctc.align(audio, "hola mundo")[0]
    plain_free = ctc.timestamps(audio)[0]
    assert ctc.time_grid.shift == pytest.approx(0.02)
    ctc.aligner = aligner
    try:
        assert ctc.time_grid.shift == pytest.approx(0.01) and ctc.time_grid.per_encoder_frame == 2
        forced_alignment = ctc.align(audio, "hola mundo")[0]
        assert [p.label for p in forced_alignment.phones] == [p.label for p in plain_forced.phones]
        assert [p.start for p in forced_alignment.phones] != [p.start for p in plain_forced.phones]
        assert _aligner_times([p.start for p in forced_alignment.phones] + [p.end for p in forced_alignment.phones])
        starts = [p.start for p in forced_alignment.phones]
        assert starts == sorted(starts) and all(0 <= p.confidence <= 1 for p in forced_alignment.phones)
        # Free transcription: the same phones and confidences, times from the aligner.
        refined = ctc.timestamps(audio)[0]
        assert refined.text == plain_free.text
        assert [(p.label, p.confidence) for p in refined.phones] == [(p.label, p.confidence) for p in plain_free.phones]
        assert _aligner_times([p.start for p in refined.phones])
        # topk alternatives are kept
        top = ctc.timestamps(audio, topk=2)[0]
        assert all(p.alternatives for p in top.phones) and [p.start for p in top.phones] == [p.start for p in refined.phones]
        # A bound on the phone starts that leaves no way through: placed without it.
        monkeypatch.setattr(transcriber_module, "REFINE_SLACK", -100.0)
        unbounded = ctc.timestamps(audio)[0]
        assert [p.label for p in unbounded.phones] == [p.label for p in refined.phones]
    finally:
        ctc.aligner = None
    assert ctc.align(audio, "hola mundo")[0] == plain_forced  # back to CTC times


def test_long_audio_with_an_aligner(ctc, trained, tmp_path):
    path = write_wav(tmp_path / "long.wav", speechlike(7.0, 41))
    ctc.aligner = trained[0]
    try:
        (whole,) = ctc.transcribe_files([path])
        (windowed,) = ctc.transcribe_files([path], window=3.0, overlap=1.0)
        assert windowed.ok and whole.ok
        starts = [t.start for t in windowed.tokens]
        assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] < 7.0  # windows stitched in order
        off_grid = {t for t in starts if not _on_grid([t])}  # only starts held at a window's seam
        assert len(off_grid) <= 2 and len(starts) > 10
        job = forced.AlignJob.whole(path, "hola mundo kɛ tal esta")
        (result,) = ctc.align_files([job], window=3.0, overlap=1.0)
        assert result.ok
        alignment = ctc.alignment(result.tokens, result.duration)
        assert [p.label for p in alignment.phones] == split_phones("hola mundo kɛ tal esta")
        assert _aligner_times([p.start for p in alignment.phones])
        assert all(0 <= p.start < p.end <= 7.0 for p in alignment.phones)
    finally:
        ctc.aligner = None


def test_aligner_beside_the_model_is_found_and_a_stale_one_skipped(model_dir, trained, tmp_path):
    beside = aligner_path_for(model_dir / "model.pth")
    assert beside == model_dir / "model.aligner.pt"
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(model_dir / name, folder / name)
    assert Transcriber.from_checkpoint(folder / "model.pth", device="cpu").aligner is None  # none beside
    save_aligner(trained[0], folder / "model.aligner.pt")
    found = Transcriber.from_checkpoint(folder, device="cpu")  # the folder: model.pth, not the aligner
    assert found.aligner is not None and found.time_grid.shift == pytest.approx(0.01)
    assert Transcriber.from_checkpoint(folder / "model.pth", device="cpu", aligner=None).aligner is None
    stale = _aligner_for(found, seed=1)
    stale.encoder_fingerprint = "0" * 16
    save_aligner(stale, folder / "model.aligner.pt")
    with pytest.warns(UserWarning, match="not using the aligner beside the model.*another encoder"):
        assert Transcriber.from_checkpoint(folder / "model.pth", device="cpu").aligner is None
    with pytest.raises(AlignerMismatchError):
        Transcriber.from_checkpoint(folder / "model.pth", device="cpu", aligner=folder / "model.aligner.pt")
    import zipa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert zipa.load_model(folder / "model.pth", device="cpu", aligner=None).aligner is None


def _run(capsys, *argv):
    code = zipa_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_zipa_align_aligner_option(model_dir, trained, tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(model_dir / name, folder / name)
    wav = write_wav(tmp_path / "a.wav", speechlike(2.5, 11))
    path = tmp_path / "trained.aligner.pt"
    save_aligner(trained[0], path)
    common = [wav, "-m", folder / "model.pth", "--transcript", "hola mundo", "-f", "jsonl", "-q"]

    def phones(out):
        return json.loads(out.splitlines()[0])["phones"]

    code, ctc_out, _ = _run(capsys, "align", *common)
    assert code == 0 and _on_grid([p["start"] for p in phones(ctc_out)], step=0.02)  # none beside: CTC
    code, with_out, _ = _run(capsys, "align", *common, "--aligner", path)
    assert code == 0 and _aligner_times([p["start"] for p in phones(with_out)])
    assert [p["phone"] for p in phones(with_out)] == [p["phone"] for p in phones(ctc_out)]
    shutil.copy(path, folder / "model.aligner.pt")
    assert _run(capsys, "align", *common)[1] == with_out  # auto: the one beside the model
    assert _run(capsys, "align", *common, "--aligner", "none")[1] == ctc_out
    code, free_out, _ = _run(capsys, "align", wav, "-m", folder / "model.pth", "-f", "jsonl", "-q")
    assert code == 0 and _aligner_times([p["start"] for p in phones(free_out)])  # free transcription refined
    code, _, err = _run(capsys, "align", *common, "--aligner", tmp_path / "missing.aligner.pt")
    assert code == 2 and "aligner not found" in err


def test_train_aligner_command_writes_beside_the_model(model_dir, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(model_dir / name, folder / name)
    script = REPO / "zipformer_crctc" / "train_aligner.py"
    result = subprocess.run(
        [sys.executable, str(script), "--model-path", str(folder / "model.pth"), "--languages", "sw",
         "--sentences-per-language", "3", "--renderings", "1", "--epochs", "2", "--channels", "8"],
        capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr
    assert "held-out frame accuracy" in result.stdout and f"wrote {folder / 'model.aligner.pt'}" in result.stdout
    info = read_aligner_info(folder / "model.aligner.pt")
    assert info["settings"]["languages"] == ["sw"] and info["utterances"]["heldout"] == 1
    assert Transcriber.from_checkpoint(folder / "model.pth", device="cpu").aligner is not None


def test_forced_alignment_fit_tells_the_audios_transcript_from_another(ctc, trained):
    """With an aligner that knows these voices, each utterance's own transcript fits it, and
    another utterance's transcript is warned about (`zipa.decoding.fit`)."""
    aligner, _, utterances = trained
    ctc.aligner = aligner
    try:
        own = [ctc.align([u.samples], u.text, sampling_rate=u.sample_rate)[0] for u in utterances[:3]]
        assert [a.warnings for a in own] == [[], [], []]
        for k, utterance in enumerate(utterances[:3]):
            other = utterances[(k + 3) % len(utterances)]
            with pytest.warns(FitWarning, match="mean confidence"):
                (swapped,) = ctc.align([utterance.samples], other.text, sampling_rate=utterance.sample_rate)
            assert swapped.fit.mean_confidence < 0.5 * own[k].fit.mean_confidence
    finally:
        ctc.aligner = None
