"""Paired comparison of two judged cogen reports (``pandiff compare``) on hand-made reports."""

import json
import math

import pytest

from pandiff.cli import main
from pandiff.errors import DataError
from pandiff.evaluation import paired


def record(i, bucket, adherence, relation=None, map_ok=True):
    return {
        "index": i, "image_id": 100 + i, "prompt": f"prompt {i}", "bucket": bucket, "adherence": adherence,
        "relation": relation, "colour": [1, 1], "agreement": adherence, "agreement_touching": None,
        "map_adherence": map_ok,
    }  # fmt: skip


def report(verdicts, seed=0, generators="per-sample", **header):
    """A report of scenes 0..n-1: ``verdicts`` is a list of (bucket, adherence[, relation])."""
    samples = [record(i, *v) for i, v in enumerate(verdicts)]
    return {"data": "w", "split": "val", "seed": seed, "generators": generators, "steps": 20,
            "metrics": {}, "samples": samples, **header}  # fmt: skip


def row(rows, criterion, bucket):
    return next(r for r in rows if r["criterion"] == criterion and r["bucket"] == bucket)


def test_mcnemar_p_is_the_exact_binomial_test_of_the_discordant_pairs():
    # 6 wins, 1 loss: P(X <= 1 or X >= 6 | 7, 1/2) = 2 * (1 + 7) / 128
    assert paired.mcnemar_p(6, 1) == pytest.approx(16 / 128)
    assert paired.mcnemar_p(1, 6) == pytest.approx(16 / 128)  # two-sided: symmetric
    assert paired.mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert paired.mcnemar_p(3, 3) == pytest.approx(1.0)
    assert paired.mcnemar_p(0, 0) == 1.0  # nothing discordant: no evidence either way
    with pytest.raises(ValueError):
        paired.mcnemar_p(-1, 2)


def test_wins_losses_and_rates_by_bucket():
    # 10 scenes: 4 one-thing ones right in both runs; in the three-thing bucket the new run wins 5
    # scenes and loses 1
    base = report([("1", True)] * 4 + [("3", False)] * 5 + [("3", True)])
    new = report([("1", True)] * 4 + [("3", True)] * 5 + [("3", False)])
    rows = paired.paired_rows(base, new)
    everything, three, one = (
        row(rows, "adherence", "all"),
        row(rows, "adherence", "3"),
        row(rows, "adherence", "1"),
    )
    assert (everything["n"], everything["wins"], everything["losses"]) == (10, 5, 1)
    assert everything["base"] == pytest.approx(0.5) and everything["new"] == pytest.approx(0.9)
    assert (three["n"], three["base"], three["new"]) == (6, pytest.approx(1 / 6), pytest.approx(5 / 6))
    assert three["p"] == pytest.approx(2 * 7 / 64)  # 5 of 6 discordant: 2 * (1 + 6) / 64
    assert (one["wins"], one["losses"], one["p"]) == (0, 0, 1.0)
    assert not any(r["bucket"] in ("2", "4+") for r in rows)  # buckets without a scene are left out


def test_criteria_a_prompt_does_not_test_are_left_out_of_the_pairs():
    """Relations count only where both runs judged one (the prompt states a relation)."""
    base = report([("2", True, True), ("2", True, False), ("2", True, None), ("1", True, None)])
    new = report([("2", True, True), ("2", True, True), ("2", True, None), ("1", True, None)])
    rows = paired.paired_rows(base, new)
    rel = row(rows, "relation", "all")
    assert (rel["n"], rel["wins"], rel["losses"]) == (2, 1, 0)
    assert not any(r["criterion"] == "agreement_touching" for r in rows)  # no scene tested it


def test_reports_of_different_scenes_are_refused():
    base = report([("1", True), ("2", False)])
    with pytest.raises(DataError, match="2 and 1 scenes"):
        paired.paired_rows(base, report([("1", True)]))
    other = report([("1", True), ("2", False)])
    other["samples"][1]["prompt"] = "something else"
    with pytest.raises(DataError, match="scene 1 differs"):
        paired.paired_rows(base, other)
    with pytest.raises(DataError, match="split"):
        paired.paired_rows(base, report([("1", True), ("2", False)], split="train"))


def test_the_pairing_is_named():
    a, b = report([("1", True)]), report([("1", False)])
    assert paired.pairing(a, b).startswith("scene by scene")
    assert paired.pairing(a, report([("1", False)], seed=1)).startswith("by prompt only")
    assert paired.pairing(report([("1", True)], generators="shared"), b).startswith("by prompt only")


def test_compare_command_prints_and_writes_the_table(tmp_path, capsys):
    # the base report predates cogen_steps; the new one records None (not applicable) for best_of
    base = report(
        [("1", True)] * 3 + [("4+", False)] * 7, self_check=4, best_of=None, weights="7a3437fd5eb30bfc"
    )
    new = report(
        [("1", True)] * 3 + [("4+", True)] * 7,
        self_check=0,
        best_of=None,
        cogen_steps=12,
        weights="7a3437fd5eb30bfc",
    )
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "new.json").write_text(json.dumps(new))
    out = tmp_path / "cmp" / "result.json"
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| adherence | all | 10 | 30.0% | 100.0% | 7 | 0 | 0.016 |" in printed
    assert "- **self_check**: 4 / 0 (differs)" in printed
    assert "- **weights**: 7a3437fd5eb30bfc / 7a3437fd5eb30bfc\n" in printed  # the same model sampled
    assert "- **cogen_steps**: not recorded / 12 (differs)" in printed
    assert "- **best_of**: None / None\n" in printed  # recorded as not applicable in both
    assert "- **restarts**: not recorded / not recorded\n" in printed
    result = json.loads(out.read_text())
    assert math.isclose(row(result["rows"], "adherence", "4+")["p"], 2 / 128)
    assert (
        "cogen_steps" in result["not_recorded"]["base"] and "cogen_steps" not in result["not_recorded"]["new"]
    )
    assert (tmp_path / "cmp" / "result.md").read_text() in printed


def test_compare_command_explains_bad_reports(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report([("1", True), ("1", False)])))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"metrics": {}, "data": "w"}))  # written before per-scene records
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, message in (
        (tmp_path / "missing.json", "does not exist"),
        (old, "holds no per-scene verdicts"),
        (broken, "is not valid JSON"),
    ):
        assert main(["compare", str(good), str(path)]) != 0
        assert message in capsys.readouterr().err
    assert main(["compare", str(good), str(good), "--out", str(tmp_path / "x.md")]) != 0
    assert ".json" in capsys.readouterr().err
