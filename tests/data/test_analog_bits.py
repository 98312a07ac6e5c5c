"""Analog bits: exact round trips on canonical maps, repair of invalid codes, robustness to noise."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pandiff.data.analog_bits import MapBitCodec
from pandiff.data.categories import Category, CategoryTable
from pandiff.data.panoptic_map import canonicalize
from pandiff.errors import DataError


def random_table(rng: np.random.Generator, num_categories: int) -> CategoryTable:
    isthing = rng.random(num_categories) < 0.5
    return CategoryTable(tuple(Category(f"c{i}", i, bool(t)) for i, t in enumerate(isthing, start=1)))


def random_canonical_map(rng, table, max_instances, height, width):
    """A random map relabelled canonically, crowd regions (instance 0 on things) included."""
    category = rng.integers(0, len(table) + 1, size=(height, width))
    raw = rng.integers(0, 12, size=(height, width))  # more raw instances than the budget
    crowd = rng.random((height, width)) < 0.1
    pmap, _ = canonicalize(category, raw, table, max_instances, crowd)
    return pmap


map_cases = st.tuples(
    st.integers(1, 200),  # K
    st.integers(0, 4),  # instance bits
    st.integers(1, 9),  # height
    st.integers(1, 9),  # width
    st.integers(0, 2**32 - 1),  # seed
)


@settings(max_examples=150, deadline=None)
@given(map_cases)
def test_encode_decode_is_exact_on_canonical_maps(case):
    num_categories, instance_bits, height, width, seed = case
    rng = np.random.default_rng(seed)
    table = random_table(rng, num_categories)
    codec = MapBitCodec.for_table(table, instance_bits)
    pmap = random_canonical_map(rng, table, codec.max_instances, height, width)

    bits = codec.encode_map(pmap)
    assert bits.shape == (codec.num_bits, height, width)
    assert set(bits.unique().tolist()) <= {-1.0, 1.0}
    decoded = codec.decode_map(bits, table)
    np.testing.assert_array_equal(decoded.category, pmap.category)
    np.testing.assert_array_equal(decoded.instance, pmap.instance)


@settings(max_examples=100, deadline=None)
@given(map_cases, st.floats(0.0, 0.99))
def test_noise_that_keeps_the_sign_decodes_exactly(case, magnitude):
    num_categories, instance_bits, height, width, seed = case
    rng = np.random.default_rng(seed)
    table = random_table(rng, num_categories)
    codec = MapBitCodec.for_table(table, instance_bits)
    pmap = random_canonical_map(rng, table, codec.max_instances, height, width)

    bits = codec.encode_map(pmap)
    # Additive noise of size < 1 moves a +-1 bit toward 0 or away from it but never across it.
    noise = torch.from_numpy(rng.uniform(-magnitude, magnitude, size=bits.shape)).float()
    noisy = bits + bits * noise
    assert torch.equal(noisy.sign(), bits.sign())
    category, instance = codec.decode(noisy, table.isthing_lut())
    np.testing.assert_array_equal(category.numpy(), pmap.category)
    np.testing.assert_array_equal(instance.numpy(), pmap.instance)


def test_invalid_category_codes_decode_to_void_with_instance_zero():
    codec = MapBitCodec(num_categories=133, instance_bits=3)
    codes = torch.arange(256).view(16, 16)  # every 8-bit category code
    bits = codec.encode(torch.zeros(16, 16, dtype=torch.long), torch.full((16, 16), 5))
    bits[: codec.category_bits] = (
        ((codes.unsqueeze(0) >> torch.arange(8).view(8, 1, 1)) & 1) * 2 - 1
    ).float()
    category, instance = codec.decode(bits)
    expected = torch.where(codes <= 133, codes, torch.zeros_like(codes))
    assert torch.equal(category, expected)
    assert int(category.max()) == 133
    # Void pixels (code 0 and every invalid code) drop their instance bits; valid ones keep them.
    assert torch.equal(instance, torch.where(expected > 0, 5, 0))


def test_stuff_pixels_lose_instance_bits_when_isthing_is_given():
    table = CategoryTable.from_names(things=["person"], stuff=["sky"])
    codec = MapBitCodec.for_table(table)
    bits = codec.encode(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 3, 0]]))
    bits[codec.category_bits :, 0, 2] = 1.0  # sky pixel carrying instance code 7
    bits[codec.category_bits :, 0, 0] = 1.0  # void pixel carrying instance code 7
    category, instance = codec.decode(bits, table.isthing_lut())
    assert category.tolist() == [[0, 1, 2]]
    assert instance.tolist() == [[0, 3, 0]]


@pytest.mark.parametrize(
    "num_categories, category_bits", [(1, 1), (2, 2), (3, 2), (133, 8), (255, 8), (256, 9)]
)
def test_category_bits_cover_the_table_and_void(num_categories, category_bits):
    assert MapBitCodec(num_categories).category_bits == category_bits


def test_coco_uses_eight_category_bits_plus_three_instance_bits():
    codec = MapBitCodec(num_categories=133)
    assert (codec.category_bits, codec.instance_bits, codec.num_bits) == (8, 3, 11)
    assert codec.max_instances == 7


def test_batched_encoding_puts_channels_before_height_and_width():
    codec = MapBitCodec(num_categories=10, instance_bits=2)
    category = torch.tensor([[[3, 0]], [[10, 1]]])  # B=2, H=1, W=2
    instance = torch.tensor([[[1, 0]], [[3, 2]]])
    bits = codec.encode(category, instance)
    assert bits.shape == (2, 6, 1, 2)
    # 10 = 0b1010, LSB first -> -1 +1 -1 +1; instance 3 = 0b11 -> +1 +1.
    assert bits[1, :, 0, 0].tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    decoded = codec.decode(bits)
    assert torch.equal(decoded[0], category) and torch.equal(decoded[1], instance)


def test_encode_rejects_maps_outside_the_budget():
    codec = MapBitCodec(num_categories=5, instance_bits=2)
    with pytest.raises(DataError, match="canonicalize"):
        codec.encode(torch.ones(2, 2, dtype=torch.long), torch.full((2, 2), 4))
    with pytest.raises(DataError, match="0..5"):
        codec.encode(torch.full((2, 2), 6), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(DataError, match="bit channels"):
        codec.decode(torch.zeros(3, 2, 2))
