"""Captions of built-in-world scenes, written from the scene's structured spec.

Every caption names every thing group as ``<count> [<size>] <colour> <shape>[s]`` (count as a
word: ``a``/``an``/``one``, ``two``, ``three``, ``four``; size ``small``/``large`` only when the
whole group shares it) and names every stuff category by its category name. In two-object scenes
three captions also state the spatial relation with one of the phrases ``left of``, ``right of``,
``above``, ``below`` (``a red circle to the left of a blue star``, ``two red circles, one above
the other``); these four phrases never describe the stuff, so a parser finds relations by them. Each template writes a different fixed wording, so the
captions of one image are always distinct.
"""

from __future__ import annotations

import numpy as np

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Stuff wordings: "on" phrases for the lower (or only) region, "under" phrases for the upper one,
# and noun phrases for sentences like "the sky over the grass".
_ON = {
    "grass": ("on the grass", "on green grass"),
    "water": ("on the water", "on blue water"),
    "sand": ("on the sand", "on yellow sand"),
    "floor": ("on the floor", "on a wooden floor"),
    "wall": ("in front of a wall", "in front of a grey brick wall"),
}
_UNDER = {
    "sky": ("under a blue sky", "under the sky", "beneath a clear sky"),
    "wall": ("in front of a grey wall", "against a brick wall"),
}
_NOUN = {
    "sky": ("the sky", "a blue sky"),
    "wall": ("a grey wall", "a brick wall"),
    "grass": ("the grass", "green grass"),
    "water": ("the water", "blue water"),
    "sand": ("the sand", "yellow sand"),
    "floor": ("the floor", "a wooden floor"),
}
_RELATION_WORDS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


# How captions word each relation (``a red circle to the left of a blue star``).
RELATION_PHRASES = tuple(_RELATION_WORDS.values())
# Words the caption templates below write around the tables' phrases.
TEMPLATE_WORDS = (
    "a",
    "an",
    "one",
    "and",
    "the",
    "other",
    "shape",
    "shapes",
    "picture",
    "of",
    "background",
    "is",
    "with",
    "over",
)


def phrase_words() -> set[str]:
    """Every word of the fixed stuff and relation phrases and of the caption templates (not the
    shape, colour, size and count words, which come from the world's tables)."""
    phrases = [*_RELATION_WORDS.values()]
    for table in (_ON, _UNDER, _NOUN):
        phrases += [p for options in table.values() for p in options]
    return {w for p in phrases for w in p.split()} | set(TEMPLATE_WORDS)


def plural(shape: str) -> str:
    """English plural of a shape name (``cross`` -> ``crosses``)."""
    return shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def group_phrase(count: int, color: str, shape: str, size: str | None = None, one: bool = False) -> str:
    """``two large red circles``, ``an orange star``; ``one`` instead of ``a`` when asked."""
    words = ([size] if size else []) + [color, shape if count == 1 else plural(shape)]
    if count == 1:
        head = "one" if one else _article(words[0])
    else:
        head = NUMBER_WORDS[count]
    return " ".join([head] + words)


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _groups(spec: dict) -> list[tuple[int, str, str, str | None]]:
    """``(count, colour, shape, shared size or None)`` per (colour, shape) group of the spec."""
    groups = []
    for entry in spec["counts"]:
        sizes = {
            t["size"]
            for t in spec["things"]
            if (t["color"], t["category"]) == (entry["color"], entry["category"])
        }
        groups.append(
            (entry["count"], entry["color"], entry["category"], sizes.pop() if len(sizes) == 1 else None)
        )
    return groups


def _things_text(groups: list, rng: np.random.Generator, sizes: bool = False, one: bool = False) -> str:
    order = rng.permutation(len(groups))
    return _join(
        [group_phrase(c, col, s, sz if sizes else None, one) for c, col, s, sz in (groups[i] for i in order)]
    )


def _place_phrase(stuff: list[dict], rng: np.random.Generator) -> str:
    """``on the grass under a blue sky`` / ``on the sand``."""
    if len(stuff) == 1:
        return _pick(rng, _ON[stuff[0]["category"]])
    return f"{_pick(rng, _ON[stuff[1]['category']])} {_pick(rng, _UNDER[stuff[0]['category']])}"


def _stuff_sentence(stuff: list[dict], rng: np.random.Generator) -> str:
    """``the sky over the grass`` / ``the background is a grey wall``."""
    if len(stuff) == 1:
        return f"the background is {_pick(rng, _NOUN[stuff[0]['category']])}"
    return f"{_pick(rng, _NOUN[stuff[0]['category']])} over {_pick(rng, _NOUN[stuff[1]['category']])}"


def _relation_text(spec: dict, rng: np.random.Generator, sizes: bool = False) -> str:
    """``a red circle to the left of a blue star``, randomly told from either side; for two
    equal things ``two red circles, one above the other``."""
    rel = spec["relations"][0]
    subject, obj = spec["things"][rel["subject"]], spec["things"][rel["object"]]
    relation = rel["relation"]
    if (subject["color"], subject["category"]) == (obj["color"], obj["category"]):
        size = subject["size"] if sizes and subject["size"] == obj["size"] else None
        both = group_phrase(2, subject["color"], subject["category"], size)
        return f"{both}, one {_RELATION_WORDS[relation]} the other"
    if rng.random() < 0.5:
        subject, obj, relation = obj, subject, INVERSE_RELATION[relation]
    first = group_phrase(1, subject["color"], subject["category"], subject["size"] if sizes else None)
    second = group_phrase(1, obj["color"], obj["category"], obj["size"] if sizes else None)
    return f"{first} {_RELATION_WORDS[relation]} {second}"


def captions_for(spec: dict, rng: np.random.Generator) -> list[str]:
    """Five distinct captions for a scene spec (keys ``things``, ``counts``, ``relations``,
    ``stuff`` as documented in :mod:`pandiff.world.generator`). Deterministic for a given ``rng``."""
    groups = _groups(spec)
    stuff = spec["stuff"]
    total = sum(g[0] for g in groups)
    shapes_word = "one shape" if total == 1 else f"{NUMBER_WORDS[total]} shapes"
    if spec["relations"]:
        things_a = _relation_text(spec, rng)
        things_b = _relation_text(spec, rng, sizes=True)
        things_c = _relation_text(spec, rng)
    else:
        things_a = _things_text(groups, rng)
        things_b = _things_text(groups, rng, sizes=True)
        things_c = _things_text(groups, rng, one=True)
    # "two red circles, one above the other" takes a comma before the place phrase.
    pause = "," if things_a.endswith("the other") else ""
    return [
        _sentence(f"{things_a}{pause} {_place_phrase(stuff, rng)}"),
        _sentence(f"{shapes_word}: {things_b}, {_place_phrase(stuff, rng)}"),
        _sentence(f"{_stuff_sentence(stuff, rng)}, with {things_c}"),
        _sentence(f"a picture of {_things_text(groups, rng)} {_place_phrase(stuff, rng)}"),
        _sentence(f"{_place_phrase(stuff, rng)}: {_things_text(groups, rng, sizes=True)}"),
    ]
