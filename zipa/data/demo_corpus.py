"""The embedded demo corpus: multilingual speech synthesised with espeak-ng, as shar shards.

``./run.sh`` and the end-to-end tests train on it, so that the whole recipe runs on a fresh
clone without downloading anything. What it holds:

* eight training languages from eight different families or branches (:data:`TRAIN_LANGUAGES`)
  and one held-out language never trained on (:data:`HELDOUT_LANGUAGES`, Indonesian), each with
  a fixed list of everyday sentences kept in the repository (``zipa/assets/demo_texts/<code>.txt``);
* per language, the sentences are shuffled (seeded) and split into dev / test / train, so that
  no sentence is shared across splits; the held-out language goes whole into ``heldout``;
* optionally (``num_unlabeled``, 0 by default) some of each language's train sentences go
  instead into ``unlabeled``, spoken like train sentences: speech for pseudo-labelling (noisy student);
  their cuts keep espeak's label, which a pseudo-labeller replaces and a scorer may use;
* :data:`ADAPTATION_LANGUAGES` (Italian, German) are for ``./run.sh``'s fine-tuning stages: the
  default corpus never contains them, a second corpus built with ``languages=("it",)`` does
  (Italian by default there: both synthesisers speak it; Festival has no German voice);
* each train sentence is spoken ``train_renderings`` times, each time with a different espeak-ng
  voice variant (:data:`VOICE_VARIANTS`) and a random speaking rate, pitch and pitch range;
  dev, test and held-out sentences are spoken once; an utterance whose label would need more
  than ``max_token_rate`` tokens per second is re-spoken more slowly (Russian at the fast end
  of the rate range otherwise reaches 26 tokens/s, more than a 25 Hz encoder output holds);
* labels are espeak-ng's own phonemisation of the same text (so audio and label agree by
  construction), cleaned (:func:`zipa.text.g2p.clean_espeak`) and normalised to ZIPA's inventory
  (:func:`zipa.text.ipa.normalize_ipa`), words separated by spaces;
* a second synthesiser, Festival (`zipa.text.festival`), speaks ``festival_renderings`` of the
  renderings of each train (and unlabeled) sentence of every language that has an *allowed*
  Festival voice (:data:`FESTIVAL_VOICES`: English, Russian, Hindi, Finnish, Italian), in place of
  espeak-ng voice variants, so the total stays the same; their labels are Festival's own phones
  (`zipa.text.festival.transcript`), and a random ``Duration_Stretch`` varies their
  speed. Two more test splits hold the same *test* sentences spoken by Festival: ``test_festival``
  with the allowed voices (trained on, other sentences) and ``test_festival_heldout`` with the
  held-out voices (never trained on; English ``kal_diphone``, ``cmu_us_slt_arctic_hts``, Finnish
  ``hy_fi_mv_diphone``, Italian ``pc_diphone``), so that PER is reported per synthesiser. Without Festival
  (``festival_renderings=0``, which ``local/make_demo_corpus.py`` picks and says so when it is not
  installed) the corpus is espeak-ng only, as before;
* audio is resampled from espeak's 22050 Hz to 16 kHz by the shar writer
  (:func:`zipa.data.shar.write_shar`), which also makes every split folder atomic and resumable.

Everything is a function of the :class:`DemoCorpusConfig` (seed included): two runs give the
same cuts, labels and samples (audio is made in a fresh process with seeded noise, see
:func:`synthesize_in_fresh_process`). Cut ids are ``<lang>-<split>-<sentence:03d>-<rendering>``;
each cut's ``custom`` records its ``voice``, ``rate``, ``pitch``, ``pitch_range`` and
``sentence`` (line number in the text file, from 1).

Size of the default corpus (80 sentences per language; 10 dev + 10 test + 60 train):

========  =====  ==========================================================
split     cuts   audio
========  =====  ==========================================================
train     1920   1.29 h (7.6-11.6 min per language; 1.1-5.6 s per cut)
dev         80   3.2 min
test        80   3.2 min
heldout     80   3.4 min (Indonesian)
========  =====  ==========================================================

107 MB of flac. Generating it (``./prepare.sh`` stage 0) took 20 s wall time with
``--num-jobs 1`` on the project's 2-core machine while it was shared (load average 6);
``--num-jobs 2`` took 32 s there, as each worker process pays scipy's import and every split
starts its own pool. Synthesis itself is about 3-7 ms per utterance; resampling and flac
encoding take most of the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zipa.assets import DEMO_TEXTS_DIR
from zipa.text import espeak
from zipa.text.g2p import clean_espeak
from zipa.text.ipa import normalize_ipa_report, num_tokens
from zipa.utils.atomic import write_text_atomic
from zipa.utils.tsv import InputError

__all__ = [
    "DemoLanguage",
    "DemoCorpusConfig",
    "DemoUtterance",
    "TRAIN_LANGUAGES",
    "HELDOUT_LANGUAGES",
    "ADAPTATION_LANGUAGES",
    "VOICE_VARIANTS",
    "SPLITS",
    "default_texts_dir",
    "read_texts",
    "split_sentences",
    "plan_corpus",
    "build_demo_corpus",
]

SPLITS = ("train", "dev", "test", "heldout", "unlabeled", "test_festival", "test_festival_heldout")


@dataclass(frozen=True)
class DemoLanguage:
    code: str  # the corpus's language tag (supervision.language) and text file name
    voice: str  # espeak-ng voice
    family: str


TRAIN_LANGUAGES: tuple[DemoLanguage, ...] = (
    DemoLanguage("en", "en-us", "Indo-European, Germanic"),
    DemoLanguage("es", "es", "Indo-European, Romance"),
    DemoLanguage("ru", "ru", "Indo-European, Slavic"),
    DemoLanguage("hi", "hi", "Indo-European, Indo-Aryan"),
    DemoLanguage("cmn", "cmn", "Sino-Tibetan"),
    DemoLanguage("sw", "sw", "Niger-Congo, Bantu"),
    DemoLanguage("tr", "tr", "Turkic"),
    DemoLanguage("fi", "fi", "Uralic"),
)
HELDOUT_LANGUAGES: tuple[DemoLanguage, ...] = (DemoLanguage("id", "id", "Austronesian"),)
# A language the demo model never hears, with its own sentences: fine-tuning shows what it adds.
ADAPTATION_LANGUAGES: tuple[DemoLanguage, ...] = (
    DemoLanguage("it", "it", "Indo-European, Romance"),
    DemoLanguage("de", "de", "Indo-European, Germanic"),
)
# Festival voices per espeak-ng voice (zipa.text.festival.VOICES): (allowed, held out).
FESTIVAL_VOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "en-us": ("ked_diphone", ("kal_diphone", "cmu_us_slt_arctic_hts")),
    "ru": ("msu_ru_nsh_clunits", ()),
    "hi": ("hindi_NSK_diphone", ()),
    "fi": ("suo_fi_lj_diphone", ("hy_fi_mv_diphone",)),
    "it": ("lp_diphone", ("pc_diphone",)),
}
FESTIVAL_STRETCH = (0.85, 1.15)  # Festival's Duration_Stretch range for train renderings
# espeak-ng voice variants ("" = the language's default voice): male, female, one Klatt voice.
VOICE_VARIANTS: tuple[str, ...] = (
    "",
    "m1",
    "m2",
    "m3",
    "m5",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "klatt4",
)


def default_texts_dir() -> Path:
    """The packaged sentence lists, ``zipa/assets/demo_texts``."""
    return DEMO_TEXTS_DIR


@dataclass
class DemoCorpusConfig:
    seed: int = 42
    texts_dir: str | None = None  # default: zipa/assets/demo_texts
    languages: tuple[str, ...] = tuple(lang.code for lang in TRAIN_LANGUAGES)
    heldout: tuple[str, ...] = tuple(lang.code for lang in HELDOUT_LANGUAGES)
    num_dev: int = 10  # sentences per training language
    num_test: int = 10
    num_unlabeled: int = 0  # train sentences per language moved to the `unlabeled` split
    max_sentences: int | None = None  # use only the first N lines of each text file
    train_renderings: int = 4  # voice variants per train sentence
    rate: tuple[int, int] = (130, 190)  # words per minute (espeak default 175)
    pitch: tuple[int, int] = (30, 70)  # 0..100 (default 50)
    pitch_range: tuple[int, int] = (30, 80)  # 0..100 (default 50)
    variants: tuple[str, ...] = VOICE_VARIANTS
    # Utterances whose label has more tokens per second of audio than this are re-spoken more
    # slowly, so that every cut fits a 25 Hz encoder output (the transducer recipe's) with room.
    max_token_rate: float = 20.0
    shard_size: int = 500
    # Of train_renderings, spoken by Festival where the language has an allowed voice (0: espeak-ng
    # only; local/make_demo_corpus.py and ./prepare.sh default to 1 when Festival is installed).
    festival_renderings: int = 0

    def texts_path(self) -> Path:
        return Path(self.texts_dir) if self.texts_dir else default_texts_dir()

    def to_json(self) -> dict:
        """The configuration plus a digest of the text files it reads (so that edited texts
        count as another configuration), in JSON types for comparison with a stored copy."""
        d = json.loads(json.dumps(asdict(self)))  # tuples -> lists
        if not self.num_unlabeled:
            del d["num_unlabeled"]  # corpora built before the field existed stay complete
        if not self.festival_renderings:
            del d["festival_renderings"]
        else:  # corpora whose dev and test Festival also spoke (an earlier bug) are another configuration
            d["dev_test_speaker"] = "espeak-ng"
        digest = hashlib.sha256()
        for code in (*self.languages, *self.heldout):
            path = self.texts_path() / f"{code}.txt"
            digest.update(code.encode() + b"\0")
            digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        d["texts_sha256"] = digest.hexdigest()
        return d


@dataclass
class DemoUtterance:
    id: str
    split: str
    language: str
    sentence: int  # line number in the text file (from 1)
    text: str
    voice: str  # espeak voice, with variant
    rate: int
    pitch: int
    pitch_range: int
    seed: int  # espeak-ng's noise generator (breathy voice variants)
    festival: str = ""  # a Festival voice speaks it instead of espeak-ng (voice, rate, pitch unused)
    stretch: float = 1.0  # Festival's Duration_Stretch


_LANGS = {lang.code: lang for lang in TRAIN_LANGUAGES + HELDOUT_LANGUAGES + ADAPTATION_LANGUAGES}


def language(code: str) -> DemoLanguage:
    if code in _LANGS:
        return _LANGS[code]
    return DemoLanguage(code, code, "unknown")  # any espeak voice works as a code


def read_texts(path: Path, max_sentences: int | None = None) -> list[tuple[int, str]]:
    """``(line number, sentence)`` of a text file: one sentence per line; blank lines and lines
    starting with ``#`` are skipped; duplicates are an error (they would leak across splits)."""
    if not path.is_file():
        raise FileNotFoundError(f"demo text file not found: {path}")
    out: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = " ".join(line.split())
        if not s or s.startswith("#"):
            continue
        if s in seen:
            raise InputError(f"{path}:{n}: duplicate of line {seen[s]}: {s!r}")
        seen[s] = n
        out.append((n, s))
        if max_sentences is not None and len(out) >= max_sentences:
            break
    if not out:
        raise InputError(f"{path}: no sentences")
    return out


def split_sentences(
    sentences: Sequence[tuple[int, str]],
    num_dev: int,
    num_test: int,
    rng: random.Random,
    num_unlabeled: int = 0,
) -> dict[str, list[tuple[int, str]]]:
    """Shuffle and cut into dev / test / unlabeled / train (train keeps at least one sentence)."""
    order = list(sentences)
    rng.shuffle(order)
    held = num_dev + num_test + num_unlabeled
    if held >= len(order):
        raise ValueError(
            f"{len(order)} sentences cannot give {num_dev} dev + {num_test} test + "
            f"{num_unlabeled} unlabeled + some train"
        )
    return {
        "dev": sorted(order[:num_dev]),
        "test": sorted(order[num_dev : num_dev + num_test]),
        "unlabeled": sorted(order[num_dev + num_test : held]),
        "train": sorted(order[held:]),
    }


def _render(
    utt_id: str,
    split: str,
    code: str,
    voice: str,
    n: int,
    text: str,
    variant: str,
    cfg: DemoCorpusConfig,
    rng: random.Random,
) -> DemoUtterance:
    return DemoUtterance(
        id=utt_id,
        split=split,
        language=code,
        sentence=n,
        text=text,
        voice=voice + (f"+{variant}" if variant else ""),
        rate=rng.randint(*cfg.rate),
        pitch=rng.randint(*cfg.pitch),
        pitch_range=rng.randint(*cfg.pitch_range),
        seed=rng.randrange(2**31),
    )


def plan_corpus(cfg: DemoCorpusConfig) -> dict[str, list[DemoUtterance]]:
    """Every utterance of every split (text, voice, rate, pitch), before any audio is made."""
    plan: dict[str, list[DemoUtterance]] = {s: [] for s in SPLITS}
    texts = cfg.texts_path()
    overlap = set(cfg.languages) & set(cfg.heldout)
    if overlap:
        raise ValueError(f"languages both trained on and held out: {sorted(overlap)}")
    if cfg.train_renderings > len(cfg.variants):
        raise ValueError(f"train_renderings={cfg.train_renderings} > {len(cfg.variants)} voice variants")
    if not 0 <= cfg.festival_renderings <= cfg.train_renderings:
        raise ValueError(f"festival_renderings must be 0 to train_renderings ({cfg.train_renderings})")
    for code in cfg.languages:
        lang = language(code)
        rng = random.Random(f"{cfg.seed}:{code}")
        festival_voice = FESTIVAL_VOICES.get(lang.voice, ("",))[0] if cfg.festival_renderings else ""
        sents = read_texts(texts / f"{code}.txt", cfg.max_sentences)
        parts = split_sentences(sents, cfg.num_dev, cfg.num_test, rng, cfg.num_unlabeled)
        for split in ("train", "dev", "test", "unlabeled"):
            repeated = split in ("train", "unlabeled")  # dev and test are spoken once, by espeak-ng
            renderings = cfg.train_renderings if repeated else 1
            # Festival speaks the last festival_renderings of a train sentence's renderings (its
            # test speech is in test_festival*, below).
            first_festival = renderings - cfg.festival_renderings if festival_voice and repeated else renderings
            for n, text in parts[split]:
                variants = rng.sample(list(cfg.variants), renderings)
                for k, variant in enumerate(variants):
                    utt = _render(
                        f"{code}-{split}-{n:03d}-{k}",
                        split,
                        code,
                        lang.voice,
                        n,
                        text,
                        variant,
                        cfg,
                        rng,
                    )
                    if k >= first_festival:
                        low, high = FESTIVAL_STRETCH
                        utt.festival = festival_voice
                        utt.stretch = round(low + (high - low) * (utt.seed % 1000) / 999, 3)
                    plan[split].append(utt)
            if split == "test" and cfg.festival_renderings and lang.voice in FESTIVAL_VOICES:
                allowed, held = FESTIVAL_VOICES[lang.voice]
                for name, voices in (("test_festival", (allowed,)), ("test_festival_heldout", held)):
                    for n, text in parts[split]:
                        for voice in voices:
                            plan[name].append(
                                DemoUtterance(
                                    f"{code}-{name}-{n:03d}-{voice}",
                                    name,
                                    code,
                                    n,
                                    text,
                                    voice,
                                    0,
                                    0,
                                    0,
                                    0,
                                    festival=voice,
                                )
                            )
    for code in cfg.heldout:
        lang = language(code)
        rng = random.Random(f"{cfg.seed}:{code}")
        for n, text in read_texts(texts / f"{code}.txt", cfg.max_sentences):
            variant = rng.choice(list(cfg.variants))
            plan["heldout"].append(
                _render(
                    f"{code}-heldout-{n:03d}-0",
                    "heldout",
                    code,
                    lang.voice,
                    n,
                    text,
                    variant,
                    cfg,
                    rng,
                )
            )
    return plan


class _Labeller:
    """Sentence -> normalised IPA, cached (a train sentence is spoken several times)."""

    def __init__(self):
        self.cache: dict[tuple[str, str], str] = {}
        self.dropped: dict[str, dict[str, int]] = {}

    def __call__(self, text: str, code: str) -> str:
        key = (code, text)
        if key not in self.cache:
            voice = language(code).voice
            ipa, dropped = normalize_ipa_report(clean_espeak(espeak.phonemize(text, voice), voice))
            if not ipa:
                raise InputError(f"{code}: espeak-ng gave no phones for {text!r}")
            for ch, c in dropped.items():
                per_lang = self.dropped.setdefault(code, {})
                per_lang[ch] = per_lang.get(ch, 0) + c
            self.cache[key] = ipa
        return self.cache[key]


def synthesize_utterance(utt: DemoUtterance):
    """``(samples float32, sample_rate)`` of one planned utterance (espeak's 22050 Hz)."""
    return espeak.synthesize(
        utt.text,
        utt.voice,
        rate=utt.rate,
        pitch=utt.pitch,
        pitch_range=utt.pitch_range,
        seed=utt.seed,
    )


MIN_RATE = 80  # espeak-ng's slowest rate


def synthesize_fitting(utt: DemoUtterance, num_tokens: int, max_token_rate: float):
    """Synthesise ``utt``; while its label would need more than ``max_token_rate`` tokens per
    second, speak it again proportionally slower (deterministic). Updates ``utt.rate``."""
    for _ in range(4):
        samples, sr = synthesize_utterance(utt)
        seconds = len(samples) / sr
        if num_tokens <= max_token_rate * seconds or utt.rate <= MIN_RATE:
            break
        utt.rate = max(MIN_RATE, int(utt.rate * max_token_rate * seconds / num_tokens) - 5)
    return samples, sr


def synthesis_worker_main() -> None:
    """Entry point of the synthesis process (see :func:`synthesize_in_fresh_process`): reads a
    pickled job list on stdin, writes one pickled ``(samples, sr, rate)`` per job on stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the result stream
    jobs = pickle.load(sys.stdin.buffer)
    for utt, n_tokens, max_token_rate in jobs:
        samples, sr = synthesize_fitting(utt, n_tokens, max_token_rate)
        pickle.dump((samples, sr, utt.rate), out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
    out.close()


def synthesize_in_fresh_process(
    jobs: list[tuple[DemoUtterance, int, float]],
) -> Iterator[tuple]:
    """``(samples, sr, final rate)`` for each job, made in order by a new Python process.

    libespeak-ng's wave generator keeps its pitch-flutter phase in a C static that carries over
    from one utterance to the next and that nothing resets (not even re-initialising), so the
    samples of an utterance depend on everything synthesised before it in the process. A fresh
    process that synthesises the same sequence (each utterance with its own noise seed) makes
    the same samples, whatever the calling process did before."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from zipa.data.demo_corpus import synthesis_worker_main; synthesis_worker_main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None  # both PIPE
    try:
        # The worker reads all jobs before writing anything, so this cannot deadlock.
        pickle.dump(jobs, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.close()
        for _ in jobs:
            try:
                yield pickle.load(proc.stdout)
            except EOFError:
                raise RuntimeError(f"the espeak-ng synthesis process stopped early (exit code {proc.wait()})") from None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def records(utts: Sequence[DemoUtterance], labeller: _Labeller, max_token_rate: float = 20.0) -> Iterator:
    """Shar writer records for ``utts``: labels from espeak-ng's phonemisation, audio
    synthesised on the fly (in a fresh process, see :func:`synthesize_in_fresh_process`)."""
    from zipa.data.shar import ShardRecord

    festival_speech = festival_records(utts, max_token_rate)
    spoken = [utt for utt in utts if not utt.festival]
    texts = [labeller(utt.text, utt.language) for utt in spoken]
    jobs = [(utt, num_tokens(text), max_token_rate) for utt, text in zip(spoken, texts)]
    espeak_speech = zip(spoken, texts, synthesize_in_fresh_process(jobs))
    for utt in utts:
        if utt.festival:
            yield festival_speech[utt.id]
            continue
        _, text, (samples, sr, rate) = next(espeak_speech)
        utt.rate = rate
        yield ShardRecord(
            id=utt.id,
            audio=samples,
            sampling_rate=sr,
            text=text,
            language=utt.language,
            custom={
                "voice": utt.voice,
                "rate": utt.rate,
                "pitch": utt.pitch,
                "pitch_range": utt.pitch_range,
                "sentence": utt.sentence,
            },
        )


def festival_records(utts: Sequence[DemoUtterance], max_token_rate: float = 20.0) -> dict:
    """Shar records of the utterances of ``utts`` that Festival speaks, by id: one Festival run
    per voice; labels are Festival's own phones; one that would need more than
    ``max_token_rate`` tokens per second is spoken again more slowly."""
    from zipa.data.shar import ShardRecord
    from zipa.text import festival

    out = {}
    for voice in sorted({utt.festival for utt in utts if utt.festival}):
        todo = [utt for utt in utts if utt.festival == voice]
        for _ in range(3):
            if not todo:
                break
            again = []
            for utt, speech in zip(todo, festival.synthesize([u.text for u in todo], voice, [u.stretch for u in todo])):
                text = festival.transcript(speech)
                if not text:
                    raise InputError(f"{utt.language}: Festival {voice} gave no phones for {utt.text!r}")
                if num_tokens(text) > max_token_rate * len(speech.samples) / speech.sample_rate:
                    utt.stretch = round(utt.stretch * 1.25, 3)
                    again.append(utt)
                out[utt.id] = ShardRecord(
                    id=utt.id,
                    audio=speech.samples,
                    sampling_rate=speech.sample_rate,
                    text=text,
                    language=utt.language,
                    custom={"voice": f"festival:{voice}", "stretch": utt.stretch, "sentence": utt.sentence},
                )
            todo = again
    return out


@dataclass
class DemoCorpusSummary:
    out_dir: Path
    splits: dict = field(default_factory=dict)  # split -> {language -> {cuts, sentences, seconds}}
    seconds: float = 0.0  # generation wall time
    already_complete: bool = False
    dropped: dict = field(default_factory=dict)


CONFIG_NAME = "demo_corpus.json"
README_NAME = "README.txt"


def build_demo_corpus(
    out_dir,
    cfg: DemoCorpusConfig,
    num_jobs: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> DemoCorpusSummary:
    """Write ``out_dir/{train,dev,test,heldout}`` shar folders, ``demo_corpus.json`` (config and
    statistics) and ``README.txt``. A finished corpus with the same config is left as it is
    (but for side files of an older layout moved out of its split folders); an interrupted one
    resumes; a different config needs ``overwrite``.

    The split folders hold shard files only, so plain ``CutSet.from_shar(in_dir=...)`` reads
    them; everything else lies in ``out_dir`` itself: the two files above and, per split, the
    shar writer's hidden ``.<split>.shar_index.json`` and ``.<split>.skipped.tsv``."""
    from zipa.data.shar import move_side_files_out, write_shar

    out_dir = Path(out_dir)
    config_path = out_dir / CONFIG_NAME
    wanted = cfg.to_json()
    if config_path.is_file():
        stored = json.loads(config_path.read_text(encoding="utf-8"))
        if stored.get("config") != wanted and not overwrite:
            raise FileExistsError(
                f"{out_dir} holds a demo corpus made with another configuration "
                f"(see {config_path}); pass overwrite=True (--overwrite) or another folder"
            )
        if stored.get("config") == wanted and stored.get("complete") and not overwrite:
            for split in SPLITS:
                move_side_files_out(out_dir / split)
            return DemoCorpusSummary(
                out_dir,
                splits=stored["splits"],
                seconds=stored["generation_seconds"],
                already_complete=True,
                dropped=stored.get("dropped", {}),
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, json.dumps({"config": wanted, "complete": False}, indent=1))

    start = time.time()
    plan = plan_corpus(cfg)
    labeller = _Labeller()
    stats: dict = {}
    for split in SPLITS:
        utts = plan[split]
        if not utts:
            continue
        summary = write_shar(
            records(utts, labeller, cfg.max_token_rate),
            out_dir / split,
            shard_size=cfg.shard_size,
            overwrite=overwrite,
            num_jobs=num_jobs,
            progress=progress,
            total=len(utts),
        )
        if summary.skipped:
            raise RuntimeError(f"{summary.line()}: the demo corpus must not skip utterances")
        stats[split] = _split_stats(out_dir / split)
    elapsed = time.time() - start
    result = DemoCorpusSummary(out_dir, splits=stats, seconds=elapsed, dropped=labeller.dropped)
    write_text_atomic(out_dir / README_NAME, readme_text(cfg, result))
    write_text_atomic(
        config_path,
        json.dumps(
            {
                "config": wanted,
                "complete": True,
                "splits": stats,
                "generation_seconds": round(elapsed, 1),
                "dropped": labeller.dropped,
            },
            indent=1,
            ensure_ascii=False,
        ),
    )
    return result


def _split_stats(split_dir: Path) -> dict:
    """Per language: cuts, distinct sentences, seconds of audio (read from the cut manifests)."""
    import gzip

    per_lang: dict = {}
    sentences: dict = {}
    for path in sorted(split_dir.glob("cuts.*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                cut = json.loads(line)
                lang = cut["supervisions"][0].get("language") or "?"
                s = per_lang.setdefault(lang, {"cuts": 0, "sentences": 0, "seconds": 0.0})
                s["cuts"] += 1
                s["seconds"] = round(s["seconds"] + cut["duration"], 3)
                sentence = (cut.get("custom") or {}).get("sentence", cut["id"])
                sentences.setdefault(lang, set()).add(sentence)
    for lang, s in per_lang.items():
        s["sentences"] = len(sentences[lang])
    return per_lang


def readme_text(cfg: DemoCorpusConfig, summary: DemoCorpusSummary) -> str:
    langs = {c: language(c) for c in (*cfg.languages, *cfg.heldout)}
    lines = [
        "ZIPA demo corpus: multilingual speech synthesised with espeak-ng "
        f"{espeak.version()} (zipa/data/demo_corpus.py, local/make_demo_corpus.py).",
        "",
        "Folders: train/ dev/ test/ (training languages), unlabeled/ (for pseudo-labelling, when "
        "asked for) and heldout/ (never trained on), each "
        "lhotse shar: cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar (16 kHz mono flac) and nothing "
        "else; the hidden .<split>.shar_index.json here holds each split's counts.",
        "Labels: espeak-ng's IPA of the same text, normalised to ZIPA's inventory "
        "(zipa/text/ipa.py), words separated by spaces.",
        f"Texts: {cfg.texts_dir or 'zipa/assets/demo_texts'}/<language>.txt; no sentence is in two splits.",
        f"Seed {cfg.seed}; train sentences spoken {cfg.train_renderings}x with distinct voice "
        f"variants of {list(cfg.variants)}; rate {cfg.rate[0]}-{cfg.rate[1]} wpm, pitch "
        f"{cfg.pitch[0]}-{cfg.pitch[1]}, pitch range {cfg.pitch_range[0]}-{cfg.pitch_range[1]}; "
        f"re-spoken slower where a label exceeds {cfg.max_token_rate:g} tokens/s.",
        f"Generated in {summary.seconds:.0f} s.",
        "",
        f"{'split':<8} {'language':<9} {'family':<28} {'cuts':>6} {'sentences':>9} {'minutes':>8}",
    ]
    for split, per_lang in summary.splits.items():
        total_cuts, total_sec = 0, 0.0
        for code, s in sorted(per_lang.items()):
            fam = langs[code].family if code in langs else "?"
            lines.append(f"{split:<8} {code:<9} {fam:<28} {s['cuts']:>6} {s['sentences']:>9} {s['seconds'] / 60:>8.1f}")
            total_cuts += s["cuts"]
            total_sec += s["seconds"]
        lines.append(
            f"{split:<8} {'all':<9} {'':<28} {total_cuts:>6} {'':>9} {total_sec / 60:>8.1f}"
            f"   ({total_sec / 3600:.2f} h)"
        )
    if summary.dropped:
        lines += ["", f"Symbols outside the inventory dropped from labels: {summary.dropped}"]
    return "\n".join(lines) + "\n"
