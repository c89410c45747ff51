"""Seeded shopper queries built from the catalog's own vocabulary: the demo's "live traffic".

Every query is derived from one real catalog product, so each query has relevant products by
construction. The product's structured attributes are turned into the words shoppers type:

- product type (`Product.attributes['product_type']`) -> everyday words: Tshirts -> t-shirt / tshirt / tee,
  Casual Shoes -> casual shoes / sneakers, Sports Shoes -> sports shoes / running shoes / trainers,
  Trousers -> trousers / pants / chinos, Kurtas -> kurta, Lipstick -> lipstick / lippie, Track Pants ->
  track pants / joggers / trackies / sweatpants, ... (TYPE_WORDS: 82 types, fashion, beauty and personal care;
  gift sets and free gifts of the Myntra catalog are left out)
- colour -> the catalog word or an everyday synonym: Navy Blue -> navy / navy blue / dark blue,
  Maroon -> maroon / burgundy / wine, Off White -> off white / cream / ivory, Grey -> grey / gray (COLOUR_WORDS)
- gender -> men / mens / men's / for men / for him, women / ladies / for women / for her, boys / girls / kids
  ("kids" accepts Boys and Girls products), and gift phrasing: for dad / for my husband / gift for him,
  for mum / for my wife / gift for her, for my son, for my daughter ... (GENDER_WORDS)
- usage -> occasion and activity words: Formal -> formal / office / for work / for interviews, Party -> party /
  date night / for a night out / for prom, Sports -> sports / gym / workout / for jogging / for hiking, Ethnic ->
  ethnic / festive / for a wedding / for diwali, Casual -> casual / everyday
- season -> summer / winter / autumn / spring
- brand (`Product.attributes['brand']`, e.g. "Puma", "U.S. Polo Assn.") lowercased, or a short form shoppers
  write (BRAND_WORDS: benetton, us polo, levi's, ray ban)
- a style word found in the product's own title (floral, denim, striped, checked, printed, slim fit, ...)

Distributions (all drawn from one `random.Random(seed)`; default seed 42):

- a product type (among those with shopper words) is drawn with probability proportional to the square root
  of its product count, then one of its products uniformly: common types (t-shirts, shirts, casual shoes) are
  common queries, as in a real shop, and every type with its shopper words still gets queries (`type_power`);
- each slot is included with a fixed probability (SLOT_PROBABILITY): type always, colour 0.65,
  gender 0.6, usage 0.3 (0.1 for Casual), season 0.12, brand 0.15, style word 0.2;
- phrasing: the slots are rendered in one of several word orders shoppers use (PHRASINGS), e.g.
  "black running shoes men", "navy formal shirt for office", "women floral summer dress",
  "kids denim shorts", "puma sneakers for men";
- typos: a share `typo_rate` (default 4 %) of the distinct queries get one keyboard slip (a dropped,
  doubled or swapped letter) in a word of 5+ letters that is not the brand;
- repeats: the distinct queries are ranked by specificity (word count + 3 for a typo + a seeded
  uniform jitter in [0, 2.5), so short generic queries lead) and query rank r (1-based)
  appears max(1, round(C / r**zipf_s)) times in the traffic stream (Zipf, default s = 1.0), with C
  chosen so that the stream has about `stream_factor` (default 3) times as many requests as distinct
  queries: a few head queries repeat dozens of times, most of the tail appears once.

Split: queries are grouped by their bag of words (so "black tee men" and "men black tee" stay
together), the groups are shuffled with the seed, and `test_share` (default 1/3) of the distinct
queries go to the held-out test part. The held-out part therefore shares no query string (not even
a reordering of one) with the training part. Default sizes: 600 distinct queries -> 400 train / 200
test, about 1,200 train stream requests.

Usage:
    qs = generate_queries(products, n_distinct=600, seed=42)
    qs.train, qs.test           # lists of ShopperQuery (text, intent, count, typo)
    qs.stream("train")          # the replay order: each train query `count` times, shuffled with the seed
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from fashion_rerank.product import Product

#: Catalog product type -> shopper words (first = the plain word). Types not listed are not queried.
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "Tshirts": ("t-shirt", "tshirt", "tee", "t shirt"),
    "Shirts": ("shirt",),
    "Casual Shoes": ("casual shoes", "sneakers", "kicks"),
    "Sports Shoes": ("sports shoes", "running shoes", "trainers", "gym shoes", "tennis shoes"),
    "Formal Shoes": ("formal shoes", "leather shoes", "office shoes"),
    "Watches": ("watch", "wristwatch"),
    "Kurtas": ("kurta",),
    "Kurtis": ("kurti",),
    "Kurta Sets": ("kurta set",),
    "Tops": ("top",),
    "Tunics": ("tunic",),
    "Handbags": ("handbag", "purse", "tote"),
    "Heels": ("heels", "high heels", "stilettos"),
    "Flats": ("flats", "ballerinas"),
    "Sandals": ("sandals",),
    "Sports Sandals": ("sports sandals", "floaters"),
    "Flip Flops": ("flip flops", "slippers", "chappals", "sliders"),
    "Sunglasses": ("sunglasses", "shades", "sunnies"),
    "Wallets": ("wallet",),
    "Belts": ("belt",),
    "Backpacks": ("backpack", "school bag", "rucksack"),
    "Laptop Bag": ("laptop bag",),
    "Duffel Bag": ("duffel bag", "gym bag"),
    "Messenger Bag": ("messenger bag", "sling bag"),
    "Clutches": ("clutch",),
    "Socks": ("socks",),
    "Briefs": ("briefs", "undies", "underwear"),
    "Boxers": ("boxers",),
    "Trunk": ("trunks",),
    "Innerwear Vests": ("vest", "undershirt"),
    "Bra": ("bra",),
    "Jeans": ("jeans", "denims"),
    "Shorts": ("shorts",),
    "Trousers": ("trousers", "pants", "chinos"),
    "Track Pants": ("track pants", "joggers", "trackies", "sweatpants", "sweats"),
    "Capris": ("capris", "three fourths"),
    "Leggings": ("leggings",),
    "Jeggings": ("jeggings",),
    "Skirts": ("skirt",),
    "Dresses": ("dress",),
    "Jumpsuit": ("jumpsuit",),
    "Sarees": ("saree", "sari"),
    "Dupatta": ("dupatta",),
    "Sweatshirts": ("sweatshirt", "hoodie"),
    "Sweaters": ("sweater", "pullover", "jumper"),
    "Jackets": ("jacket", "parka", "puffer jacket", "windbreaker"),
    "Rain Jacket": ("rain jacket", "raincoat"),
    "Blazers": ("blazer",),
    "Waistcoat": ("waistcoat",),
    "Tracksuits": ("tracksuit",),
    "Night suits": ("night suit", "pyjama set", "pj set", "jammies"),
    "Nightdress": ("nightdress", "nightie"),
    "Lounge Pants": ("lounge pants", "pyjamas"),
    "Caps": ("cap",),
    "Ties": ("tie",),
    "Scarves": ("scarf",),
    "Stoles": ("stole",),
    "Mufflers": ("muffler",),
    "Earrings": ("earrings", "studs", "jhumkas"),
    "Pendant": ("pendant",),
    "Necklace and Chains": ("necklace", "chain"),
    "Bangle": ("bangles",),
    "Bracelet": ("bracelet",),
    "Ring": ("ring",),
    "Cufflinks": ("cufflinks",),
    "Suspenders": ("suspenders", "braces"),
    "Waist Pouch": ("waist pouch", "bum bag", "fanny pack"),
    # beauty and personal care
    "Lipstick": ("lipstick", "lippie"),
    "Lip Gloss": ("lip gloss",),
    "Lip Liner": ("lip liner",),
    "Nail Polish": ("nail polish", "nail varnish", "nail paint"),
    "Kajal and Eyeliner": ("eyeliner", "kajal", "kohl"),
    "Mascara": ("mascara",),
    "Eyeshadow": ("eyeshadow",),
    "Foundation and Primer": ("foundation", "primer"),
    "Highlighter and Blush": ("blush", "blusher", "highlighter"),
    "Compact": ("compact",),
    "Face Moisturisers": ("moisturiser", "moisturizer", "face cream"),
    "Face Wash and Cleanser": ("face wash", "cleanser"),
    "Sunscreen": ("sunscreen", "sun cream"),
    "Deodorant": ("deodorant", "deo", "body spray"),
    "Perfume and Body Mist": ("perfume", "fragrance", "body mist", "eau de toilette", "aftershave"),
}

#: Catalog colour -> shopper words (first = the catalog word). Unlisted colours (NA, Multi, Skin, ...)
#: are never put in a query.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "Black": ("black",),
    "White": ("white",),
    "Blue": ("blue",),
    "Brown": ("brown",),
    "Grey": ("grey", "gray"),
    "Red": ("red",),
    "Green": ("green",),
    "Pink": ("pink",),
    "Navy Blue": ("navy blue", "navy", "dark blue"),
    "Purple": ("purple", "violet"),
    "Silver": ("silver",),
    "Yellow": ("yellow",),
    "Beige": ("beige",),
    "Gold": ("gold", "golden"),
    "Maroon": ("maroon", "burgundy", "wine"),
    "Burgundy": ("burgundy", "wine", "maroon"),
    "Orange": ("orange",),
    "Olive": ("olive", "olive green"),
    "Cream": ("cream", "off white"),
    "Off White": ("off white", "cream", "ivory"),
    "Charcoal": ("charcoal", "dark grey"),
    "Grey Melange": ("grey melange", "heather grey"),
    "Peach": ("peach",),
    "Lavender": ("lavender", "lilac"),
    "Khaki": ("khaki",),
    "Magenta": ("magenta",),
    "Teal": ("teal",),
    "Tan": ("tan",),
    "Mustard": ("mustard", "mustard yellow"),
    "Turquoise Blue": ("turquoise", "turquoise blue"),
    "Rust": ("rust",),
    "Sea Green": ("sea green",),
}

#: Shopper gender words -> the catalog genders they accept.
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "men": ("Men",),
    "mens": ("Men",),
    "men's": ("Men",),
    "for men": ("Men",),
    "for him": ("Men",),
    "women": ("Women",),
    "womens": ("Women",),
    "ladies": ("Women",),
    "for women": ("Women",),
    "for her": ("Women",),
    "boys": ("Boys",),
    "for boys": ("Boys",),
    "girls": ("Girls",),
    "for girls": ("Girls",),
    "kids": ("Boys", "Girls"),
    "for kids": ("Boys", "Girls"),
    # gift phrasing and everyday words for who it is for
    "women's": ("Women",),
    "gift for him": ("Men",),
    "for dad": ("Men",),
    "for my husband": ("Men",),
    "for my boyfriend": ("Men",),
    "for my brother": ("Men",),
    "for guys": ("Men",),
    "gift for her": ("Women",),
    "for mum": ("Women",),
    "for mom": ("Women",),
    "for my wife": ("Women",),
    "for my girlfriend": ("Women",),
    "for my sister": ("Women",),
    "for my son": ("Boys",),
    "for my daughter": ("Girls",),
}
#: Catalog gender -> shopper words used for it (Unisex products get no gender word).
_GENDER_CHOICES: dict[str, tuple[str, ...]] = {
    g: tuple(w for w, accepted in GENDER_WORDS.items() if g in accepted) for g in ("Men", "Women", "Boys", "Girls")
}

#: Catalog usage -> (words placed before the type, phrases placed after it).
USAGE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Formal": (("formal", "office", "workwear"), ("for office", "for work", "for interviews", "for meetings")),
    "Party": (("party", "clubbing", "date night"), ("for party", "for a night out", "for prom", "for a cocktail party")),
    "Casual": (("casual", "everyday"), ()),
    "Smart Casual": (("smart casual",), ()),
    "Sports": (
        ("sports", "gym", "workout"),
        ("for gym", "for running", "for sports", "for jogging", "for hiking", "for cycling", "for the gym"),
    ),
    "Ethnic": (
        ("ethnic", "festive", "traditional"),
        ("for festive season", "for wedding", "for a wedding", "for diwali", "for eid", "for puja"),
    ),
}

SEASON_WORDS: dict[str, tuple[str, ...]] = {
    "Summer": ("summer",),
    "Winter": ("winter",),
    "Fall": ("autumn",),
    "Spring": ("spring",),
}

#: Style words looked up in the product title (lowercased); the query uses the word as written here.
STYLE_WORDS: tuple[str, ...] = (
    "floral",
    "printed",
    "striped",
    "checked",
    "check",
    "solid",
    "denim",
    "leather",
    "cotton",
    "linen",
    "slim fit",
    "skinny",
    "round neck",
    "v-neck",
    "polo",
    "hooded",
    "graphic",
    "embroidered",
    "sleeveless",
    "analog",
    "digital",
    "chronograph",
    "polarized",
    "aviator",
    "wayfarer",
    "sling",
    "lace",
    "silk",
    "woven",
    "knit",
    "cargo",
    "maxi",
    "midi",
    "mini",
    "pack of 3",
    "pack of 2",
    "flip flops",
)

#: Catalog brand -> the ways shoppers write it (first = the catalog name lowercased); unlisted brands are
#: written as the catalog names them, lowercased.
BRAND_WORDS: dict[str, tuple[str, ...]] = {
    "United Colors of Benetton": ("united colors of benetton", "benetton", "ucb"),
    "U.S. Polo Assn.": ("u.s. polo assn.", "us polo"),
    "ADIDAS": ("adidas",),
    "ADIDAS Originals": ("adidas originals", "adidas"),
    "Levis": ("levis", "levi's"),
    "Ray-Ban": ("ray-ban", "ray ban", "rayban"),
    "Rayban": ("rayban", "ray ban"),
    "Ray Ban": ("ray ban", "rayban"),
    "French Connection": ("french connection", "fcuk"),
}

#: Probability that a slot is filled (the product type is always named).
SLOT_PROBABILITY: dict[str, float] = {
    "colour": 0.65,
    "gender": 0.6,
    "usage": 0.3,
    "usage_casual": 0.1,
    "season": 0.12,
    "brand": 0.15,
    "style": 0.2,
}

#: Word orders shoppers type. Slots: B brand, C colour, G gender word before, g gender phrase after,
#: U usage word before, u usage phrase after, S season, Y style word, T type.
PHRASINGS: tuple[str, ...] = (
    "C Y T G",
    "C U T g",
    "G Y S T",
    "G C T",
    "B C T g",
    "C T G",
    "Y C T g",
    "S C Y T G",
    "U C T g",
    "B T g",
    "C Y T u",
    "G B C T",
    "C S T g",
)


@dataclass(frozen=True)
class Intent:
    """What a query asks for, in catalog values; a product `matches` when every set field agrees.

    `genders` is empty when the query names no gender; `style` must appear in the product title.
    """

    product_type: str
    colour: str = ""
    genders: tuple[str, ...] = ()
    usage: str = ""
    season: str = ""
    brand: str = ""
    style: str = ""

    def matches(self, product: Product) -> bool:
        """True when `product` has this type and every attribute the query names."""
        a = product.attributes
        if a.get("product_type") != self.product_type:
            return False
        if self.colour and a.get("colour") != self.colour:
            return False
        if self.genders and a.get("gender") not in self.genders:
            return False
        if self.usage and a.get("usage") != self.usage:
            return False
        if self.season and a.get("season") != self.season:
            return False
        if self.brand and a.get("brand") != self.brand:
            return False
        if self.style and self.style not in product.title.lower():
            return False
        return True


@dataclass(frozen=True)
class ShopperQuery:
    """One distinct query: its text, the intent it was built from, how often it is sent, and whether it has a typo."""

    text: str
    intent: Intent
    count: int = 1
    typo: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuerySet:
    """Distinct train and held-out test queries plus the generator settings that made them."""

    train: list[ShopperQuery]
    test: list[ShopperQuery]
    seed: int
    settings: dict = field(default_factory=dict)

    def stream(self, split: str = "train") -> list[str]:
        """The traffic stream of `split`: each query `count` times, in a seeded shuffled order."""
        queries = {"train": self.train, "test": self.test, "all": self.train + self.test}[split]
        out = [q.text for q in queries for _ in range(q.count)]
        random.Random(f"{self.seed}-stream-{split}").shuffle(out)
        return out

    def summary(self) -> dict:
        """Sizes and settings for reports: distinct per split, stream lengths, typo count, head query."""
        allq = self.train + self.test
        head = max(allq, key=lambda q: q.count) if allq else None
        return {
            "seed": self.seed,
            **self.settings,
            "distinct": len(allq),
            "train": len(self.train),
            "test": len(self.test),
            "train_stream": sum(q.count for q in self.train),
            "typos": sum(q.typo for q in allq),
            "head_query": {"text": head.text, "count": head.count} if head else None,
        }


def group_key(text: str) -> str:
    """Bag-of-words key of a query (lowercased, sorted words): reorderings share a key and a split."""
    return " ".join(sorted(text.lower().split()))


#: Typos that would make an embarrassing or offensive word are not used.
_TYPO_BLOCKLIST = frozenset({"shit", "shits", "bitch", "butt", "dick", "slut"})


def _typo(text: str, rng: random.Random, protect: str) -> str | None:
    words = text.split()
    cands = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and w not in protect.split()]
    if not cands:
        return None
    i = rng.choice(cands)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.choice(("drop", "double", "swap"))
    if kind == "drop":
        w = w[:j] + w[j + 1 :]
    elif kind == "double":
        w = w[:j] + w[j] + w[j:]
    else:
        w = w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :] if w[j] != w[j - 1] else w[:j] + w[j + 1 :]
    if w in _TYPO_BLOCKLIST:
        return None
    words[i] = w
    return " ".join(words)


def _render(product: Product, rng: random.Random) -> tuple[str, Intent] | None:
    a = product.attributes
    ptype = a.get("product_type", "")
    if ptype not in TYPE_WORDS:
        return None
    p = SLOT_PROBABILITY
    colour = a.get("colour", "") if a.get("colour") in COLOUR_WORDS and rng.random() < p["colour"] else ""
    gender = a.get("gender", "") if a.get("gender") in _GENDER_CHOICES and rng.random() < p["gender"] else ""
    usage_val = a.get("usage", "")
    usage_p = p["usage_casual"] if usage_val == "Casual" else p["usage"]
    usage = usage_val if usage_val in USAGE_WORDS and rng.random() < usage_p else ""
    season = a.get("season", "") if a.get("season") in SEASON_WORDS and rng.random() < p["season"] else ""
    brand = a.get("brand", "") if a.get("brand") and rng.random() < p["brand"] else ""
    title = product.title.lower()
    type_words = TYPE_WORDS[ptype]
    styles = [s for s in STYLE_WORDS if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", title) and s not in " ".join(type_words)]
    style = rng.choice(styles) if styles and rng.random() < p["style"] else ""

    gender_word = rng.choice(_GENDER_CHOICES[gender]) if gender else ""
    genders = GENDER_WORDS[gender_word] if gender_word else ()
    before, after = USAGE_WORDS.get(usage, ((), ()))
    usage_before = rng.choice(before) if usage and before else ""
    usage_after = rng.choice(after) if usage and after else ""
    slots = {
        "B": rng.choice(BRAND_WORDS.get(brand, (brand.lower(),))) if brand else "",
        "C": rng.choice(COLOUR_WORDS[colour]) if colour else "",
        "G": gender_word if "for" not in gender_word.split() else "",
        "g": gender_word,
        "U": usage_before,
        "u": usage_after,
        "S": rng.choice(SEASON_WORDS[season]) if season else "",
        "Y": style,
        "T": rng.choice(type_words),
    }
    order = rng.choice(PHRASINGS).split()
    parts: list[str] = []
    used_gender = used_usage = False
    for slot in order:
        if slot in "Gg":
            if used_gender or not slots[slot]:
                continue
            used_gender = True
        if slot in "Uu":
            if used_usage or not slots[slot]:
                continue
            used_usage = True
        if slots[slot]:
            parts.append(slots[slot])
    # slots the order left out are dropped from the intent too, so the text says everything the intent asks
    if gender and not used_gender:
        if slots["g"] and not slots["G"]:
            parts.append(slots["g"])  # "for her" goes at the end
        else:
            genders = ()
    if usage and not used_usage:
        if usage_before:
            parts.insert(parts.index(slots["T"]), usage_before)
        elif usage_after:
            parts.append(usage_after)
    words: list[str] = []
    for w in " ".join(parts).split():  # "running running shoes" -> "running shoes"
        if not words or words[-1] != w:
            words.append(w)
    text = " ".join(words)
    intent = Intent(
        product_type=ptype,
        colour=colour if "C" in order else "",
        genders=genders,
        usage=usage,
        season=season if "S" in order else "",
        brand=brand if "B" in order else "",
        style=style if "Y" in order else "",
    )
    return text, intent


def generate_queries(
    products: Iterable[Product],
    n_distinct: int = 600,
    test_share: float = 1 / 3,
    seed: int = 42,
    zipf_s: float = 1.0,
    stream_factor: float = 3.0,
    typo_rate: float = 0.04,
    exclude: Iterable[str] = (),
    type_power: float = 0.5,
) -> QuerySet:
    """Build `n_distinct` distinct shopper queries from `products`, split into train and held-out test.

    Args:
        products: catalog products (e.g. `read_myntra().products`); only those whose type is in TYPE_WORDS
            are used.
        n_distinct: distinct query strings wanted (fewer come back only if the catalog is too small to
            give that many after 50 * n_distinct draws).
        test_share: share of the distinct queries in the held-out part (whole bag-of-words groups).
        seed: the one seed of every random choice; the same inputs and seed give the same QuerySet.
        zipf_s: Zipf exponent of the repeat counts (query rank r is sent ~C / r**s times, at least once).
        stream_factor: train+test stream requests per distinct query (sets C).
        typo_rate: share of distinct queries with one typo.
        type_power: a product type is drawn with probability proportional to its product count ** type_power,
            then a product of that type uniformly: 1 draws products uniformly (t-shirts, 16 % of the Myntra
            catalog, would be 16 % of the queries and 22 of its 82 queried types would get no training query at
            600 queries); the default 0.5 keeps common types common (t-shirts ~6 %) while every type and its
            shopper words get queries.
        exclude: query strings never to produce, nor any reordering of their words (the demo passes its
            hand-written held-out queries, so the training traffic never contains one).

    Returns:
        QuerySet with `train` and `test` lists (each query has an `intent` that >= 1 given product matches).

    Raises:
        ValueError: no product has a queryable type, or a bad argument.
    """
    if n_distinct <= 0 or not 0 < test_share < 1 or stream_factor < 1:
        raise ValueError("need n_distinct > 0, 0 < test_share < 1 and stream_factor >= 1")
    pool = [p for p in products if p.attributes.get("product_type") in TYPE_WORDS]
    if not pool:
        raise ValueError("no product has a product type that shoppers query (see TYPE_WORDS)")
    pool.sort(key=lambda p: p.id)  # independent of catalog order
    by_type: dict[str, list[Product]] = defaultdict(list)
    for p in pool:
        by_type[p.attributes["product_type"]].append(p)
    types = sorted(by_type)
    type_weights = [len(by_type[t]) ** type_power for t in types]
    rng = random.Random(seed)
    excluded = {group_key(t) for t in exclude}
    found: dict[str, tuple[Intent, bool]] = {}
    draws = 0
    while len(found) < n_distinct and draws < 50 * n_distinct:
        draws += 1
        ptype = rng.choices(types, weights=type_weights)[0]
        product = by_type[ptype][rng.randrange(len(by_type[ptype]))]
        rendered = _render(product, rng)
        if rendered is None:
            continue
        text, intent = rendered
        typo = False
        if rng.random() < typo_rate:
            t = _typo(text, rng, protect=intent.brand.lower())
            if t:
                text, typo = t, True
        if text not in found and group_key(text) not in excluded:
            found[text] = (intent, typo)

    texts = list(found)
    # repeats: a seeded rank order, Zipf counts scaled so the stream is ~stream_factor x distinct
    # short, generic queries are the head ("black heels"), long ones and typos the tail
    jitter = {t: rng.random() for t in texts}
    ranked = sorted(texts, key=lambda t: len(t.split()) + 3 * found[t][1] + 2.5 * jitter[t])
    n = len(ranked)
    target = stream_factor * n
    weights = [1.0 / (r**zipf_s) for r in range(1, n + 1)]
    lo, hi = 0.0, target
    for _ in range(60):  # bisection on C so that sum(max(1, round(C w))) ~= target
        c = (lo + hi) / 2
        total = sum(max(1, round(c * w)) for w in weights)
        lo, hi = (c, hi) if total < target else (lo, c)
    counts = {t: max(1, round(lo * w)) for t, w in zip(ranked, weights)}

    # split by bag-of-words group
    groups: dict[str, list[str]] = defaultdict(list)
    for t in texts:
        groups[group_key(t)].append(t)
    keys = sorted(groups)
    random.Random(f"{seed}-split").shuffle(keys)
    test_texts: set[str] = set()
    want_test = round(test_share * n)
    for k in keys:
        if len(test_texts) >= want_test:
            break
        test_texts.update(groups[k])

    def mk(t: str) -> ShopperQuery:
        intent, typo = found[t]
        return ShopperQuery(text=t, intent=intent, count=counts[t], typo=typo)

    train = [mk(t) for t in texts if t not in test_texts]
    test = [mk(t) for t in texts if t in test_texts]
    settings = {
        "n_distinct_requested": n_distinct,
        "test_share": test_share,
        "zipf_s": zipf_s,
        "stream_factor": stream_factor,
        "typo_rate": typo_rate,
    }
    return QuerySet(train=train, test=test, seed=seed, settings=settings)


def matching_products(intent: Intent, products: Sequence[Product]) -> list[Product]:
    """The products of `products` that `intent` matches (for checks and examples)."""
    return [p for p in products if intent.matches(p)]
