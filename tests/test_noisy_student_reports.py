"""The noisy-student stage's reports (run.sh stage 8): local/pseudo_label_quality.py (kept, dropped,
the kept labels' PER) and local/seed_table.py (PER before/after over seeds, mean ± spread),
against hand-worked figures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from zipa.data.shar import ShardRecord, write_shar

REPO = Path(__file__).resolve().parents[1]


def run_local(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "local" / script), *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def write_cuts(folder: Path, texts: dict[str, str]) -> None:
    """A shar folder with one short silent cut per text."""
    records = [ShardRecord(cut_id, np.zeros(1600, dtype=np.float32), text, "it") for cut_id, text in texts.items()]
    write_shar(records, folder)


def test_pseudo_label_quality_scores_only_the_kept_labels(tmp_path):
    write_cuts(tmp_path / "unlabeled", {"a": "pata", "b": "mini", "c": "sasa"})
    # Kept: a with one substitution (t -> d), b exact; c was dropped for low confidence.
    write_cuts(tmp_path / "pseudo", {"a": "pada", "b": "mini"})
    summary = {
        "kept": {"cuts": 2, "hours": 0.001},
        "dropped": {"cuts": 1, "hours": 0.0005, "by_reason": {"low_confidence": {"cuts": 1, "hours": 0.0005}}},
        "settings": {"filters": {"min_confidence": 0.5}},
    }
    (tmp_path / ".pseudo.summary.json").write_text(json.dumps(summary))
    res = run_local("pseudo_label_quality.py", tmp_path / "pseudo", tmp_path / "unlabeled", "--json", tmp_path / "q.json")
    assert res.returncode == 0, res.stderr
    q = json.loads((tmp_path / "q.json").read_text())
    # 1 error over 8 reference phones (c's 4 phones are not counted: its label was dropped).
    assert q["kept_PER"] == 12.5 and q["kept_ref_phones"] == 8
    assert (q["kept"], q["dropped"], q["dropped_by_reason"], q["min_confidence"]) == (2, 1, {"low_confidence": 1}, 0.5)
    assert "kept 2, dropped 1 (low_confidence 1); kept labels' PER 12.5 %" in res.stdout


def test_pseudo_label_quality_refuses_an_unfinished_run(tmp_path):
    write_cuts(tmp_path / "unlabeled", {"a": "pata"})
    write_cuts(tmp_path / "pseudo", {"a": "pata"})
    res = run_local("pseudo_label_quality.py", tmp_path / "pseudo", tmp_path / "unlabeled")
    assert res.returncode != 0 and "did not finish" in res.stderr


def write_per(folder: Path, test_set: str, per: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"metrics-{test_set}-averaged.json").write_text(json.dumps({"overall": {"PER": per}}))
    return folder


def test_seed_table_reports_mean_spread_and_whether_every_seed_improved(tmp_path):
    # Seeds: 10 -> 8, 12 -> 11, 14 -> 15 on "test"; every seed improves on "test-festival".
    before = [write_per(tmp_path / f"b{i}", "test", p) for i, p in enumerate((10.0, 12.0, 14.0))]
    after = [write_per(tmp_path / f"a{i}", "test", p) for i, p in enumerate((8.0, 11.0, 15.0))]
    for i in range(3):
        write_per(before[i], "test-festival", 30.0)
        write_per(after[i], "test-festival", 29.0 - i)
    res = run_local(
        "seed_table.py", "--sets", "test,test-festival", "--before", *before, "--after", *after,
        "--json", tmp_path / "t.json",
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "t.json").read_text())["sets"]
    assert rows["test"]["lower_in_every_seed"] is False
    assert rows["test-festival"]["lower_in_every_seed"] is True
    line = next(x for x in res.stdout.splitlines() if x.split()[0] == "test")
    # before: mean 12, sample sd 2; after: mean 34/3 = 11.33, sd sqrt(((8-34/3)^2+(11-34/3)^2+(15-34/3)^2)/2) = 3.51
    assert "12.00 ± 2.00 [10.00, 14.00]" in line and "11.33 ± 3.51 [8.00, 15.00]" in line
    assert "-2.00 -1.00 +1.00" in line and line.rstrip().endswith("no")


def test_seed_table_takes_one_before_folder_for_every_seed(tmp_path):
    before = write_per(tmp_path / "zero-shot", "test", 40.0)
    after = [write_per(tmp_path / f"a{i}", "test", p) for i, p in enumerate((20.0, 22.0))]
    res = run_local("seed_table.py", "--sets", "test", "--before", before, "--after", *after)
    assert res.returncode == 0, res.stderr
    assert "-20.00 -18.00" in res.stdout and res.stdout.rstrip().endswith("yes")
    res = run_local("seed_table.py", "--sets", "test", "--before", before, before, "--after", *after, after[0])
    assert res.returncode != 0 and "2 --before folders for 3 seeds" in res.stderr
