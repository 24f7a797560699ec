"""The Praat plugin (praat/plugin_zipa/), run headless by Debian's `praat --run`: a script loads a
sound, runs the plugin's commands as its menu buttons do (with the form's fields as arguments),
and checks in Praat the TextGrid they leave selected; the test then compares that TextGrid with
what `zipa align` writes for the same audio, read by praatio. `.ci/run` installs praat where it
is missing; without it these tests skip, saying so."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from tiny_models import speechlike, write_wav

from zipa.cli import main

praatio_textgrid = pytest.importorskip("praatio.textgrid")
PRAAT = shutil.which("praat")
pytestmark = pytest.mark.skipif(PRAAT is None, reason="no praat on PATH (apt-get install -y praat; .ci/run does)")
PLUGIN = REPO / "praat" / "plugin_zipa"
TRANSCRIPT = "həloʊ wɜːld"
# The plugin's "zipa command" field: this interpreter running this checkout's zipa.
COMMAND = f'"{sys.executable}" -m zipa'


def praat(script: str, folder: Path) -> subprocess.CompletedProcess:
    """Run a Praat script headless in ``folder`` (zipa importable from this checkout)."""
    path = folder / "test.praat"
    path.write_text(script, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([PRAAT, "--run", str(path)], capture_output=True, text=True, cwd=folder, env=env,
                          timeout=300)


def tiers(path: Path):
    grid = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    return {name: [(round(a, 6), round(b, 6), text) for a, b, text in grid.getTier(name).entries]
            for name in grid.tierNames}


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("praat_audio") / "clip.wav", speechlike(2.0, 5))


def test_setup_adds_the_commands_to_the_dynamic_menus(tmp_path):
    text = (PLUGIN / "setup.praat").read_text()
    assert '"Sound", 1, "", 0, "", 0, "ZIPA: transcribe to TextGrid..."' in text
    assert '"Sound", 1, "TextGrid", 1, "", 0, "ZIPA: align interval text..."' in text
    done = praat(f'runScript: "{PLUGIN / "setup.praat"}"\n', tmp_path)  # Praat accepts it
    assert done.returncode == 0, done.stderr


def test_transcribe_to_textgrid_gives_what_zipa_align_writes(tmp_path, wav, ctc_model):
    done = praat(f"""
sound = Read from file: "{wav}"
runScript: "{PLUGIN / 'zipa_transcribe.praat'}", "{COMMAND.replace('"', '""')}", "{ctc_model}", "", "IPA phones", "IPA words"
assert selected$ ("TextGrid") = "clip"
assert numberOfSelected () = 1
n = Get number of tiers
assert n = 2
phones$ = Get tier name: 1
assert phones$ = "IPA phones"
words$ = Get tier name: 2
assert words$ = "IPA words"
end = Get end time
assert end = 2
Save as text file: "{tmp_path / 'praat.TextGrid'}"
""", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert main(["align", str(wav), "-m", str(ctc_model), "-q", "-o", str(tmp_path / "cli.TextGrid")]) == 0
    got, expected = tiers(tmp_path / "praat.TextGrid"), tiers(tmp_path / "cli.TextGrid")
    assert got == {"IPA phones": expected["phones"], "IPA words": expected["words"]}
    assert any(text for _, _, text in got["IPA phones"])


def test_align_interval_text_adds_the_transcripts_phones_inside_the_interval(tmp_path, wav, ctc_model):
    done = praat(f"""
sound = Read from file: "{wav}"
grid = Create TextGrid: 0, 2, "utt", ""
Insert boundary: 1, 0.25
Insert boundary: 1, 1.75
Set interval text: 1, 2, "{TRANSCRIPT}"
selectObject: sound, grid
runScript: "{PLUGIN / 'zipa_align.praat'}", "{COMMAND.replace('"', '""')}", "{ctc_model}", "utt", "", "ph", "wd"
assert selected$ ("TextGrid") = "utt_zipa"
n = Get number of tiers
assert n = 3
utt$ = Get tier name: 1
ph$ = Get tier name: 2
wd$ = Get tier name: 3
assert utt$ + "/" + ph$ + "/" + wd$ = "utt/ph/wd"
Save as text file: "{tmp_path / 'aligned.TextGrid'}"
""", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    got = tiers(tmp_path / "aligned.TextGrid")
    assert got["utt"] == [(0.0, 0.25, ""), (0.25, 1.75, TRANSCRIPT), (1.75, 2.0, "")]
    phones = [(a, b, text) for a, b, text in got["ph"] if text]
    assert "".join(text for _, _, text in phones) == TRANSCRIPT.replace(" ", "")
    assert all(0.25 <= a < b <= 1.75 for a, b, _ in phones)
    assert [text for _, _, text in got["wd"] if text] == TRANSCRIPT.split()


def test_a_failing_command_shows_its_message_in_praats_error(tmp_path, wav):
    done = praat(f"""
sound = Read from file: "{wav}"
runScript: "{PLUGIN / 'zipa_transcribe.praat'}", "{COMMAND.replace('"', '""')}", "{tmp_path / 'no-such-model.pth'}", "", "phones", "words"
""", tmp_path)
    assert done.returncode != 0
    assert "ZIPA failed" in done.stderr
    assert "no-such-model.pth': not a file, a folder, a known model name" in done.stderr  # zipa's own words
