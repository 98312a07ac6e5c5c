"""The built-in world's vocabulary (what the bundled model knows) and the unknown-word check."""

from collections import Counter

from pandiff.world.generator import (
    EXAMPLE_PROMPTS,
    MAX_INSTANCES,
    make_scene,
    unknown_words,
    vocabulary_text,
    world_vocabulary,
)


def test_every_caption_word_is_in_the_vocabulary_and_every_table_entry_is_used():
    vocab = world_vocabulary()
    used, per_category, things = Counter(), 0, 0
    for index in range(150):
        spec = make_scene(11, index, 64).spec
        for caption in spec["captions"]:
            assert unknown_words(caption) == [], caption
            used.update(caption.lower().replace(",", " ").replace(".", " ").replace(":", " ").split())
        things = max(things, len(spec["things"]))
        per_category = max(per_category, max(Counter(t["category"] for t in spec["things"]).values()))
    # The vocabulary says no more than the captions do: each word is written by some caption.
    assert set(vocab["words"]) - set(used) <= {"clear"} | set(), set(vocab["words"]) - set(used)
    for key in ("shapes", "colors", "sizes", "stuff"):
        assert set(vocab[key]) <= set(used), key
    assert things == vocab["max_things"] == 4 and per_category <= vocab["max_per_category"]
    assert vocab["max_map_instances"] == MAX_INSTANCES >= vocab["max_per_category"]
    assert list(vocab["counts"]) == [1, 2, 3, 4]


def test_unknown_words_are_named_in_order_once():
    assert unknown_words("a cat sitting on a sofa") == ["cat", "sitting", "sofa"]
    assert unknown_words("Two RED circles, 2 dogs; a dog.") == ["2", "dogs", "dog"]
    assert unknown_words("five red circles") == ["five"]  # the world never draws five
    assert unknown_words("two red circles and a blue square on the grass") == []


def test_examples_cover_counts_colours_relations_and_stay_in_the_vocabulary():
    vocab = world_vocabulary()
    text = " ".join(EXAMPLE_PROMPTS)
    for example in EXAMPLE_PROMPTS:
        assert unknown_words(example) == [], example
    assert all(w in text for w in ("two", "three", "four"))
    assert sum(c in text for c in vocab["colors"]) >= 6
    assert all(any(r in e for e in EXAMPLE_PROMPTS) for r in ("to the left of", "above"))
    help_text = vocabulary_text()
    for word in vocab["shapes"] + vocab["colors"] + vocab["stuff"] + vocab["sizes"]:
        assert word in help_text
    assert EXAMPLE_PROMPTS[0] in help_text
