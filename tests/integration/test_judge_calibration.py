"""`fashion-rerank judge calibrate`: human labels read, graded by a real judge over HTTP, agreement measured.

The judge is the reference judge served over real HTTP (in-process), clean and with injected faults
(unparseable and out-of-range replies must be counted as unlabeled, never coerced into a grade).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from cli.main import main as cli_main
from fashion_rerank.settings import LabelSettings
from labeling.calibration import ESCI_GRADES, ESCI_SAMPLE, HumanPair, agreement, calibrate, read_human_labels
from labeling.judge_server import ReferenceJudge
from labeling.store import Judgment, JudgmentStore


def test_bundled_esci_sample_reads_with_the_documented_grade_map():
    labels = read_human_labels(ESCI_SAMPLE)
    assert len(labels.pairs) == 200 and labels.skipped == []
    # PROVENANCE.md: Exact 138, Substitute 49, Irrelevant 12, Complement 1
    assert Counter(p.grade for p in labels.pairs) == {3: 138, 2: 49, 0: 12, 1: 1}
    assert ESCI_GRADES["exact"] == 3 and ESCI_GRADES["complement"] == 1
    p = labels.pairs[0]
    assert p.query == "mama koala" and p.product_id == "B01LVWQY6K"
    assert p.text.startswith("Mama Koala One Size Baby") and "<b>" not in p.text


def test_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path):
    csv_path = tmp_path / "h.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8") as fh:
        fh.write("query,product_id,esci_label,product_title\n")
        fh.write("red dress,1,E,Red Midi Dress\n")
        fh.write(",2,E,Blue Jeans\n")  # no query
        fh.write("blue jeans,3,X,Blue Jeans\n")  # unknown label
        fh.write("white shirt,4,I,\n")  # no product text
        fh.write("red dress,1,S,Red Midi Dress\n")  # duplicate pair
    labels = read_human_labels(csv_path)
    assert [p.grade for p in labels.pairs] == [3]
    assert [n for n, _ in labels.skipped] == [3, 4, 5, 6]
    assert "no query" in labels.skipped[0][1] and "esci_label" in labels.skipped[1][1]
    assert "duplicate" in labels.skipped[3][1]

    jl = tmp_path / "h.jsonl"
    rows = [
        {"query": "navy tee", "product_id": "a", "grade": 3, "text": "Navy Tee | Tshirts | Navy Blue | Men"},
        {"query": "navy tee", "product_id": "b", "grade": 5, "text": "x"},
        {"query": "navy tee", "product_id": "c", "grade": "two", "text": "y"},
        {"query": "navy tee", "product_id": "d", "grade": 1.5, "text": "z"},
    ]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n[1, 2]\nnot json\n")
    labels = read_human_labels(jl)
    assert [p.product_id for p in labels.pairs] == ["a"]
    assert [n for n, _ in labels.skipped] == [2, 3, 4, 5, 6]
    (tmp_path / "empty.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="no valid pair"):
        read_human_labels(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError):
        read_human_labels(tmp_path / "missing.csv")
    # the first reasons are in the message when nothing is usable; a folder and a corrupt .gz are clear errors
    (tmp_path / "bad.jsonl").write_text(json.dumps({"query": "x", "grade": 9, "text": "y"}) + "\n")
    with pytest.raises(ValueError, match="line 1: grade 9 is not an integer 0-3"):
        read_human_labels(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="a folder"):
        read_human_labels(tmp_path)
    (tmp_path / "corrupt.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot be read"):
        read_human_labels(tmp_path / "corrupt.csv.gz")


def test_agreement_figures_on_a_built_case(tmp_path):
    store = JudgmentStore(tmp_path / "j.jsonl")
    human = [HumanPair(f"q{i}", f"p{i}", f"text {i}", g) for i, g in enumerate([0, 1, 2, 3, 3, 2])]
    judge = [0, 1, 2, 3, None, 2]
    from fashion_rerank.product import text_hash
    from labeling import prompts

    store.append(
        Judgment(
            query=h.query,
            product_id=h.product_id,
            text_hash=text_hash(h.text),
            judge_model="m",
            prompt_version=prompts.PROMPT_VERSION,
            grade=g,
            unlabeled=None if g is not None else "unparseable_reply",
            cost_usd=0.5,
        )
        for h, g in zip(human, judge)
    )
    a = agreement(human + [HumanPair("q9", "p9", "never graded", 1)], store, "m", False)
    assert a.labeled == 5 and a.not_graded == 1 and a.unlabeled_by_human == [0, 0, 0, 1]
    assert a.unlabeled_reasons == {"unparseable_reply": 1} and a.unlabeled_share == pytest.approx(1 / 6)
    assert a.exact_agreement == 1.0 and a.weighted_kappa == pytest.approx(1.0) and a.spearman == pytest.approx(1.0)
    assert a.confusion == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    assert a.cost_usd == pytest.approx(3.0)


def test_calibrate_on_the_esci_sample_with_the_reference_judge(tmp_path, capsys):
    rc = cli_main(["judge", "calibrate", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads((tmp_path / "calibration.json").read_text())
    agr = out["agreement"]
    assert out["pairs"] == 200 and agr["labeled"] == 200 and agr["reference_judge"] is True
    assert sum(map(sum, agr["confusion"])) == 200
    # the confusion matrix is what the store holds, pair by pair
    labels = read_human_labels(ESCI_SAMPLE)
    stored = {(j.query, j.product_id): j.grade for j in JudgmentStore(tmp_path / "judgments.jsonl").judgments()}
    from labeling.sampling import normalise_query

    expect = [[0] * 4 for _ in range(4)]
    for p in labels.pairs:
        expect[p.grade][stored[(normalise_query(p.query), p.product_id)]] += 1
    assert agr["confusion"] == expect
    assert -1.0 <= agr["weighted_kappa"] <= 1.0
    report = (tmp_path / "report.md").read_text()
    assert "reference rubric judge, not an LLM" in report and "weighted kappa" in report


def test_faulty_judge_replies_are_counted_never_coerced_and_a_rerun_pays_nothing_twice(tmp_path):
    store_path = tmp_path / "judgments.jsonl"
    judge = ReferenceJudge().start()
    try:
        s = LabelSettings(base_url=judge.url, judgments_path=store_path)
        first = calibrate(ESCI_SAMPLE, s, store_path, limit=100)
        assert first.agreement.labeled == 100 and first.grading.calls == 100
        judge.set_faults("free-text")
        second = calibrate(ESCI_SAMPLE, s, store_path)
        assert second.grading.already_stored == 100 and second.grading.calls == 100  # only the new pairs
        a = second.agreement
        assert a.labeled == 100 and sum(a.unlabeled_by_human) == 100 and a.unlabeled_share == 0.5
        assert a.unlabeled_reasons == {"unparseable_reply": 100}
        assert sum(map(sum, a.confusion)) == 100

        judge.set_faults("grade=7")
        third = calibrate(ESCI_SAMPLE, s, tmp_path / "other.jsonl", limit=20)
        assert third.agreement.labeled == 0 and third.agreement.unlabeled_reasons == {"grade_out_of_range": 20}
        assert third.agreement.weighted_kappa is None and third.agreement.confusion == [[0] * 4 for _ in range(4)]
    finally:
        judge.stop()
