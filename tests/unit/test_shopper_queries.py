"""The hand-written held-out queries (demo/data/shopper_queries.tsv), their reader, and the rubric's shopper words."""

from __future__ import annotations

from collections import Counter

import pytest

from demo.evaluation import metrics_by_kind
from demo.queries import generate_queries, group_key
from demo.shopper_queries import DEFAULT_PATH, KINDS, read_hand_queries
from indexer.catalogs import read_myntra
from labeling import rubric


def test_the_bundled_file_has_at_least_60_clean_queries_of_every_kind():
    hand = read_hand_queries()
    assert hand.skipped == []
    assert len(hand.queries) >= 60
    kinds = Counter(q.kind for q in hand.queries)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 8, kinds
    assert len({q.text.lower() for q in hand.queries}) == len(hand.queries)


def test_the_generator_never_writes_a_hand_written_query():
    """With the demo's exclusion, not one hand-written query (nor a reordering of its words) is in the generated
    traffic, at the demo's size and at a much larger one, whatever the seed."""
    hand = read_hand_queries().texts()
    keys = {group_key(t) for t in hand}
    products = list(read_myntra().products)
    for seed, n in ((42, 600), (7, 3000)):
        qs = generate_queries(products, n_distinct=n, seed=seed, exclude=hand)
        made = {group_key(q.text) for q in qs.train + qs.test}
        assert not made & keys
        assert len(made) >= 0.95 * n  # the exclusion costs nothing measurable


def test_reader_reports_bad_lines_and_keeps_the_rest(tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text(
        "# a comment\nquery\tkind\nred lippie\tbeauty\nno tab here\n\tgift\nkicks\tshoes\nRED  lippie\tbeauty\n"
        "gift for grandpa\tgift\n\n",
        encoding="utf-8",
    )
    hand = read_hand_queries(f)
    assert hand.texts() == ["red lippie", "gift for grandpa"]
    assert hand.kind_of() == {"red lippie": "beauty", "gift for grandpa": "gift"}
    assert [s.split(":")[0] for s in hand.skipped] == ["line 4", "line 5", "line 6", "line 7"]
    assert "no tab" in hand.skipped[0] and "empty query" in hand.skipped[1]
    assert "'shoes' is not one of" in hand.skipped[2] and "repeats" in hand.skipped[3]
    with pytest.raises(ValueError, match="folder"):
        read_hand_queries(tmp_path)
    (tmp_path / "bad.tsv").write_text("only\nbad lines\n")
    with pytest.raises(ValueError, match="no valid query"):
        read_hand_queries(tmp_path / "bad.tsv")
    with pytest.raises(FileNotFoundError):
        read_hand_queries(tmp_path / "missing.tsv")


def test_every_hand_written_query_names_what_the_rubric_can_grade():
    """Each query gives the rubric a product type or at least one attribute to grade on (otherwise every candidate
    would get the same grade and the query could not separate kNN order from reranking)."""
    for q in read_hand_queries().queries:
        i = rubric.parse_query(q.text)
        assert i.type or i.gender or i.usage or i.season or i.colour or i.brand, q.text
    assert DEFAULT_PATH.name == "shopper_queries.tsv"


# -------------------------------------------------------------------------------- the rubric's shopper words

SHIRT = "U.S. Polo Assn. Men Blue Shirt | Shirts | Blue | Men | Casual | Summer"
WATCH = "Titan Men Black Dial Watch | Watches | Black | Men | Formal | Winter"
WATCH_F = "Fastrack Men Black Dial Watch | Watches | Black | Men | Casual | Winter"
BACKPACK = "Wildcraft Unisex Black Backpack | Backpacks | Black | Unisex | Casual | Fall"
MOIST = "Lotus Herbals Women Moisturiser | Face Moisturisers | White | Women | Casual | Spring"
LIP = "Lakme Women Red Lipstick | Lipstick | Red | Women | Casual | Spring"
DEO = "Axe Men Deodorant | Deodorant | Black | Men | Casual | Spring"
JACKET = "Puma Men Black Jacket | Jackets | Black | Men | Sports | Winter"
SANDAL = "Puma Men Black Sandals | Sandals | Black | Men | Casual | Summer"


@pytest.mark.parametrize(
    ("query", "text", "grade"),
    [
        ("titan watch for dad", WATCH, 3),  # brand, type and the gift recipient's gender match
        ("titan watch for dad", WATCH_F, 2),  # another brand: a substitute
        ("titan watch for mum", WATCH, 1),  # for women: a significant mismatch
        ("watch for the boardroom", WATCH, 3),  # boardroom = formal
        ("watch for the boardroom", WATCH_F, 2),  # casual, not formal
        ("us polo shirt mens", SHIRT, 3),  # "polo" belongs to the brand here, not the type (polo = t-shirt)
        ("wildcraft rucksack", BACKPACK, 3),  # rucksack is a backpack word as well as a catalog type
        ("moisturiser for dry skin", MOIST, 3),  # "skin" is a catalog colour, but not in "dry skin"
        ("red lippie", LIP, 3),
        ("red nail varnish", LIP, 1),  # beauty, another type
        ("body spray for men", DEO, 3),
        ("parka for winter", JACKET, 3),
        ("cycling jacket mens", JACKET, 3),  # cycling = sports
        ("comfy sweats", JACKET, 0),  # sweats = track pants: bottomwear, the jacket is topwear
        ("puma sliders", SANDAL, 1),  # flip flop asked, sandal given: same category
    ],
)
def test_rubric_reads_shopper_words(query, text, grade):
    assert rubric.grade(query, text)[0] == grade, rubric.grade(query, text)


def test_shopper_words_leave_h_and_m_tops_tops():
    """H&M queries say "vest top" / "tank top" for tops; "vest" alone is now an undershirt."""
    assert rubric.parse_query("black vest top women").type == "top"
    assert rubric.parse_query("white tank top").type == "top"
    assert rubric.parse_query("white vest").type == "innerwear vest"
    assert rubric.canon("hoodies") == rubric.canon("hoodie") == "hoodie"


def test_metrics_by_kind_means_wins_and_losses():
    per = {"a": {"knn": 0.5, "reranked": 1.0}, "b": {"knn": 0.8, "reranked": 0.6}, "c": {"knn": 0.4, "reranked": 0.4}}
    out = metrics_by_kind(per, {"a": "gift", "b": "gift", "c": "slang", "d": "brand"})
    assert list(out) == ["gift", "slang"]  # a kind without an evaluated query is left out
    assert out["gift"] == pytest.approx({"queries": 2, "knn": 0.65, "reranked": 0.8, "delta": 0.15, "wins": 1, "losses": 1})
    assert out["slang"]["wins"] == out["slang"]["losses"] == 0
