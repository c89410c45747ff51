"""The reference rubric: a deterministic 0-3 fashion relevance grade from structured attributes.

THIS IS NOT AN LLM. It is the grading rule behind `fashion-rerank judge-server` (model name
`reference-rubric-v2`), shipped so the labeling job, its tests and the demo run offline. It reads the
shopper's query for product type (with shopper synonyms: tee = t-shirt, sneakers = casual shoes ...),
colour (navy = navy blue; dark blue is a synonym of navy; colour families), gender, usage and season, and
reads the same attributes out of the product text made by `fashion_rerank.product.rerank_text`
("title | type | colour | gender | usage | season | brand | description", empty fields left out).
It also reads the H&M catalog's names (HM_TYPES: "Vest top" is a top, "Underwear bottom" briefs; HM_COLOURS:
"Dark Blue" is exactly navy / dark blue, close to blue; H&M "Kids" articles accept girls / boys / baby) and
the shopper words `demo.hm_queries` writes for them, without changing any Myntra grade. v2 adds the words
shoppers type that neither catalog names (SHOPPER_*: slang, British/American names, beauty words, occasions and
activities as usages, gift recipients as genders) and brands (BRANDS: a query naming a brand is exact only for
that brand's products; another brand of the right type is a minor difference), docs/shopper-queries.md.

Grades follow the rubric in `labeling.prompts`:
    3 exact    right type and every attribute the query names matches
    2 good     right type, minor differences: colour synonym or same colour family, usage, season or brand differs
    1 partial  same broad category but another type, or right type with a significant mismatch (gender, colour family)
    0          another category
A query that names no known product type can score at most 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------------ vocabulary


def canon(text: str) -> str:
    """Lowercase, hyphens/underscores/apostrophes to spaces, collapse spaces, singularise each word
    ("T-Shirts" -> "t shirt", "Flip Flops" -> "flip flop", "Dresses" -> "dress", "Watches" -> "watch")."""
    words = re.sub(r"[-_'’/&,.()]+", " ", text.lower()).split()
    return " ".join(_singular(w) for w in words)


_IRREGULAR = {
    "scarves": "scarf",
    "knives": "knife",
    "children": "child",
    "ladies": "lady",
    "kurtis": "kurti",
    # plurals of -ie words: the same word as the singular, not "-y" ("hoodies" is "hoodie", not "hoody")
    "hoodies": "hoodie",
    "sunnies": "sunnie",
    "beanies": "beanie",
    "onesies": "onesie",
    "nighties": "nightie",
    "lippies": "lippie",
}


def _singular(w: str) -> str:
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


#: canonical product type -> shopper phrases (canonicalised at import). Catalog names map to themselves.
TYPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "tshirt": ("tshirt", "t shirt", "tee", "tee shirt", "polo", "polo shirt", "polo tee"),
    "shirt": ("shirt", "button down shirt", "button down", "formal shirt", "casual shirt"),
    "top": ("top", "blouse", "crop top"),
    "kurta": ("kurta",),
    "kurti": ("kurti",),
    "tunic": ("tunic",),
    "sweatshirt": ("sweatshirt", "hoodie", "hooded sweatshirt"),
    "sweater": ("sweater", "jumper", "pullover", "cardigan"),
    "jacket": ("jacket", "windcheater", "bomber"),
    "blazer": ("blazer",),
    "dress": ("dress", "frock", "gown"),
    "jeans": ("jeans", "denim", "denims"),
    "trousers": ("trousers", "pants", "chinos", "slacks"),
    "shorts": ("shorts", "bermudas"),
    "track pant": ("track pant", "joggers", "trackpant", "track pants", "sweatpant"),
    "capris": ("capris",),
    "leggings": ("leggings", "jeggings", "tights"),
    "skirt": ("skirt",),
    "saree": ("saree", "sari"),
    "casual shoe": ("casual shoe", "sneaker", "loafer", "canvas shoe", "slip on"),
    "sports shoe": ("sports shoe", "running shoe", "trainer", "training shoe", "sport shoe", "gym shoe"),
    "formal shoe": ("formal shoe", "oxford", "derby", "office shoe", "brogue"),
    "heel": ("heel", "high heel", "stiletto", "pump", "wedge"),
    "flat": ("flat", "ballerina", "ballet flat"),
    "sandal": ("sandal",),
    "sports sandal": ("sports sandal", "floater"),
    "flip flop": ("flip flop", "slipper", "chappal", "slider"),
    "watch": ("watch", "wristwatch", "wrist watch"),
    "sunglasses": ("sunglasses", "shade", "sunnie", "goggle"),
    "handbag": ("handbag", "purse", "tote", "tote bag", "shoulder bag", "sling bag"),
    "backpack": ("backpack", "rucksack", "school bag"),
    "clutch": ("clutch",),
    "wallet": ("wallet",),
    "belt": ("belt",),
    "sock": ("sock",),
    "cap": ("cap", "baseball cap", "hat"),
    "tie": ("tie", "necktie"),
    "brief": ("briefs", "brief", "underwear"),
    "bra": ("bra",),
    "earring": ("earring", "stud", "jhumka"),
    "perfume and body mist": ("perfume", "body mist", "fragrance", "eau de parfum", "cologne"),
    "deodorant": ("deodorant", "deo"),
}

#: canonical product type -> broad category (for the "partial" grade). Unknown types are their own group.
TYPE_GROUP: dict[str, str] = {}
for _group, _types in {
    "topwear": (
        "tshirt",
        "shirt",
        "top",
        "kurta",
        "kurti",
        "tunic",
        "sweatshirt",
        "sweater",
        "jacket",
        "blazer",
        "waistcoat",
        "shrug",
        "rain jacket",
        "nehru jacket",
        "dress",
        "jumpsuit",
    ),
    "bottomwear": (
        "jeans",
        "trousers",
        "shorts",
        "track pant",
        "capris",
        "leggings",
        "skirt",
        "patiala",
        "salwar",
        "churidar",
        "jeggings",
        "tights",
        "lounge pant",
        "rain trouser",
        "stocking",
    ),
    "footwear": (
        "casual shoe",
        "sports shoe",
        "formal shoe",
        "heel",
        "flat",
        "sandal",
        "sports sandal",
        "flip flop",
        "boot",
        "booty",
    ),
    "bags": (
        "handbag",
        "backpack",
        "clutch",
        "duffel bag",
        "laptop bag",
        "messenger bag",
        "mobile pouch",
        "travel accessory",
        "trolley bag",
        "rucksack",
        "waist pouch",
        "tablet sleeve",
        "wallet",
    ),
    "watches": ("watch",),
    "eyewear": ("sunglasses",),
    "jewellery": ("earring", "pendant", "necklace and chain", "ring", "bangle", "bracelet", "jewellery set"),
    "innerwear": ("brief", "briefs", "bra", "trunk", "boxers", "innerwear vest", "camisole", "shapewear", "bath robe"),
    "nightwear": ("nightdress", "night suit", "lounge short", "lounge tshirt", "baby doll", "robe"),
    "fragrance": ("perfume and body mist", "deodorant", "fragrance gift set"),
    "beauty": (
        "lipstick",
        "lip gloss",
        "nail polish",
        "kajal and eyeliner",
        "foundation and primer",
        "compact",
        "highlighter and blush",
        "eyeshadow",
        "lip liner",
        "face moisturiser",
        "mascara",
        "concealer",
    ),
    "accessories": (
        "belt",
        "tie",
        "cap",
        "sock",
        "scarf",
        "stole",
        "muffler",
        "cufflink",
        "suspender",
        "glove",
        "accessory gift set",
        "dupatta",
    ),
    "ethnic": ("saree", "kurta set", "lehenga choli", "salwar and dupatta"),
}.items():
    for _t in _types:
        TYPE_GROUP.setdefault(canon(_t), _group)

#: canonical colour (catalog name) -> shopper phrases meaning exactly that colour.
COLOUR_EXACT: dict[str, tuple[str, ...]] = {
    "navy blue": ("navy", "navy blue"),
    "grey": ("grey", "gray"),
    "grey melange": ("grey melange", "gray melange", "heather grey", "heather gray"),
    "off white": ("off white", "ivory"),
    "multi": ("multi", "multicolour", "multicolor", "multi colour", "multi color", "multicoloured"),
}
#: shopper phrases that are synonyms (close, not identical) of a catalog colour -> "good" (grade 2) at best.
COLOUR_SYNONYM: dict[str, str] = {
    "dark blue": "navy blue",
    "midnight blue": "navy blue",
    "wine": "maroon",
    "burgundy red": "burgundy",
    "dark grey": "charcoal",
    "dark gray": "charcoal",
    "light blue": "blue",
    "sky blue": "blue",
    "royal blue": "blue",
    "dark green": "olive",
    "army green": "olive",
    "camel": "tan",
    "off-white": "off white",
    "ecru": "cream",
    "fuchsia": "magenta",
    "lilac": "lavender",
    "aqua": "turquoise blue",
    "golden": "gold",
    "jet black": "black",
}
#: colour families: a colour in the same family as the wanted one is a minor difference.
COLOUR_FAMILY: dict[str, str] = {}
for _fam, _cols in {
    "blue": ("blue", "navy blue", "turquoise blue", "teal"),
    "white": ("white", "off white", "cream"),
    "grey": ("grey", "grey melange", "charcoal", "steel"),
    "black": ("black",),
    "red": ("red", "maroon", "burgundy", "rust", "rose"),
    "brown": ("brown", "coffee brown", "mushroom brown", "tan", "taupe", "khaki", "beige", "nude", "skin"),
    "green": ("green", "olive", "sea green", "lime green", "fluorescent green"),
    "pink": ("pink", "magenta", "peach", "mauve"),
    "purple": ("purple", "lavender"),
    "yellow": ("yellow", "mustard"),
    "orange": ("orange",),
    "metallic": ("silver", "gold", "bronze", "copper", "metallic"),
    "multi": ("multi",),
}.items():
    for _c in _cols:
        COLOUR_FAMILY[canon(_c)] = _fam

GENDER_WORDS: dict[str, str] = {
    "men": "men",
    "man": "men",
    "mens": "men",
    "male": "men",
    "gents": "men",
    "him": "men",
    "guy": "men",
    "women": "women",
    "woman": "women",
    "womens": "women",
    "ladies": "women",
    "lady": "women",
    "female": "women",
    "her": "women",
    "girl": "girls",
    "girls": "girls",
    "boy": "boys",
    "boys": "boys",
    "kid": "kids",
    "kids": "kids",
    "children": "kids",
    "child": "kids",
    "unisex": "unisex",
}
USAGE_WORDS: dict[str, str] = {
    "casual": "casual",
    "everyday": "casual",
    "formal": "formal",
    "office": "formal",
    "work": "formal",
    "sports": "sports",
    "sport": "sports",
    "running": "sports",
    "gym": "sports",
    "training": "sports",
    "ethnic": "ethnic",
    "traditional": "ethnic",
    "festive": "ethnic",
    "party": "party",
    "travel": "travel",
    "smart casual": "smart casual",
}
SEASONS = ("summer", "winter", "fall", "spring")
_SEASON_WORDS = {"summer": "summer", "winter": "winter", "fall": "fall", "autumn": "fall", "spring": "spring"}

# -------------------------------------------------------------------------------------- H&M vocabulary
# Additive: the H&M catalog's names (Kaggle "H&M Personalized Fashion Recommendations" articles:
# product_type_name, colour_group_name, index groups) and the words `demo.hm_queries` writes for them.
# Myntra grades do not change (tests/integration/test_hm_queries.py checks it): an H&M type name that is also
# a Myntra type maps to the same canonical type, H&M type names are product-side only (never query phrases),
# the new query phrases are ones the Myntra query generator never writes, and the H&M colour rule applies
# only to colour names that are not Myntra colours (COLOUR_FAMILY).

#: H&M product_type_name -> canonical type (an existing one where the catalogs mean the same garment).
HM_TYPES: dict[str, str] = {
    "Trousers": "trousers",
    "Outdoor trousers": "trousers",
    "Sweater": "sweater",
    "Cardigan": "sweater",
    "Dress": "dress",
    "Top": "top",
    "Blouse": "top",
    "Vest top": "top",
    "T-shirt": "tshirt",
    "Polo shirt": "tshirt",
    "Shirt": "shirt",
    "Bra": "bra",
    "Jacket": "jacket",
    "Coat": "coat",
    "Blazer": "blazer",
    "Hoodie": "sweatshirt",
    "Outdoor Waistcoat": "waistcoat",
    "Tailored Waistcoat": "waistcoat",
    "Leggings/Tights": "tights",
    "Underwear Tights": "tights",
    "Underwear bottom": "briefs",
    "Skirt": "skirt",
    "Shorts": "shorts",
    "Jumpsuit/Playsuit": "jumpsuit",
    "Dungarees": "dungarees",
    "Bodysuit": "bodysuit",
    "Underwear body": "bodysuit",
    "Socks": "sock",
    "Boots": "boot",
    "Bootie": "boot",
    "Sneakers": "casual shoe",
    "Moccasins": "casual shoe",
    "Ballerinas": "flat",
    "Flat shoe": "flat",
    "Flat shoes": "flat",
    "Heeled sandals": "sandal",
    "Sandals": "sandal",
    "Pumps": "heel",
    "Heels": "heel",
    "Wedge": "heel",
    "Slippers": "flip flop",
    "Flip flop": "flip flop",
    "Belt": "belt",
    "Bag": "handbag",
    "Tote bag": "handbag",
    "Shoulder bag": "handbag",
    "Cross-body bag": "handbag",
    "Weekend/Gym bag": "duffel bag",
    "Backpack": "backpack",
    "Wallet": "wallet",
    "Earring": "earring",
    "Earrings": "earring",
    "Necklace": "necklace and chain",
    "Ring": "ring",
    "Bracelet": "bracelet",
    "Watch": "watch",
    "Sunglasses": "sunglasses",
    "Scarf": "scarf",
    "Gloves": "glove",
    "Tie": "tie",
    "Hat/beanie": "cap",
    "Beanie": "cap",
    "Hat/brim": "cap",
    "Cap/peaked": "cap",
    "Cap": "cap",
    "Felt hat": "cap",
    "Bucket hat": "cap",
    "Straw hat": "cap",
    "Hair/alice band": "hair accessory",
    "Alice band": "hair accessory",
    "Hairband": "hair accessory",
    "Headband": "hair accessory",
    "Hair ties": "hair accessory",
    "Hair clip": "hair accessory",
    "Hair string": "hair accessory",
    "Pyjama set": "night suit",
    "Pyjama bottom": "lounge pant",
    "Pyjama jumpsuit/playsuit": "onesie",
    "Night gown": "nightdress",
    "Robe": "robe",
    "Bikini top": "bikini",
    "Swimwear bottom": "bikini",
    "Swimwear set": "bikini",
    "Swimwear top": "bikini",
    "Swimsuit": "swimsuit",
    "Sarong": "sarong",
}
#: Query phrases for H&M garments that the vocabulary above lacks -> canonical type (none is a word the Myntra
#: query generator writes, so Myntra queries parse as before).
HM_TYPE_PHRASES: dict[str, str] = {
    "cami": "top",
    "knickers": "briefs",
    "pjs": "night suit",
    "pj set": "night suit",
    "pyjama bottoms": "lounge pant",
    "pyjama pants": "lounge pant",
    "nightgown": "nightdress",
    "dressing gown": "robe",
    "bathrobe": "robe",
    "onesie": "onesie",
    "sleepsuit": "onesie",
    "bralette": "bra",
    "beanie": "cap",
    "fedora": "cap",
    "gilet": "waistcoat",
    "playsuit": "jumpsuit",
    "dungarees": "dungarees",
    "bodysuit": "bodysuit",
    "coat": "coat",
    "court shoes": "heel",
    "swimsuit": "swimsuit",
    "swimming costume": "swimsuit",
    "bikini": "bikini",
    "bikini top": "bikini",
    "bikini bottoms": "bikini",
    "bikini briefs": "bikini",
    "sarong": "sarong",
    "hairband": "hair accessory",
    "headband": "hair accessory",
    "alice band": "hair accessory",
    "hair ties": "hair accessory",
    "scrunchies": "hair accessory",
    "hair elastics": "hair accessory",
    "hair clip": "hair accessory",
    "chain necklace": "necklace and chain",
    "pendant necklace": "necklace and chain",
    "weekend bag": "duffel bag",
    "sports bag": "duffel bag",
}
for _t, _g in {
    "coat": "topwear",
    "dungarees": "topwear",
    "bodysuit": "topwear",
    "bikini": "swimwear",
    "swimsuit": "swimwear",
    "sarong": "swimwear",
    "onesie": "nightwear",
    "hair accessory": "accessories",
}.items():
    TYPE_GROUP.setdefault(canon(_t), _g)
#: canonical H&M type name (product side only) -> canonical type
_HM_PRODUCT_TYPE: dict[str, str] = {canon(k): canon(v) for k, v in HM_TYPES.items()}

#: H&M colour_group_name -> (colour family, shopper phrases that name exactly this colour). Only names that are
#: not Myntra colours are listed (Black, Blue, Beige, Grey, Off White ... are graded by the rules above).
HM_COLOURS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Dark Blue": ("blue", ("navy", "dark blue", "navy blue")),
    "Light Blue": ("blue", ("light blue", "pale blue", "sky blue")),
    "Dark Turquoise": ("blue", ("teal", "dark turquoise")),
    "Turquoise": ("blue", ("turquoise", "turquoise blue")),
    "Light Turquoise": ("blue", ("light turquoise", "mint", "aqua")),
    "Other Blue": ("blue", ()),
    "Dark Grey": ("grey", ("dark grey", "dark gray", "charcoal")),
    "Light Grey": ("grey", ("light grey", "light gray", "pale grey")),
    "Light Beige": ("brown", ("light beige", "beige", "nude")),
    "Dark Beige": ("brown", ("dark beige", "camel")),
    "Greyish Beige": ("brown", ("greyish beige", "mole", "taupe")),
    "Yellowish Brown": ("brown", ("brown", "camel", "tan")),
    "Light Pink": ("pink", ("light pink", "pale pink", "baby pink")),
    "Dark Pink": ("pink", ("dark pink", "hot pink", "fuchsia")),
    "Other Pink": ("pink", ()),
    "Dark Red": ("red", ("dark red", "burgundy", "wine")),
    "Light Red": ("red", ("light red", "coral")),
    "Other Red": ("red", ()),
    "Dark Green": ("green", ("dark green", "forest green", "bottle green")),
    "Light Green": ("green", ("light green", "mint green")),
    "Greenish Khaki": ("green", ("khaki", "khaki green", "olive")),
    "Other Green": ("green", ()),
    "Light Purple": ("purple", ("lilac", "lavender", "light purple")),
    "Dark Purple": ("purple", ("dark purple", "plum")),
    "Other Purple": ("purple", ()),
    "Light Orange": ("orange", ("light orange", "peach", "apricot")),
    "Dark Orange": ("orange", ("rust", "dark orange", "terracotta")),
    "Other Orange": ("orange", ()),
    "Light Yellow": ("yellow", ("light yellow", "pale yellow")),
    "Dark Yellow": ("yellow", ("mustard", "dark yellow")),
    "Other Yellow": ("yellow", ()),
    "Bronze/Copper": ("metallic", ("bronze", "copper")),
    "Transparent": ("transparent", ("clear", "transparent")),
}
_HM_COLOUR_FAMILY = {canon(k): fam for k, (fam, _) in HM_COLOURS.items() if canon(k) not in COLOUR_FAMILY}
_HM_COLOUR_ACCEPTS = {canon(k): {canon(p) for p in ps} for k, (_, ps) in HM_COLOURS.items()}
_HM_COLOUR_PHRASES = sorted({canon(p) for _, ps in HM_COLOURS.values() for p in ps}, key=lambda x: (-len(x), x))
#: an H&M-only phrase (no Myntra parse) -> its family, for comparing it with a product's colour family
_HM_PHRASE_FAMILY = {canon(p): fam for _, (fam, ps) in HM_COLOURS.items() for p in ps}
#: H&M index groups as shopper words: baby and toddler are kids (H&M "Baby/Children" articles read as Kids)
HM_GENDER_WORDS: dict[str, str] = {"baby": "kids", "babies": "kids", "toddler": "kids"}
HM_USAGE_WORDS: dict[str, str] = {"workout": "sports", "yoga": "sports"}

# ----------------------------------------------------------------------------------- shopper words
# Additive: the words shoppers type that neither catalog's names carry (docs/shopper-queries.md): slang, British
# and American names of one garment, beauty and personal-care words, occasions and activities, the people a gift
# is for, and brands. Found missing by the hand-written held-out queries (demo/data/shopper_queries.tsv).

#: shopper phrase -> canonical type
SHOPPER_TYPE_PHRASES: dict[str, str] = {
    "vest top": "top",
    "tank top": "top",
    "leather shoes": "formal shoe",
    "gym bag": "duffel bag",
    "three fourths": "capris",
    "raincoat": "rain jacket",
    "necklace": "necklace and chain",
    "chain": "necklace and chain",
    "kicks": "casual shoe",
    "tennis shoes": "sports shoe",
    "basketball shoes": "sports shoe",
    "hiking shoes": "sports shoe",
    "trekking shoes": "sports shoe",
    "trackies": "track pant",
    "trackie bottoms": "track pant",
    "sweats": "track pant",
    "sweatpants": "track pant",
    "tracksuit": "tracksuit",
    "undies": "briefs",
    "panties": "briefs",
    "vest": "innerwear vest",
    "undershirt": "innerwear vest",
    "banian": "innerwear vest",
    "nightie": "nightdress",
    "jammies": "night suit",
    "pyjama set": "night suit",
    "pajama set": "night suit",
    "pyjamas": "lounge pant",
    "pajamas": "lounge pant",
    "jorts": "shorts",
    "parka": "jacket",
    "puffer": "jacket",
    "windbreaker": "jacket",
    "anorak": "jacket",
    "slides": "flip flop",
    "braces": "suspender",
    "suspenders": "suspender",
    "bum bag": "waist pouch",
    "fanny pack": "waist pouch",
    "timepiece": "watch",
    "aviators": "sunglasses",
    "cufflinks": "cufflink",
    "lippie": "lipstick",
    "lip stick": "lipstick",
    "lip balm": "lip care",
    "nail varnish": "nail polish",
    "nail paint": "nail polish",
    "eyeliner": "kajal and eyeliner",
    "eye liner": "kajal and eyeliner",
    "kohl": "kajal and eyeliner",
    "kajal": "kajal and eyeliner",
    "foundation": "foundation and primer",
    "primer": "foundation and primer",
    "blush": "highlighter and blush",
    "blusher": "highlighter and blush",
    "highlighter": "highlighter and blush",
    "moisturiser": "face moisturiser",
    "moisturizer": "face moisturiser",
    "face cream": "face moisturiser",
    "sunscreen": "sunscreen",
    "sunblock": "sunscreen",
    "sun cream": "sunscreen",
    "face wash": "face wash and cleanser",
    "cleanser": "face wash and cleanser",
    "body lotion": "body lotion",
    "body spray": "deodorant",
    "antiperspirant": "deodorant",
    "roll on": "deodorant",
    "aftershave": "perfume and body mist",
    "eau de toilette": "perfume and body mist",
    "scent": "perfume and body mist",
}
for _t, _g in {
    "tracksuit": "topwear",
    "lounge short": "nightwear",
    "lounge pant": "nightwear",
    "sunscreen": "skincare",
    "face moisturiser": "skincare",
    "face wash and cleanser": "skincare",
    "body lotion": "skincare",
    "mask and peel": "skincare",
    "toner": "skincare",
    "eye cream": "skincare",
    "lip care": "beauty",
    "lip plumper": "beauty",
}.items():
    TYPE_GROUP.setdefault(canon(_t), _g)
#: the people a gift is for, and other everyday gender words -> gender
SHOPPER_GENDER_WORDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "dad",
            "father",
            "husband",
            "hubby",
            "boyfriend",
            "brother",
            "grandpa",
            "grandfather",
            "groom",
            "uncle",
            "lad",
            "gent",
            "his",
        ),
        "men",
    ),
    **dict.fromkeys(
        ("mum", "mom", "mother", "wife", "girlfriend", "sister", "grandma", "grandmother", "bride", "aunt", "hers"),
        "women",
    ),
    "son": "boys",
    "daughter": "girls",
}
#: occasions and activities -> usage (single words; SHOPPER_USAGE_PHRASES for phrases)
SHOPPER_USAGE_WORDS: dict[str, str] = {
    **dict.fromkeys(("wedding", "diwali", "eid", "puja", "sangeet", "mehendi", "navratri", "haldi"), "ethnic"),
    **dict.fromkeys(("interview", "meeting", "boardroom", "workwear"), "formal"),
    **dict.fromkeys(("prom", "cocktail", "clubbing", "club"), "party"),
    **dict.fromkeys(
        (
            "jogging",
            "jog",
            "marathon",
            "hiking",
            "hike",
            "trekking",
            "trek",
            "cycling",
            "tennis",
            "football",
            "basketball",
            "cricket",
            "badminton",
            "athletic",
        ),
        "sports",
    ),
    **dict.fromkeys(("holiday", "vacation", "trip", "travelling", "traveling"), "travel"),
}
SHOPPER_USAGE_PHRASES: dict[str, str] = {"date night": "party", "night out": "party", "work out": "sports"}
#: occasion words that name a season
SHOPPER_SEASON_WORDS: dict[str, str] = {"beach": "summer", "christmas": "winter"}
#: brand -> the ways shoppers write it; a query naming a brand is exact only for that brand's products (read from
#: the product title, where both catalogs put the brand). Only names that are not everyday words are listed.
BRANDS: dict[str, tuple[str, ...]] = {
    "nike": ("nike",),
    "adidas": ("adidas",),
    "puma": ("puma",),
    "reebok": ("reebok",),
    "fila": ("fila",),
    "skechers": ("skechers", "sketchers"),
    "converse": ("converse",),
    "crocs": ("crocs",),
    "clarks": ("clarks",),
    "woodland": ("woodland",),
    "red tape": ("red tape",),
    "levis": ("levis", "levi's", "levi"),
    "lee": ("lee",),
    "lee cooper": ("lee cooper",),
    "wrangler": ("wrangler",),
    "spykar": ("spykar",),
    "flying machine": ("flying machine",),
    "titan": ("titan",),
    "fastrack": ("fastrack", "fasttrack"),
    "fossil": ("fossil",),
    "timex": ("timex",),
    "casio": ("casio",),
    "ray-ban": ("ray-ban", "ray ban", "rayban"),
    "wildcraft": ("wildcraft",),
    "baggit": ("baggit",),
    "jockey": ("jockey",),
    "hanes": ("hanes",),
    "enamor": ("enamor",),
    "united colors of benetton": ("united colors of benetton", "benetton", "ucb"),
    "u.s. polo assn.": ("u.s. polo assn.", "us polo assn", "us polo", "u.s. polo", "uspa"),
    "tommy hilfiger": ("tommy hilfiger", "tommy"),
    "calvin klein": ("calvin klein",),
    "allen solly": ("allen solly",),
    "van heusen": ("van heusen",),
    "peter england": ("peter england",),
    "louis philippe": ("louis philippe",),
    "park avenue": ("park avenue",),
    "fabindia": ("fabindia", "fab india"),
    "biba": ("biba",),
    "lakme": ("lakme",),
    "revlon": ("revlon",),
    "colorbar": ("colorbar",),
    "lotus herbals": ("lotus herbals", "lotus"),
    "davidoff": ("davidoff",),
    "dkny": ("dkny",),
    "hugo boss": ("hugo boss",),
    "playboy": ("playboy",),
    "carlton london": ("carlton london",),
    "timberland": ("timberland",),
    "jealous 21": ("jealous 21",),
    "forever new": ("forever new",),
    "french connection": ("french connection", "fcuk"),
    "david beckham": ("david beckham", "beckham"),
}
#: skin types in beauty queries, read before colours ("skin" is a catalog colour)
_SKIN_PHRASES = tuple(
    f"{w} skin" for w in ("dry", "oily", "dusky", "fair", "dark", "sensitive", "normal", "combination", "all", "wheatish")
)
_BRAND_PHRASES = sorted(
    {(canon(a), b) for b, aliases in BRANDS.items() for a in (*aliases, b)}, key=lambda x: (-len(x[0]), x[0], x[1])
)

_PRODUCT_USAGES = {"casual", "formal", "sport", "ethnic", "party", "travel", "smart casual", "home", "na"}
_PRODUCT_GENDERS = {"men", "women", "boy", "girl", "unisex", "kid"}

# phrase -> canonical, longest phrases first for greedy matching; catalog type names match themselves
_BASE_TYPE_PAIRS = {(canon(p), canon(t)) for t, ps in TYPE_SYNONYMS.items() for p in (*ps, t)} | {(t, t) for t in TYPE_GROUP}
# ties (one phrase, several types: "tights" is a leggings word and a type of its own) go to the type that is the
# phrase itself, then alphabetically, so a parse never depends on set order (PYTHONHASHSEED)
_TYPE_PHRASES = sorted(
    _BASE_TYPE_PAIRS
    | {(canon(p), canon(t)) for p, t in HM_TYPE_PHRASES.items()}
    | {(canon(p), canon(t)) for p, t in SHOPPER_TYPE_PHRASES.items()},
    key=lambda x: (-len(x[0]), x[0], x[1] != x[0], x[1]),
)
#: ... -> every canonical type a query naming that type may parse to ("tights" is a leggings phrase and a type)
_HM_PRODUCT_ACCEPTS: dict[str, set[str]] = {
    k: {v} | {t for p, t in _BASE_TYPE_PAIRS if p == v} for k, v in _HM_PRODUCT_TYPE.items()
}
_GENDER = {canon(k): v for k, v in GENDER_WORDS.items()} | {canon(k): v for k, v in HM_GENDER_WORDS.items()}
_QUERY_GENDER = _GENDER | {canon(k): v for k, v in SHOPPER_GENDER_WORDS.items()}
_USAGE = (
    {canon(k): v for k, v in USAGE_WORDS.items()}
    | {"sport": "sports", "home": "home", "na": "na"}
    | {canon(k): v for k, v in HM_USAGE_WORDS.items()}
)
_QUERY_USAGE = _USAGE | {canon(k): v for k, v in SHOPPER_USAGE_WORDS.items()}
_USAGE_PHRASES = {canon(k): v for k, v in SHOPPER_USAGE_PHRASES.items()} | {"smart casual": "smart casual"}
_QUERY_SEASON = _SEASON_WORDS | {canon(k): v for k, v in SHOPPER_SEASON_WORDS.items()}
_COLOUR_PHRASES = sorted(
    [(canon(p), c, "exact") for c, ps in COLOUR_EXACT.items() for p in ps]
    + [(canon(p), c, "synonym") for p, c in COLOUR_SYNONYM.items()]
    + [(c, c, "exact") for c in COLOUR_FAMILY if c not in {canon(x) for x in COLOUR_EXACT}],
    key=lambda x: (-len(x[0]), x[0], x[1], x[2]),
)


def _find(phrase: str, text: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text) is not None


# --------------------------------------------------------------------------------------- parsed facts


@dataclass(frozen=True)
class QueryIntent:
    """What a shopper's query asks for (canonical values; None when the query does not say)."""

    text: str
    type: str | None = None
    colour: str | None = None
    colour_is_synonym: bool = False
    gender: str | None = None
    usage: str | None = None
    season: str | None = None
    colour_phrase: str | None = None  # the H&M colour phrase the query uses ("light pink"), HM_COLOURS
    brand: str | None = None  # BRANDS key
    type_phrase: str | None = None  # the phrase the type was read from ("rucksack": a backpack word and a type)


@dataclass(frozen=True)
class ProductFacts:
    """Attributes read out of a product text (canonical values, "" when absent)."""

    title: str
    type: str = ""
    colour: str = ""
    gender: str = ""
    usage: str = ""
    season: str = ""
    extra: tuple[str, ...] = field(default_factory=tuple)
    brand: str = ""  # BRANDS key named in the title, "" when none is


def parse_query(query: str) -> QueryIntent:
    """Read type, colour, gender, usage and season out of a shopper query (greedy longest phrase)."""
    text = canon(query)
    rest = f" {text} "
    brand = _find_brand(rest)
    if brand:  # "us polo shirt": the brand's words are not a type ("polo") or a colour
        for phrase, b in _BRAND_PHRASES:
            if b == brand and _find(phrase, rest):
                rest = re.sub(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", " ", rest, count=1)
                break
    for phrase in _SKIN_PHRASES:  # "foundation for oily skin": skin there is no colour
        rest = re.sub(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", " ", rest)
    qtype = type_phrase = None
    for phrase, t in _TYPE_PHRASES:
        if _find(phrase, rest):
            qtype, type_phrase = t, phrase
            rest = re.sub(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", " ", rest, count=1)
            break
    hm_colour = next((ph for ph in _HM_COLOUR_PHRASES if _find(ph, rest)), None)
    colour, syn = None, False
    for phrase, c, kind in _COLOUR_PHRASES:
        if _find(phrase, rest):
            colour, syn = c, kind == "synonym"
            rest = rest.replace(phrase, " ", 1)
            break
    for w in (hm_colour or "").split():  # "baby pink": baby is the colour here, not who it is for
        rest = re.sub(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", " ", rest, count=1)
    words = rest.split()
    gender = next((_QUERY_GENDER[w] for w in words if w in _QUERY_GENDER), None)
    usage = next((u for ph, u in _USAGE_PHRASES.items() if _find(ph, rest)), None) or next(
        (_QUERY_USAGE[w] for w in words if w in _QUERY_USAGE), None
    )
    season = next((_QUERY_SEASON[w] for w in words if w in _QUERY_SEASON), None)
    return QueryIntent(query, qtype, colour, syn, gender, usage, season, hm_colour, brand, type_phrase)


def _find_brand(text: str) -> str | None:
    """The BRANDS key whose longest spelling occurs in canonicalised `text` ("lee cooper" before "lee")."""
    return next((b for phrase, b in _BRAND_PHRASES if _find(phrase, text)), None)


def parse_product_text(text: str) -> ProductFacts:
    """Split a `rerank_text` ("title | type | colour | gender | usage | season | brand | description") into facts.

    Fields are recognised by vocabulary (gender, season, usage, colour words) because empty fields are left
    out of the text; the first unrecognised field after the title is the product type.
    """
    parts = [p.strip() for p in text.split(" | ")]
    title, fields = parts[0], parts[1:]
    out = {"type": "", "colour": "", "gender": "", "usage": "", "season": ""}
    extra = []
    for f in fields:
        c = canon(f)
        if not out["gender"] and c in _PRODUCT_GENDERS:
            out["gender"] = _GENDER.get(c, c)
        elif not out["season"] and c in SEASONS:
            out["season"] = c
        elif not out["usage"] and c in _PRODUCT_USAGES:
            out["usage"] = _USAGE.get(c, c)
        elif not out["colour"] and (c in COLOUR_FAMILY or c in _HM_COLOUR_FAMILY):
            out["colour"] = c
        elif not out["type"] and not out["colour"] and not out["gender"]:
            out["type"] = c
        else:
            extra.append(f)
    if not out["type"]:  # fall back to a type word in the title
        t = canon(title)
        out["type"] = next((ty for phrase, ty in _TYPE_PHRASES if _find(phrase, f" {t} ")), "")
    return ProductFacts(title=title, extra=tuple(extra), brand=_find_brand(f" {canon(title)} ") or "", **out)


def _type_matches(want: str, product_type: str) -> bool:
    if not product_type:
        return False
    if want == product_type:
        return True
    # product type phrased differently by another catalog (e.g. H&M "T-shirt" -> "t shirt", "Vest top" -> top)
    return any(t == want and p == product_type for p, t in _TYPE_PHRASES) or want in _HM_PRODUCT_ACCEPTS.get(product_type, ())


def _group(t: str) -> str:
    t = t if t in TYPE_GROUP else _HM_PRODUCT_TYPE.get(t, t)
    return TYPE_GROUP.get(t) or TYPE_GROUP.get(next((ty for p, ty in _TYPE_PHRASES if p == t), t), t)


def _hm_colour_notes(q: QueryIntent, p_colour: str) -> tuple[list[str], list[str]]:
    """(minor, major) notes for an H&M-only product colour: a phrase HM_COLOURS lists for it is exact, a colour
    of the same family is minor, another family is major."""
    if q.colour_phrase in _HM_COLOUR_ACCEPTS.get(p_colour, ()):
        return [], []
    want_fam = COLOUR_FAMILY.get(q.colour) if q.colour else _HM_PHRASE_FAMILY.get(q.colour_phrase or "")
    if want_fam and want_fam == _HM_COLOUR_FAMILY[p_colour]:
        return [f"colour {p_colour} close to {q.colour or q.colour_phrase}"], []
    return [], [f"colour {p_colour} not {q.colour or q.colour_phrase}"]


def _denim_trousers(q_type: str | None, p: ProductFacts) -> bool:
    """H&M files jeans under "Trousers": jeans asked, trousers whose description says denim."""
    return q_type == "jean" and p.type == "trouser" and any("denim" in e.lower() for e in p.extra if len(e.split()) >= 4)


def grade(query: str, product_text: str) -> tuple[int, str]:
    """Grade (0-3) and a short reason for one (query, product text) pair. Deterministic."""
    q = parse_query(query)
    p = parse_product_text(product_text)
    minor: list[str] = []
    major: list[str] = []
    if p.colour in _HM_COLOUR_FAMILY and (q.colour or q.colour_phrase):
        minor, major = _hm_colour_notes(q, p.colour)
    elif q.colour:
        if not p.colour or p.colour == "na":
            minor.append("colour unknown")
        elif p.colour == q.colour:
            if q.colour_is_synonym:
                minor.append(f"colour {p.colour} is a synonym")
        elif COLOUR_FAMILY.get(p.colour) and COLOUR_FAMILY.get(p.colour) == COLOUR_FAMILY.get(q.colour):
            minor.append(f"colour {p.colour} close to {q.colour}")
        else:
            major.append(f"colour {p.colour or '?'} not {q.colour}")
    if q.gender:
        pg = p.gender
        ok = (
            pg == q.gender
            or (pg == "unisex" and q.gender in ("men", "women"))
            or (q.gender == "kids" and pg in ("boys", "girls"))
            or (q.gender == "unisex")
            or (pg == "kids" and q.gender in ("boys", "girls"))  # H&M "Baby/Children" articles read as Kids
        )
        if not pg:
            minor.append("gender unknown")
        elif not ok:
            major.append(f"for {pg}, not {q.gender}")
    if q.usage and p.usage and p.usage != q.usage:
        minor.append(f"{p.usage} not {q.usage}")
    if q.season and p.season and p.season != q.season:
        minor.append(f"{p.season} not {q.season}")
    if q.brand and p.brand != q.brand:
        minor.append(f"brand {p.brand or 'another'} not {q.brand}")

    if q.type is None:
        if major:
            return 0, "no product type in query; " + "; ".join(major)
        if minor:
            return 1, "no product type in query; " + "; ".join(minor)
        return 2, "no product type in query; attributes match"
    if not (_type_matches(q.type, p.type) or _denim_trousers(q.type, p) or (q.type_phrase, p.type) in _BASE_TYPE_PAIRS):
        if p.type and _group(p.type) == _group(q.type):
            return 1, f"same category ({_group(q.type)}), {p.type} not {q.type}"
        return 0, f"{p.type or 'unknown type'} is not {q.type}"
    if major:
        return 1, "right type; " + "; ".join(major)
    if minor:
        return 2, "right type; " + "; ".join(minor)
    return 3, "type and all named attributes match"
