"""Self-checked co-generation (beyond the paper): the model checks its own samples and draws again
the ones that fail.

A PDM sample carries its own account of what it shows: the panoptic map. Two checks need no other
network:

* **map vs prompt**: the prompt is read into what it names (:func:`parse_prompt`: thing counts per
  category, stuff, one spatial relation); a co-generated map that does not show it is drawn again
  with fresh noise. The relation is read off the map's instance centroids
  (:func:`pandiff.world.generator.spatial_relation`: the axis where they differ most, the rule the
  built-in world's captions are written by).
* **image vs map**: the same model segments its own picture in one forward (clean image, map of
  pure noise: the map's posterior mean, :meth:`PanopticDiffusionPipeline.segment_once`); a picture
  whose thing counts differ from its map's is drawn again for that map.

:func:`best_of` keeps, per sample, the draw with the fewest failures (the first one on ties), so a
sample is never worse by its own checks than the plain draw.

**Best of K** (:func:`ranked_sample`, ``best_of``): instead of stopping at the first draw that
passes, draw K whole samples (co-generation and redraw) and keep the one the model itself ranks
best: fewest map failures first, then the sum of two within-row ranks that measure how well the
picture shows its map: :func:`instance_match` of the one-forward segmentation against the map
(every instance's best same-category IoU), and :func:`map_consistency`, the error of the model's
clean-map prediction from the map noised to mid-range timesteps *given the clean picture* (the
denoising error as a likelihood proxy, as diffusion classifiers use it). On built-in-world samples
both pick the judge-right draw of a prompt more often than the count check does; ranks, not raw
values, so no threshold is tied to one model.

**Things apart** (``avoid_touching``): a co-generated map in which two things touch or overlap
(:func:`pandiff.world.checks.touching_pairs` over any two thing instances) also counts as
failing, ranked below every failure against the prompt (:func:`map_score`), so both the self
check and best of K draw such a map again and keep one whose things stand apart when a draw has
it. Touching shapes stay two in a picture only through the outline between them, and a shape
half behind another is the first to vanish: on the built-in world, the 332 of 400 plain draws
of the bundled model whose maps were right showed the prompt on the picture 36% of the time where
two things of one category touched (100 draws), 56% where only things of different categories did
(54), and 98% where every thing stood apart (178). A prompt that names no layout is as well
served by one the picture can show. It narrows the layouts drawn (on COCO, where things touch in
most scenes, it would mostly spend draws), so it is a folder setting and a switch, off unless a
folder sets it.

**Things bitten apart** (``separate_touching``, a gap in pixels): with the redraw, the things
that still touch in the kept co-generated map are bitten apart before the picture is drawn for it
(:func:`pandiff.world.checks.separate_touching`: the larger of two touching things gives up its
pixels within the gap of the smaller, the background's stuff fills them), when that leaves the map
no worse against the prompt (:func:`bite_apart`). The self check cannot always find a draw whose
things stand apart; the redraw then draws each thing apart, with a strip of background between.
On the built-in world (200 val prompts, one generator per prompt) image-judged adherence rose
from 76.5% to 81.5% (11 scenes won, 1 lost, McNemar p = 0.006); a bitten shape keeps a notch
where the other one was.

**Colour splits** (``colour_split``, a share): the built-in world paints each thing in one flat
colour. The check of a picture against its map then also counts the things of the map that the
picture paints in two colours (:func:`pandiff.world.checks.colour_split_things`: more than that
share of the thing's interior further than 60 RGB from its median colour), so such a picture is
drawn again for the same map. Where the map was right by count and the world's judge still counted
more things on the picture, about half the pictures showed one thing in two colours (a red square
with a white corner; a circle half pink, half blue). On the built-in world (first 200 val prompts,
one generator per prompt) image-judged adherence rose from 79.5% to 84.0% (seed 1: 9 scenes won,
0 lost) and from 81.5% to 84.5% (seed 0: 6 won, 0 lost); on all 500 val prompts (seed 1) from
81.4% to 85.0% (18 won, 0 lost). A COCO object is not one colour, so it is a folder setting, off
unless a folder sets it (the bundled folder sets 0.15).

**Misshapen things** (``misshapen``, a ratio): a co-generated map can be right by count and still
hold a thing no single world shape looks like: two triangles fused into one instance with two
peaks, a star tangled into a circle, a cross as round as a disc. The picture drawn for it then
shows two things, a blob or another shape. With ``misshapen`` > 0 such a map fails its check
(:func:`pandiff.world.checks.misshapen_things`: a thing whose solidity, its area over its convex
hull's, lies below that ratio times the least or above the most over that ratio of single world
shapes of its category), weighed by :func:`weigh` below every failure against the prompt and above
touching things (:data:`SHAPE_WEIGHT`). On the built-in world (all 500 val prompts, one generator
per prompt, seed 1) image-judged adherence rose from 83.6% to 87.2% at ratio 0.95 (24 scenes won, 6
lost; McNemar p = 0.001). The ranges come from the world's own shapes, so it is a folder setting,
off unless a folder sets it (the bundled folder sets 0.95).

**Whole samples again** (``restarts``) **and picture match** (``picture_match``, an IoU): the
self check draws the map again until it passes, then the picture for the kept map; a crowded map
can pass and still be one that no picture drawn for it shows (a triangle half behind another), so
every picture drawn for it fails. With ``restarts`` > 0 a row whose kept sample still fails
(against the prompt, or its picture against its map) is drawn again whole, map stage and picture
stage with their tries, keeping the whole sample that fails least. With ``picture_match`` > 0 the
picture check also fails a picture whose one-forward segmentation matches some thing of its map
(or the map one of it) below that IoU (:func:`instance_match`): a count check alone passes a
picture that draws the right number of shapes in the wrong places. On the shipped samples of all
500 built-in-world val prompts (seed 1), the count check flagged 24 of the 63 pictures the world's
judge counted otherwise (and 31 of the 437 it counted right); a match below 0.5 flagged 39 (and
60). Together (0.5, 2 restarts) on those 500 prompts image-judged adherence rose from 87.2% to
89.6% (19 scenes won, 7 lost, McNemar p = 0.03; relations 83.5 -> 90.9%, 9 / 0); either alone
gave less (first 200 prompts, seed 0: 85.5 -> 86.0% and 87.0%; both 89.5%). They are folder
settings, off unless a folder sets them (the bundled folder sets 0.5 and 2).

**Snapped shapes** (``snap_shapes``): with the redraw, each thing of the kept co-generated map is
redrawn as the world shape of its category that fits it best before the picture is drawn for it
(:func:`pandiff.world.checks.snap_things`), where that leaves the map no worse against its prompt
(:func:`bite_apart`, before the bite). The maps that still failed on the picture were mostly right
by count and held things no world shape looks like (a cross with a stub, a triangle with two
peaks); the picture follows such a map, and drawing the map again rarely gives a clean one for a
crowded prompt. On all 500 built-in-world val prompts (seed 1) image-judged adherence rose from
89.6% to 91.0% (25 scenes won, 18 lost; seed 0, first 200: 89.5 -> 90.5%, 10 / 8). It redraws
the built-in world's shapes, so it is a folder setting, off unless a folder sets it (the bundled
folder sets it).

**Things spread apart** (``spread_things``): with the redraw, things of the kept co-generated map
whose world shapes come within that many pixels of another are moved apart, each drawn whole as the
shape that fits it best, to the nearest free places (:func:`pandiff.world.checks.spread_things`),
where that leaves the map no worse against its prompt (:func:`bite_apart`, after the snap and
before the bite). The world's judge counts every val scene whose things stand apart right and 82%
of the 4+ thing scenes where some touch; the picture follows its map. On all 500 built-in-world val
prompts (seed 1), with ``avoid_touching`` off (a touching map is no longer drawn again: it is
spread), image-judged adherence rose from 91.0% to 95.0% (31 scenes won, 11 lost, McNemar p =
0.003; 4+ things 63.5 -> 78.4%; seed 0, first 200: 90.5 -> 94.5%, 12 / 4). It moves the built-in
world's shapes, so it is a folder setting, off unless a folder sets it (the bundled folder sets 2).

Prompts are read with the model's
category names, simple plurals and the count words ``a``/``an``/``one`` ... ``ten``; a word
outside them is ignored, so a prompt the reader cannot parse is simply not checked against.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pandiff.data.categories import CategoryTable
from pandiff.data.panoptic_map import PanopticMap
from pandiff.world import checks as wc
from pandiff.world.generator import is_world_table, spatial_relation

NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5}
NUMBER_WORDS |= {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
# Relation phrases, longest first; a relation holds only between two named things, so "under a
# blue sky" (stuff after it) is not one.
RELATION_PHRASES = (
    ("to the left of", "left of"),
    ("to the right of", "right of"),
    ("on the left of", "left of"),
    ("on the right of", "right of"),
    ("on top of", "above"),
    ("left of", "left of"),
    ("right of", "right of"),
    ("above", "above"),
    ("below", "below"),
    ("beneath", "below"),
    ("under", "below"),
)
# Words that end the phrase a count word belongs to: a count is looked for only back to these.
_CLAUSE_BREAKS = {",", ".", ";", ":", "and", "with", "of", "the", "other"}
_IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt names, in the model's category names.

    ``counts``: thing category -> the count named (None: a plural without a number, "at least
    two"); ``stuff``: stuff categories named; ``relation``: ``(subject, relation, object)``
    categories with ``relation`` one of ``left of``/``right of``/``above``/``below``, or None.
    """

    counts: dict[str, int | None]
    stuff: frozenset[str]
    relation: tuple[str, str, str] | None = None

    @property
    def names_anything(self) -> bool:
        return bool(self.counts or self.stuff)


def _plural(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _words_of(name: str) -> tuple[str, ...]:
    """``"wall-other-merged"`` -> ``("wall",)``, ``"traffic light"`` -> ``("traffic", "light")``."""
    base = re.sub(r"-(other|merged|stuff)\b", "", name.lower())
    return tuple(re.findall(r"[a-z]+", base))


def _vocabulary(table: CategoryTable) -> dict[tuple[str, ...], tuple[str, bool, bool]]:
    """Token sequence -> ``(category name, isthing, plural)`` for every category, both numbers."""
    vocab: dict[tuple[str, ...], tuple[str, bool, bool]] = {}
    for cat in table.categories:
        words = _words_of(cat.name)
        if not words:
            continue
        vocab.setdefault(words, (cat.name, cat.isthing, False))
        vocab.setdefault((*words[:-1], _plural(words[-1])), (cat.name, cat.isthing, True))
    return vocab


@dataclass(frozen=True)
class _Mention:
    category: str
    isthing: bool
    count: int | None
    start: int
    end: int  # one past the last token


def _mentions(tokens: list[str], table: CategoryTable) -> list[_Mention]:
    vocab = _vocabulary(table)
    longest = max((len(k) for k in vocab), default=0)
    out, i = [], 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            hit = vocab.get(tuple(tokens[i : i + n]))
            if hit is not None:
                name, isthing, plural = hit
                out.append(_Mention(name, isthing, _count_before(tokens, i, plural), i, i + n))
                i += n
                break
        else:
            i += 1
    return out


def _count_before(tokens: list[str], start: int, plural: bool) -> int | None:
    """The count word of the phrase ending at ``start`` (up to 4 words back, e.g. "two large red
    circles"); a singular noun without one counts 1, a plural without one is None."""
    for j in range(start - 1, max(start - 5, -1), -1):
        word = tokens[j]
        if word in NUMBER_WORDS or word.isdigit():
            count = int(word) if word.isdigit() else NUMBER_WORDS[word]
            return count if plural or count == 1 else None
        if word in _CLAUSE_BREAKS or any(word == p.split()[0] for p, _ in RELATION_PHRASES):
            break
    return None if plural else 1


def _tokens(prompt: str) -> list[str]:
    """A prompt's lower-case words, numbers and punctuation marks, as the prompt readers see it."""
    return re.findall(r"[a-z]+|\d+|[,.;:]", prompt.lower())


def parse_prompt(prompt: str, table: CategoryTable) -> PromptSpec:
    """Read what ``prompt`` names with ``table``'s category names (see :class:`PromptSpec`)."""
    tokens = _tokens(prompt)
    mentions = _mentions(tokens, table)
    counts: dict[str, int | None] = {}
    for m in (m for m in mentions if m.isthing):
        if m.category in counts:
            prev = counts[m.category]
            counts[m.category] = None if prev is None or m.count is None else prev + m.count
        else:
            counts[m.category] = m.count
    stuff = frozenset(m.category for m in mentions if not m.isthing)
    return PromptSpec(counts, stuff, _relation(tokens, mentions))


def _relation(tokens: list[str], mentions: list[_Mention]) -> tuple[str, str, str] | None:
    """The first relation phrase standing between two named things (or "..., one above the other"
    after a group of two), as categories."""
    found = _relation_mentions(tokens, mentions)
    return None if found is None else (found[0].category, found[1], found[2].category)


def _relation_mentions(tokens: list[str], mentions: list[_Mention]) -> tuple[_Mention, str, _Mention] | None:
    """:func:`_relation` as ``(subject mention, relation, object mention)``; for "..., one above
    the other" both mentions are the group of two."""
    text = " ".join(tokens)
    for phrase, relation in RELATION_PHRASES:
        for match in re.finditer(rf"\b{phrase}\b", text):
            k = text[: match.start()].count(" ")  # token index of the phrase
            end = k + len(phrase.split())
            before = [m for m in mentions if m.end <= k]
            after = [m for m in mentions if m.start >= end]
            if not before or not before[-1].isthing:
                continue
            subject = before[-1]
            if tokens[end : end + 2] == ["the", "other"]:
                if subject.count == 2:
                    return subject, relation, subject
                continue
            if after and after[0].isthing:
                return subject, relation, after[0]
    return None


@dataclass(frozen=True)
class PromptColours:
    """The colours a built-in-world prompt gives its things: ``wanted`` maps a thing category to
    the colour of each thing of it named with one (a group's colour once per thing: "two red
    circles" -> ``("red", "red")``); ``relation`` is ``((colour, category), relation, (colour,
    category))`` when the prompt relates two things it names by different colour or shape, else
    None."""

    wanted: dict[str, tuple[str, ...]]
    relation: tuple[tuple[str, str], str, tuple[str, str]] | None = None


def prompt_colours(prompt: str, table: CategoryTable) -> PromptColours:
    """Read the colours of the things ``prompt`` names (:class:`PromptColours`): the world's
    captions write a group as ``<count> [<size>] <colour> <shape>``, so a colour is the word
    right before a thing's name, one of the world's thing colours. A thing named without one, or
    by a count that is not a number, gives no wanted colours."""
    from pandiff.world.drawing import THING_COLORS

    tokens = _tokens(prompt)
    mentions = _mentions(tokens, table)

    def colour(m: _Mention) -> str | None:
        word = tokens[m.start - 1] if m.start > 0 else None
        return word if word in THING_COLORS else None

    wanted: dict[str, list[str]] = {}
    for m in mentions:
        if m.isthing and m.count is not None and colour(m) is not None:
            wanted.setdefault(m.category, []).extend([colour(m)] * m.count)
    relation = None
    found = _relation_mentions(tokens, mentions)
    if found is not None and found[0] is not found[2] and None not in (colour(found[0]), colour(found[2])):
        subject, rel, obj = found
        relation = ((colour(subject), subject.category), rel, (colour(obj), obj.category))
        if relation[0] == relation[2]:  # two things alike: which is which does not matter
            relation = None
    return PromptColours({k: tuple(v) for k, v in wanted.items()}, relation)


def colour_failures(picture: np.ndarray, pmap: PanopticMap, colours: PromptColours) -> int:
    """How many of the prompt's colours a picture gets wrong on its map: per thing category, the
    things of the map whose dominant colour on the picture (:func:`pandiff.world.checks.dominant_colour`)
    the prompt's colours of that category leave unmatched (as multisets, counted up to the smaller
    of the two numbers, so a count error is the map check's, not this one's), plus one when the
    prompt relates two things by colour and no thing painted in the subject's colour stands in that
    relation to one painted in the object's (:func:`pandiff.world.checks.relation_holds`: how the
    world's captions and its judge read relations)."""
    if not colours.wanted and colours.relation is None:
        return 0
    instances = wc.thing_instances(pmap)
    painted = [wc.dominant_colour(picture, mask) for _, mask in instances]
    got: dict[str, list[str]] = {}
    for (name, _), colour in zip(instances, painted):
        got.setdefault(name, []).append(colour)
    wrong = 0
    for name, wanted in colours.wanted.items():
        drawn = got.get(name, [])
        wrong += min(len(drawn), len(wanted)) - sum((Counter(drawn) & Counter(wanted)).values())
    if colours.relation is not None:
        (colour_a, name_a), relation, (colour_b, name_b) = colours.relation
        wrong += not wc.relation_holds(instances, painted, (name_a, colour_a), relation, (name_b, colour_b))
    return wrong


def map_failures(pmap: PanopticMap, spec: PromptSpec, exhaustive: bool = True) -> int:
    """How many of the prompt's facts ``pmap`` gets wrong: each named thing category whose
    instance count differs (a plural without a number wants two or more), each named stuff
    missing, the relation (no pair of distinct instances of its categories stands in it), and, when
    ``exhaustive`` (the prompt names every thing, as built-in-world captions do), one for any thing
    category drawn that the prompt does not name. 0: the map shows the prompt, and always 0 for a
    prompt that names nothing the reader knows (nothing to check against)."""
    if not spec.names_anything:
        return 0
    instances = wc.thing_instances(pmap)  # (name, mask), specks left out as in the world's checks
    got = Counter(name for name, _ in instances)
    wrong = sum(got[c] < 2 if n is None else got[c] != n for c, n in spec.counts.items())
    if exhaustive and set(got) - set(spec.counts):
        wrong += 1
    present = {pmap.table[c].name for c, _ in pmap.segments() if not pmap.table[c].isthing}
    wrong += len(spec.stuff - present)
    if spec.relation is not None:
        subject, relation, obj = spec.relation
        centres = [(name, wc.centroid(mask)) for name, mask in instances if name in (subject, obj)]
        holds = any(
            spatial_relation(ca, cb) == relation
            for a, (na, ca) in enumerate(centres)
            for b, (nb, cb) in enumerate(centres)
            if a != b and na == subject and nb == obj
        )
        wrong += not holds
    return int(wrong)


# A failure against the prompt (or the picture's count check) outweighs any number of touching
# pairs: a map that shows the prompt with two shapes touching is kept over one that does not.
PROMPT_WEIGHT = 1000


# A misshapen thing outweighs this many touching pairs: touching things can still be bitten
# apart before the redraw, a thing no single shape looks like is drawn as it is.
SHAPE_WEIGHT = 30


def map_score(
    pmap: PanopticMap,
    spec: PromptSpec,
    exhaustive: bool = True,
    avoid_touching: bool = False,
    misshapen: float = 0.0,
) -> int:
    """The self check's score of a co-generated map, lower is better and 0 passes:
    :func:`map_failures`; with ``avoid_touching`` or ``misshapen`` > 0, those times
    :data:`PROMPT_WEIGHT` plus the map's pairs of touching things of any categories
    (:func:`pandiff.world.checks.touching_pairs`, with ``avoid_touching``) and :data:`SHAPE_WEIGHT`
    times its misshapen things (:func:`pandiff.world.checks.misshapen_things` at that ratio)."""
    return weigh(map_failures(pmap, spec, exhaustive), pmap, avoid_touching, misshapen)


def weigh(failures: int, pmap: PanopticMap, avoid_touching: bool, misshapen: float = 0.0) -> int:
    """``failures`` (against the prompt or the picture) as :func:`map_score` weighs them."""
    if not avoid_touching and misshapen <= 0:
        return int(failures)
    touching = wc.touching_pairs(pmap, same_category=False) if avoid_touching else 0
    shapes = wc.misshapen_things(pmap, misshapen) if misshapen > 0 else 0
    return PROMPT_WEIGHT * int(failures) + min(SHAPE_WEIGHT * shapes + touching, PROMPT_WEIGHT - 1)


def weighed(score: int, avoid_touching: bool, misshapen: float = 0.0) -> int:
    """A :func:`weigh` score on the weighed scale whatever the settings: without ``avoid_touching``
    and ``misshapen`` it is the bare failure count, so it is scaled by :data:`PROMPT_WEIGHT`."""
    return int(score) if avoid_touching or misshapen > 0 else PROMPT_WEIGHT * int(score)


def bite_apart(
    maps: Sequence[PanopticMap],
    specs: Sequence[PromptSpec],
    exhaustive: bool,
    gap: int,
    snap: bool = False,
    spread: int = 0,
) -> list[PanopticMap]:
    """``maps`` made ready for the redraw: with ``snap`` their things redrawn as the world shapes
    that fit them best (:func:`pandiff.world.checks.snap_things`), with ``spread`` > 0 their
    things moved that many pixels apart (:func:`pandiff.world.checks.spread_things`), then their
    still touching things bitten ``gap`` pixels apart (:func:`pandiff.world.checks.separate_touching`);
    each step kept for a map only where it does not add failures against its prompt
    (:func:`map_failures`; a bite may drop a thing it cuts to a speck, a snapped shape may hide
    one, a move may undo the relation). ``gap`` 0, no ``snap`` and ``spread`` 0 return the maps
    as they are."""
    steps = (
        ([wc.snap_things] if snap else [])
        + ([lambda m: wc.spread_things(m, gap=spread)] if spread > 0 else [])
        + ([lambda m: wc.separate_touching(m, gap=gap)] if gap > 0 else [])
    )
    out = []
    for pmap, spec in zip(maps, specs):
        failures = None  # the kept map's, computed once and only when a step changed the map
        for step in steps:
            changed = step(pmap)
            if changed is pmap:
                continue
            if failures is None:
                failures = map_failures(pmap, spec, exhaustive)
            after = map_failures(changed, spec, exhaustive)
            if after <= failures:
                pmap, failures = changed, after
        out.append(pmap)
    return out


def colour_splits(
    pipe, latents, maps: Sequence[PanopticMap], share: float, colours: Sequence[PromptColours] | None = None
) -> list[int]:
    """Per sample, the things of its map that its picture (``latents``) paints in two colours
    (:func:`pandiff.world.checks.colour_split_things`; none when ``share`` is 0), plus, given the
    prompts' ``colours``, the prompt's colours the picture gets wrong on its map
    (:func:`colour_failures`). All 0, nothing decoded, when neither check is on."""
    if share <= 0 and colours is None:
        return [0] * len(maps)
    pictures = pipe.uint8_pictures(latents)
    split = [wc.colour_split_things(p, m, share) if share > 0 else 0 for p, m in zip(pictures, maps)]
    if colours is None:
        return split
    return [s + colour_failures(p, m, c) for s, p, m, c in zip(split, pictures, maps, colours)]


def prompts_colours(pipe, prompts: Sequence[str], colour_check: bool) -> list[PromptColours] | None:
    """The prompts' colours (:func:`prompt_colours`) for the colour check, or None where it does
    not act: off, or a table other than the built-in world's (only its captions name a colour
    right before a thing, and only its things are painted flat in one)."""
    if not colour_check or not is_world_table(pipe.table):
        return None
    return [prompt_colours(p, pipe.table) for p in prompts]


def count_disagreement(drawn: PanopticMap, seen: PanopticMap) -> int:
    """Thing categories whose instance counts differ between two maps of one sample (0: agree)."""
    a, b = wc.instance_counts(drawn), wc.instance_counts(seen)
    return sum(a.get(k, 0) != b.get(k, 0) for k in set(a) | set(b))


def best_of(
    rows: int,
    draw: Callable[[list[int]], list],
    failures: Callable[[list[int], list], Sequence[int]],
    tries: int,
) -> tuple[list, list[int]]:
    """Draw every row, then draw again the rows with failures, up to ``tries`` more times, keeping
    per row the draw with the fewest failures (the earlier on ties).

    Args:
        rows: number of samples.
        draw: ``indices -> one draw per index`` (batched; continues the callers' generators).
        failures: ``(indices, draws) -> failures per draw`` (0: passes).
        tries: extra draws a failing row may get (0: draw once, check nothing).
    Returns:
        ``(draws, failures)``, one per row (failures all 0 when ``tries`` is 0: nothing checked).
    """
    index = list(range(rows))
    best = draw(index)
    if tries <= 0:
        return best, [0] * rows
    score = list(failures(index, best))
    for _ in range(tries):
        redo = [i for i in index if score[i] > 0]
        if not redo:
            break
        fresh = draw(redo)
        for i, item, s in zip(redo, fresh, failures(redo, fresh)):
            if s < score[i]:
                best[i], score[i] = item, s
    return best, score


def _cogenerate(pipe, text, empty, settings, cleanup, generator, progress):
    """One co-generation pass of the pipeline's sampler: ``(latents, maps)``, the maps decoded
    and cleaned by ``cleanup``."""
    out = pipe.sampler().sample(
        text, empty, pipe.latent_shape, pipe.map_shape, **settings, generator=generator, progress=progress
    )  # fmt: skip
    maps = [pipe.bit_codec.decode_map(bits.float(), pipe.table) for bits in out.map_bits]
    return out.latents, ([cleanup(m) for m in maps] if cleanup else maps)


def self_checked_sample(
    pipe, prompts, text, empty, settings, cleanup, redraw, tries, generator, progress, avoid_touching=False,
    separate=0, colour_split=0.0, misshapen=0.0, picture_match=0.0, restarts=0, snap=False, spread=0, cogen=0,
    colour_check=False,
):  # fmt: skip
    """Prompt -> image + map with the self check: the pipeline's co-generation (and redraw), each
    stage drawn again by :func:`best_of` for the rows that fail.

    Co-generation is checked by :func:`map_failures` of its (cleaned) map against the parsed
    prompt (with ``avoid_touching``, also its pairs of touching things, and with ``misshapen`` >
    0 its misshapen things, weighed by :func:`weigh`); with ``redraw`` the picture drawn for that map is checked by
    :func:`count_disagreement` against the model's one-forward segmentation of it, otherwise that
    term joins the co-generation check. With ``colour_split`` > 0 that picture check also counts
    the map's things the picture paints in two colours (:func:`colour_splits`), and with
    ``colour_check`` (world tables only) the prompt's colours it gets wrong (:func:`colour_failures`).
    With ``redraw`` and ``separate`` > 0 the kept maps' touching things are first bitten that many pixels apart,
    and with ``redraw`` and ``snap`` their things first redrawn as world shapes and with ``spread`` > 0
    moved that many pixels apart (:func:`bite_apart`). With ``picture_match`` > 0 the picture check also fails a picture whose
    one-forward segmentation matches some thing of the map (or the map one of it) below that IoU
    (:func:`instance_match`). With ``restarts`` > 0, a row whose kept sample still fails a check
    (against the prompt, or its picture against its map) after those tries is drawn again whole,
    map stage and picture stage with their tries, up to ``restarts`` more times, keeping the whole
    sample with the lowest score (:func:`weigh` of its map plus :data:`PROMPT_WEIGHT` per picture
    failure; the earlier on ties). With ``cogen`` > 0 every co-generation pass takes that many
    steps, its redraws ``settings``' (:meth:`~pandiff.pipeline.PanopticDiffusionPipeline.cogen_steps_of`).
    Draws continue the callers' generators (with one generator per
    sample, row i's draws depend on generator i alone).

    Returns:
        ``(latents B C h w, maps)``.
    """
    import torch

    specs = [parse_prompt(p, pipe.table) for p in prompts]
    # World captions name every thing in the scene; other prompts may leave some out.
    exhaustive = is_world_table(pipe.table)
    cogen_settings = pipe.cogen_settings(settings, cogen)
    colours = prompts_colours(pipe, prompts, colour_check)

    def gens(idx):
        return [generator[i] for i in idx] if isinstance(generator, list) else generator

    def image_disagreement(idx, latents, maps):
        seen = pipe.segment_once(latents, text[idx], cleanup, gens(idx))
        split = colour_splits(
            pipe, latents, maps, colour_split, None if colours is None else [colours[i] for i in idx]
        )
        unmatched = [picture_match > 0 and instance_match(m, s) < picture_match for m, s in zip(maps, seen)]
        return [count_disagreement(m, s) + c + u for m, s, c, u in zip(maps, seen, split, unmatched)]

    def cogenerate(idx):
        latents, maps = _cogenerate(pipe, text[idx], empty, cogen_settings, cleanup, gens(idx), progress)
        return list(zip(latents, maps))

    def cogen_failures(idx, draws):
        wrong = [map_failures(m, specs[i], exhaustive) for i, (_, m) in zip(idx, draws)]
        if not redraw:
            seen = image_disagreement(idx, torch.stack([lat for lat, _ in draws]), [m for _, m in draws])
            wrong = [w + s for w, s in zip(wrong, seen)]
        return [weigh(w, m, avoid_touching, misshapen) for w, (_, m) in zip(wrong, draws)]

    def whole(rows):
        """Map stage, then picture stage, for ``rows``: ``(latents, maps, scores)``, one per row."""

        def on(f):  # best_of numbers the rows it draws 0..len(rows)-1
            return lambda local, *rest: f([rows[j] for j in local], *rest)

        draws, map_scores = best_of(len(rows), on(cogenerate), on(cogen_failures), tries)
        map_scores = [weighed(s, avoid_touching, misshapen) for s in map_scores]
        maps = [m for _, m in draws]
        if not redraw:
            return [lat for lat, _ in draws], maps, map_scores
        kept = dict(zip(rows, bite_apart(maps, [specs[i] for i in rows], exhaustive, separate, snap, spread)))

        def draw_image(idx):
            return list(pipe.redraw(text[idx], empty, [kept[i] for i in idx], settings, gens(idx), progress))

        def image_failures(idx, images):
            return image_disagreement(idx, torch.stack(images), [kept[i] for i in idx])

        images, picture = best_of(len(rows), on(draw_image), on(image_failures), tries)
        return images, [kept[i] for i in rows], [m + PROMPT_WEIGHT * p for m, p in zip(map_scores, picture)]

    rows = list(range(len(prompts)))
    latents, maps, score = whole(rows)
    for _ in range(restarts):
        redo = [i for i in rows if score[i] >= PROMPT_WEIGHT]
        if not redo:
            break
        for i, lat, pmap, s in zip(redo, *whole(redo)):
            if s < score[i]:
                latents[i], maps[i], score[i] = lat, pmap, s
    return torch.stack(latents), maps


# Map timesteps at which :func:`map_consistency` measures the map's denoising error: mid-range and
# high noise, where the picture (not the noisy map itself) has to supply the layout.
CONSISTENCY_TIMESTEPS = (300, 500, 700, 900)


def instance_match(drawn: PanopticMap, seen: PanopticMap) -> float:
    """How well two maps of one sample agree instance by instance: for every thing instance of
    either map, its best IoU with an instance of the same category in the other; the worst of
    those (1.0 when neither map has a thing; 0.0 when an instance has no counterpart)."""
    a, b = wc.thing_instances(drawn), wc.thing_instances(seen)

    def worst(xs, ys) -> float:
        best = [
            max([float((m & m2).sum() / (m | m2).sum()) for n2, m2 in ys if n2 == n], default=0.0)
            for n, m in xs
        ]
        return min(best, default=1.0)

    return min(worst(a, b), worst(b, a))


def map_consistency(pipe, latents, maps: Sequence[PanopticMap], text, noise) -> list[float]:
    """Per sample, the mean squared error of the model's clean-map prediction for ``maps`` noised
    to each of :data:`CONSISTENCY_TIMESTEPS`, given the clean picture ``latents`` (timestep 0)
    and ``text``; ``noise``: ``B T C h w`` (one map noise per timestep, fixed per row so that the
    draws of one row are compared on equal noise). Low: the picture supports its map."""
    import torch

    bits = torch.stack([pipe.prepare_map(m) for m in maps]).to(latents.device, latents.dtype)
    x0 = pipe.schedule.bits_to_diffusion(bits)
    noiser = pipe.schedule.training_scheduler()
    b = latents.shape[0]
    zero = torch.zeros(b, dtype=torch.long, device=latents.device)
    err = torch.zeros(b, device=latents.device)
    with torch.no_grad():
        for k, t in enumerate(CONSISTENCY_TIMESTEPS):
            tt = torch.full_like(zero, t)
            noisy = noiser.add_noise(x0, noise[:, k].to(x0.dtype), tt)
            with torch.autocast(
                latents.device.type, dtype=pipe.autocast_dtype, enabled=pipe.autocast_dtype is not None
            ):
                pred = pipe.model(latents, zero, text, noisy, tt).map
            err += ((pred.float() - bits.float()) ** 2).flatten(1).mean(1)
    return (err / len(CONSISTENCY_TIMESTEPS)).tolist()


def rank_best(
    failures: Sequence[int],
    match: Sequence[float],
    error: Sequence[float],
    splits: Sequence[int] | None = None,
) -> int:
    """Which of one row's draws to keep: fewest ``failures``, then fewest ``splits`` (things its
    picture paints in two colours; None: not counted), then the smallest sum of the ranks of
    ``match`` (higher is better) and ``error`` (lower is better) among the row's draws; the
    earliest draw on ties."""
    k = len(failures)
    splits = [0] * k if splits is None else splits
    rank_match = np.argsort(np.argsort(-np.asarray(match, dtype=float), kind="stable"), kind="stable")
    rank_error = np.argsort(np.argsort(np.asarray(error, dtype=float), kind="stable"), kind="stable")
    return min(range(k), key=lambda j: (failures[j], splits[j], int(rank_match[j] + rank_error[j])))


def ranked_sample(
    pipe, prompts, text, empty, settings, cleanup, redraw, draws, generator, progress, avoid_touching=False,
    separate=0, colour_split=0.0, misshapen=0.0, snap=False, spread=0, cogen=0, colour_check=False,
):  # fmt: skip
    """Prompt -> image + map as the best of ``draws`` whole samples per row (co-generation, and
    the redraw when ``redraw``), ranked by :func:`rank_best` on the row's map failures against the
    prompt (:func:`map_score`: with ``avoid_touching`` touching things too, with ``misshapen``
    misshapen things),
    :func:`instance_match` of the picture's one-forward segmentation against its map, and
    :func:`map_consistency`; with ``colour_split`` > 0 the things a draw's picture paints in two
    colours (:func:`colour_splits`), and with ``colour_check`` (world tables only) the prompt's
    colours it gets wrong (:func:`colour_failures`), rank right after the map failures. With ``redraw`` and
    ``separate`` > 0 each draw's touching things are bitten apart before its redraw, with
    ``redraw`` and ``snap`` its things redrawn as world shapes first and with ``spread`` > 0 moved
    apart (:func:`bite_apart`). With ``cogen`` > 0 co-generation takes that many steps, the redraw
    ``settings``'. Each draw continues the callers'
    generators (with one generator per sample, row i depends on generator i alone).

    Returns:
        ``(latents B C h w, maps)``.
    """
    import torch

    from pandiff.diffusion.sampler import randn

    specs = [parse_prompt(p, pipe.table) for p in prompts]
    exhaustive = is_world_table(pipe.table)
    b = len(prompts)
    shape = pipe.map_shape
    noise = randn((b, len(CONSISTENCY_TIMESTEPS) * shape[0], *shape[1:]), generator, text.device, text.dtype)
    noise = noise.view(b, len(CONSISTENCY_TIMESTEPS), *shape)
    cogen_settings = pipe.cogen_settings(settings, cogen)
    colours = prompts_colours(pipe, prompts, colour_check)
    candidates = []
    for _ in range(draws):
        latents, maps = _cogenerate(pipe, text, empty, cogen_settings, cleanup, generator, progress)
        if redraw:
            maps = bite_apart(maps, specs, exhaustive, separate, snap, spread)
            latents = pipe.redraw(text, empty, maps, settings, generator, progress)
        seen = pipe.segment_once(latents, text, cleanup, generator)
        candidates.append(
            {
                "latents": latents,
                "maps": maps,
                "failures": [
                    map_score(m, s, exhaustive, avoid_touching, misshapen) for m, s in zip(maps, specs)
                ],
                "match": [instance_match(m, s) for m, s in zip(maps, seen)],
                "error": map_consistency(pipe, latents, maps, text, noise),
                "splits": colour_splits(pipe, latents, maps, colour_split, colours),
            }
        )
    keep = [
        rank_best(*([c[key][i] for c in candidates] for key in ("failures", "match", "error", "splits")))
        for i in range(b)
    ]
    latents = torch.stack([candidates[k]["latents"][i] for i, k in enumerate(keep)])
    return latents, [candidates[k]["maps"][i] for i, k in enumerate(keep)]
