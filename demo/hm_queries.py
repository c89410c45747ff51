"""Seeded shopper queries for H&M articles, built the way MODA built its queries: from a purchased article.

MODA (the H&M fashion-search study) had no real search log; it generated one query per real purchase from
the purchased article's attributes. This module does the same on the Kaggle H&M files: given an article's
columns (`articles.parquet`: product_type_name, colour_group_name, perceived_colour_master_name,
index_group_name, index_name, section_name, graphical_appearance_name, detail_desc) it writes the words a
shopper would type for it. Every word comes from one of the article's own columns, so the purchased article
is relevant to its query by construction.

Slots (tables below; all choices from one `random.Random`):

- type (always): product_type_name -> everyday words (TYPE_WORDS: 71 types, e.g. "Vest top" -> vest top /
  tank top / cami, "Trousers" -> trousers / pants, "Sweater" -> jumper / sweater / knit jumper,
  "Underwear bottom" -> briefs / knickers). They cover 97.6 % of the last week's 240,311 purchases; types
  without shopper words ("Unknown" 1.5 %, "Other accessories", "Garment Set", "Dog wear", ...) give no query.
  Denim trousers (graphical appearance "Denim") are "jeans" / "denim jeans", as shoppers say. A few
  natural words are not used because the reference rubric reads them for Myntra and must keep doing so
  (pyjamas, pyjama set, nightie, necklace, gym bag: the Myntra generator writes them and the rubric leaves
  them unparsed there); the table uses pj set / pjs, nightdress / nightgown, chain / pendant necklace and
  weekend / sports bag instead.
- colour, probability 0.6: colour_group_name -> the catalog word or an everyday synonym (COLOUR_WORDS,
  e.g. "Dark Blue" -> navy / dark blue / navy blue, "Greenish Khaki" -> khaki / khaki green / olive,
  "Light Purple" -> lilac / lavender / light purple); a colour group without words ("Other", "Unknown")
  falls back to perceived_colour_master_name (MASTER_COLOUR_WORDS), else no colour.
- who, probability 0.55: index_group_name -> shopper words (WHO_WORDS): Ladieswear -> women / womens /
  ladies / for women, Divided -> women / teen / for teens (H&M's young line), Menswear -> men / mens /
  for men, Baby/Children -> kids / for kids, or baby (index "Baby Sizes 50-98"), girls / boys (a section
  name with Girl / Boy). Sport articles take a gender word from their section ("Ladies H&M Sport" ->
  women, "Men H&M Sport" -> men) with the same probability, and a sport word (sports / gym / workout /
  running / training) with probability 0.7.
- section, probability 0.5 where the section has words: a few section names carry a shopper word
  (SECTION_WORDS: "Mama" -> maternity, "H&M+" -> plus size, "Womens Swimwear, beachwear" -> beach, ...).
- appearance, probability 0.35: graphical_appearance_name -> pattern words (APPEARANCE_WORDS: Stripe ->
  striped, All over pattern -> patterned / print, Check -> checked / check, Dot -> polka dot / spotted,
  Denim -> denim, Lace -> lace, ...). "Solid", "Melange" and "Unknown" give no word. "denim" is not put
  in front of dress / skirt / shirt / shorts / top / tee / bag: the reference rubric reads "denim" there as
  the product type jeans (a limit of its Myntra vocabulary, kept so Myntra grades stay as they are).
- detail, probability 0.3: one fabric or fit word found in detail_desc (DETAIL_WORDS: slim, skinny,
  high waist, oversized, cropped, ribbed, jersey, cotton, linen, satin, knitted, padded, ...; matched as
  whole words, the query uses the word as written in the table).

Phrasing: the filled slots are written in one of several word orders (PHRASINGS), e.g. "navy ribbed vest
top women", "women striped jumper", "black high waist jeans for women", "kids denim shorts", "gym leggings
black". No typos (MODA's generated queries had none).

Use:
    arts = read_hm_articles(path)                      # article_id -> {column: value}
    q = render_query(arts["0706016001"], random.Random(7))
    q.text, q.slots                                    # "high waist pants women", {"type": "pants", ...}
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from fashion_rerank.product import Product

#: The articles.parquet columns the generator reads.
HM_COLUMNS: tuple[str, ...] = (
    "article_id",
    "prod_name",
    "product_type_name",
    "product_group_name",
    "colour_group_name",
    "perceived_colour_master_name",
    "index_name",
    "index_group_name",
    "section_name",
    "graphical_appearance_name",
    "detail_desc",
)

#: product_type_name -> shopper words (first = the plain word). Ordered by purchases in the last week.
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "Trousers": ("trousers", "pants"),
    "Sweater": ("jumper", "sweater", "knit jumper"),
    "Dress": ("dress",),
    "Top": ("top", "long sleeve top"),
    "T-shirt": ("t-shirt", "tee", "tshirt"),
    "Blouse": ("blouse",),
    "Shirt": ("shirt",),
    "Bra": ("bra", "bralette"),
    "Jacket": ("jacket",),
    "Leggings/Tights": ("leggings",),
    "Underwear bottom": ("briefs", "knickers", "underwear"),
    "Cardigan": ("cardigan",),
    "Hoodie": ("hoodie", "hooded sweatshirt"),
    "Blazer": ("blazer",),
    "Skirt": ("skirt",),
    "Vest top": ("vest top", "tank top", "cami"),
    "Socks": ("socks",),
    "Boots": ("boots", "ankle boots"),
    "Belt": ("belt",),
    "Pyjama set": ("pj set", "pjs"),
    "Bag": ("bag", "handbag", "shoulder bag"),
    "Earring": ("earrings",),
    "Underwear Tights": ("tights",),
    "Shorts": ("shorts",),
    "Bikini top": ("bikini top",),
    "Swimwear bottom": ("bikini bottoms", "bikini briefs"),
    "Necklace": ("chain necklace", "pendant necklace"),
    "Pyjama bottom": ("pyjama bottoms", "pyjama pants"),
    "Scarf": ("scarf",),
    "Hat/beanie": ("beanie", "woolly hat"),
    "Bodysuit": ("bodysuit",),
    "Underwear body": ("bodysuit",),
    "Hair/alice band": ("hairband", "headband", "alice band"),
    "Hair ties": ("hair ties", "scrunchies"),
    "Jumpsuit/Playsuit": ("jumpsuit", "playsuit"),
    "Sneakers": ("sneakers", "trainers"),
    "Swimsuit": ("swimsuit", "swimming costume"),
    "Dungarees": ("dungarees",),
    "Ring": ("ring", "rings"),
    "Hair string": ("hair elastics",),
    "Coat": ("coat",),
    "Ballerinas": ("ballet flats", "ballerinas"),
    "Polo shirt": ("polo shirt", "polo"),
    "Hair clip": ("hair clip", "hair clips"),
    "Night gown": ("nightdress", "nightgown"),
    "Sunglasses": ("sunglasses",),
    "Robe": ("robe", "dressing gown", "bathrobe"),
    "Flat shoe": ("flat shoes", "loafers"),
    "Outdoor Waistcoat": ("gilet", "padded gilet"),
    "Hat/brim": ("hat", "sun hat", "bucket hat"),
    "Gloves": ("gloves",),
    "Heeled sandals": ("heeled sandals",),
    "Beanie": ("beanie",),
    "Sandals": ("sandals",),
    "Earrings": ("earrings",),
    "Slippers": ("slippers",),
    "Cap/peaked": ("cap", "baseball cap"),
    "Pumps": ("pumps", "court shoes"),
    "Bracelet": ("bracelet",),
    "Pyjama jumpsuit/playsuit": ("onesie", "sleepsuit"),
    "Tote bag": ("tote bag", "tote"),
    "Sarong": ("sarong",),
    "Felt hat": ("felt hat", "fedora"),
    "Wedge": ("wedges",),
    "Flat shoes": ("flat shoes",),
    "Outdoor trousers": ("waterproof trousers",),
    "Weekend/Gym bag": ("weekend bag", "sports bag"),
    "Wallet": ("wallet", "purse"),
    "Tie": ("tie",),
    "Watch": ("watch",),
    "Swimwear set": ("bikini",),
}

#: colour_group_name -> shopper words. Groups not listed fall back to the perceived master colour.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "Black": ("black",),
    "White": ("white",),
    "Beige": ("beige",),
    "Light Beige": ("light beige", "beige", "nude"),
    "Dark Blue": ("navy", "dark blue", "navy blue"),
    "Blue": ("blue",),
    "Grey": ("grey", "gray"),
    "Dark Grey": ("dark grey", "charcoal"),
    "Off White": ("off white", "ivory"),
    "Light Pink": ("light pink", "pale pink", "baby pink"),
    "Dark Green": ("dark green", "forest green", "bottle green"),
    "Light Blue": ("light blue", "pale blue", "sky blue"),
    "Pink": ("pink",),
    "Greenish Khaki": ("khaki", "khaki green", "olive"),
    "Light Grey": ("light grey", "pale grey"),
    "Green": ("green",),
    "Light Orange": ("light orange", "peach", "apricot"),
    "Yellowish Brown": ("brown", "camel", "tan"),
    "Dark Red": ("dark red", "burgundy", "wine"),
    "Dark Beige": ("dark beige", "camel"),
    "Gold": ("gold",),
    "Light Purple": ("lilac", "lavender", "light purple"),
    "Dark Pink": ("dark pink", "hot pink", "fuchsia"),
    "Orange": ("orange",),
    "Red": ("red",),
    "Dark Orange": ("rust", "dark orange", "terracotta"),
    "Greyish Beige": ("greyish beige", "mole", "taupe"),
    "Dark Purple": ("dark purple", "plum"),
    "Yellow": ("yellow",),
    "Purple": ("purple",),
    "Silver": ("silver",),
    "Dark Turquoise": ("teal", "dark turquoise"),
    "Dark Yellow": ("mustard", "dark yellow"),
    "Light Turquoise": ("light turquoise", "mint", "aqua"),
    "Light Green": ("light green", "mint green"),
    "Light Yellow": ("light yellow", "pale yellow"),
    "Turquoise": ("turquoise",),
    "Light Red": ("light red", "coral"),
    "Bronze/Copper": ("bronze", "copper"),
    "Transparent": ("clear", "transparent"),
}

#: perceived_colour_master_name -> words, used when the colour group has no words ("Other Pink", "Unknown").
MASTER_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "Black": ("black",),
    "White": ("white",),
    "Blue": ("blue",),
    "Grey": ("grey",),
    "Beige": ("beige",),
    "Pink": ("pink",),
    "Khaki green": ("khaki",),
    "Green": ("green",),
    "Orange": ("orange",),
    "Red": ("red",),
    "Brown": ("brown",),
    "Lilac Purple": ("lilac", "purple"),
    "Yellow": ("yellow",),
    "Turquoise": ("turquoise",),
    "Metal": ("metallic",),
}

#: index_group_name -> shopper words for whom the article is (Baby/Children refined below).
WHO_WORDS: dict[str, tuple[str, ...]] = {
    "Ladieswear": ("women", "womens", "ladies", "for women"),
    "Divided": ("women", "teen", "for teens"),
    "Menswear": ("men", "mens", "for men"),
    "Baby/Children": ("kids", "for kids"),
}
#: Words of a Sport article (index group "Sport"): the usage slot.
SPORT_WORDS: tuple[str, ...] = ("sports", "gym", "workout", "running", "training")

#: section_name -> a shopper word (only sections where shoppers say something specific).
SECTION_WORDS: dict[str, tuple[str, ...]] = {
    "Mama": ("maternity",),
    "H&M+": ("plus size",),
    "Womens Swimwear, beachwear": ("beach",),
    "Womens Tailoring": ("tailored",),
    "Men Suits & Tailoring": ("tailored", "suit"),
    "Womens Premium": ("premium",),
    "Divided Basics": ("basic",),
    "Womens Everyday Basics": ("basic",),
    "Womens Lingerie": ("lingerie",),
}

#: graphical_appearance_name -> pattern words. Solid, Melange, Unknown and vague structures give none.
APPEARANCE_WORDS: dict[str, tuple[str, ...]] = {
    "Stripe": ("striped", "stripe"),
    "All over pattern": ("patterned", "print"),
    "Denim": ("denim",),
    "Check": ("checked", "check", "plaid"),
    "Placement print": ("printed", "graphic"),
    "Front print": ("printed", "graphic print"),
    "Lace": ("lace",),
    "Embroidery": ("embroidered",),
    "Jacquard": ("jacquard",),
    "Dot": ("polka dot", "spotted"),
    "Colour blocking": ("colour block",),
    "Glittering/Metallic": ("glitter", "sparkly"),
    "Metallic": ("metallic",),
    "Sequin": ("sequin",),
    "Mesh": ("mesh",),
    "Application/3D": ("embellished",),
    "Argyle": ("argyle",),
}
#: Type words that "denim" must not precede (the reference rubric would read "denim" as the type).
_NO_DENIM_WORD = frozenset(
    {"dress", "skirt", "shirt", "shorts", "top", "tee", "t-shirt", "tshirt", "long sleeve top", "polo", "bag"}
)

#: Fabric / fit words looked up (whole words, case-insensitive) in detail_desc; the query uses the word
#: as written here. Patterns are the regular expressions that find them.
DETAIL_WORDS: dict[str, str] = {
    "slim": r"slim(?:[- ]fit)?",
    "skinny": r"skinny",
    "high waist": r"high[- ]waist(?:ed)?",
    "oversized": r"oversized",
    "relaxed fit": r"relaxed fit",
    "wide leg": r"wide(?:[- ]cut)? legs?",
    "cropped": r"cropped",
    "ribbed": r"ribbed|rib[- ]knit",
    "jersey": r"jersey",
    "cotton": r"cotton",
    "linen": r"linen",
    "satin": r"satin",
    "velour": r"velour",
    "corduroy": r"corduroy",
    "fleece": r"fleece",
    "wool": r"wool",
    "cashmere": r"cashmere",
    "knitted": r"(?:fine|chunky|cable)?[- ]?knit(?:ted)?",
    "padded": r"padded",
    "push up": r"push[- ]up",
    "lace": r"lace",
    "pleated": r"pleated",
    "hooded": r"hood(?:ed)?",
    "v-neck": r"v[- ]neck",
    "long sleeve": r"long sleeves",
    "sleeveless": r"sleeveless",
    "wrap": r"wrapover",
    "organic cotton": r"organic cotton",
    "faux leather": r"imitation leather",
    "leather": r"(?<!imitation )leather",
    "suede": r"(?<!imitation )suede",
    "faux fur": r"faux fur",
    "chunky": r"chunky",
}
_DETAIL_RE = {w: re.compile(rf"(?<![\w-])(?:{p})(?![\w-])", re.IGNORECASE) for w, p in DETAIL_WORDS.items()}

#: Probability that a slot is filled (the type is always named).
SLOT_PROBABILITY: dict[str, float] = {
    "colour": 0.6,
    "who": 0.55,
    "sport": 0.7,
    "section": 0.5,
    "appearance": 0.35,
    "detail": 0.3,
}

#: Word orders. Slots: C colour, A appearance, D detail, S section, P sport, T type, W who (before the type),
#: w who (after; "for women" style phrases always go after).
PHRASINGS: tuple[str, ...] = (
    "C A D T w",
    "W C A T",
    "C D T W",
    "W S C D A T",
    "P C A T w",
    "C A T W P",
    "S C D T w",
    "W P D C A T",
    "D C A T w",
    "T C W",
)


@dataclass(frozen=True)
class HmQuery:
    """One generated query: its text, the article it was made from, and the word each slot got ("" = empty)."""

    text: str
    article_id: str
    slots: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


def _s(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return " ".join(str(v).split())


def fields_of(product: Product, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """H&M column values of a `Product` read by `indexer.catalogs.read_hm` (or hand-made), plus `extra`.

    `read_hm` keeps product_type, colour, gender, usage and category; the other columns (index and section
    names, graphical appearance, perceived colour) come from `extra` (a row of `read_hm_articles`) or from
    attributes named like the H&M columns. Values in `extra` win.
    """
    a = product.attributes
    gender_group = {"Women": "Ladieswear", "Men": "Menswear", "Kids": "Baby/Children"}.get(a.get("gender", ""), "")
    out = {
        "article_id": product.id,
        "prod_name": product.title,
        "product_type_name": a.get("product_type", ""),
        "product_group_name": a.get("category", ""),
        "colour_group_name": a.get("colour", ""),
        "index_group_name": "Sport" if a.get("usage") == "Sport" else gender_group,
        "detail_desc": product.description,
    }
    for col in HM_COLUMNS:
        if a.get(col):
            out[col] = a[col]
    for k, v in (extra or {}).items():
        if _s(v):
            out[k] = _s(v)
    return out


def _who_words(f: Mapping[str, str]) -> tuple[str, ...]:
    group, section, index = f.get("index_group_name", ""), f.get("section_name", ""), f.get("index_name", "")
    if group == "Baby/Children":
        if index.startswith("Baby"):
            return ("baby", "kids")
        if re.search(r"\bGirls?\b", section):
            return ("girls", "for girls")
        if re.search(r"\bBoys?\b", section):
            return ("boys", "for boys")
    if group == "Sport":
        if section.startswith(("Ladies", "Womens")):
            return WHO_WORDS["Ladieswear"]
        if section.startswith("Men"):
            return WHO_WORDS["Menswear"]
        if section.startswith("Kids"):
            return WHO_WORDS["Baby/Children"]
        return ()
    return WHO_WORDS.get(group, ())


def detail_words(description: str) -> list[str]:
    """The DETAIL_WORDS found in an article description, in table order (longest match wins a span)."""
    found = [w for w, rx in _DETAIL_RE.items() if rx.search(description)]
    # "organic cotton" found -> drop "cotton"; "faux leather" never with "leather" (lookbehind)
    return [w for w in found if not any(w != o and w in o.split() and o in found for o in found)]


def render_query(f: Mapping[str, str], rng: random.Random) -> HmQuery | None:
    """One shopper query for an article given as H&M columns (`read_hm_articles` row or `fields_of`).

    Returns None when the product type has no shopper words (TYPE_WORDS). Draws from `rng` in a fixed
    order, so the same article and rng state give the same query.
    """
    ptype = f.get("product_type_name", "")
    if ptype not in TYPE_WORDS:
        return None
    p = SLOT_PROBABILITY
    appearance = f.get("graphical_appearance_name", "")
    type_words = TYPE_WORDS[ptype]
    if appearance == "Denim" and ptype == "Trousers":
        type_words = ("jeans", "denim jeans")
    t = rng.choice(type_words)
    colour_words = COLOUR_WORDS.get(f.get("colour_group_name", "")) or MASTER_COLOUR_WORDS.get(
        f.get("perceived_colour_master_name", ""), ()
    )
    c = rng.choice(colour_words) if colour_words and rng.random() < p["colour"] else ""
    who_words = _who_words(f)
    who = rng.choice(who_words) if who_words and rng.random() < p["who"] else ""
    sport = rng.choice(SPORT_WORDS) if f.get("index_group_name") == "Sport" and rng.random() < p["sport"] else ""
    sec_words = SECTION_WORDS.get(f.get("section_name", ""), ())
    sec = rng.choice(sec_words) if sec_words and rng.random() < p["section"] else ""
    app_words = APPEARANCE_WORDS.get(appearance, ())
    if appearance == "Denim" and (ptype == "Trousers" or t in _NO_DENIM_WORD):
        app_words = ()
    app = rng.choice(app_words) if app_words and rng.random() < p["appearance"] else ""
    details = [d for d in detail_words(f.get("detail_desc", "")) if d.split()[0][:4] not in t and d != app]
    det = rng.choice(details) if details and rng.random() < p["detail"] else ""
    order = rng.choice(PHRASINGS).split()
    slots = {"C": c, "A": app, "D": det, "S": sec, "P": sport, "T": t}
    parts: list[str] = []
    who_done = False
    for s in order:
        if s in "Ww":
            if who and not who_done and (s == "w" or not who.startswith("for ")):
                parts.append(who)
                who_done = True
            continue
        if slots[s]:
            parts.append(slots[s])
    if who and not who_done:
        parts.append(who)  # "for women" after the type, or an order without a who slot before it
    for v in slots.values():  # a filled slot the order left out goes just before the type
        if v and v not in parts:
            parts.insert(parts.index(t), v)
    words: list[str] = []
    for w in " ".join(parts).split():
        if not words or words[-1] != w:
            words.append(w)
    named = {
        "type": t,
        "colour": c,
        "who": who,
        "sport": sport,
        "section": sec,
        "appearance": app,
        "detail": det,
    }
    return HmQuery(text=" ".join(words), article_id=f.get("article_id", ""), slots=named)


def read_hm_articles(
    path: str | Path, columns: tuple[str, ...] = HM_COLUMNS, ids: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """Read the H&M articles file (Parquet, or CSV / CSV.gz as Kaggle ships it) into article_id -> {column: value}.

    article_id is the 10-digit zero-padded string (as `read_hm` makes it); values are stripped strings
    ("" for missing). 7.5-16 s for all 105,542 articles measured on the shared 2-core machine at load
    average 14-20; `ids` keeps only those
    articles (10-digit ids; a Parquet filter, much faster for a slice).
    Raises:
        FileNotFoundError: no file at `path` (it is not bundled: Kaggle competition terms).
        KeyError: the file lacks `article_id` or `product_type_name`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"H&M articles file not found at {path} (not bundled: Kaggle competition terms)")
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        filters = [("article_id", "in", sorted(set(ids)))] if ids is not None else None
        table = pq.read_table(path, columns=[c for c in columns if c in have], filters=filters).to_pydict()
    else:
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if ids is not None:
            df = df[df["article_id"].str.zfill(10).isin(set(ids))]
        table = {c: df[c].tolist() for c in columns if c in df.columns}
    for need in ("article_id", "product_type_name"):
        if need not in table:
            raise KeyError(f"{path}: no column {need!r}")
    names = list(table)
    out: dict[str, dict[str, str]] = {}
    for row in zip(*(table[c] for c in names)):
        rec = {c: _s(v) for c, v in zip(names, row)}
        aid = rec["article_id"]
        if aid.isdigit():
            aid = rec["article_id"] = aid.zfill(10)
        out[aid] = rec
    return out
