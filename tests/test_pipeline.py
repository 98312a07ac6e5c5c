"""The pipeline on a tiny random model: every mode, batching, determinism and input errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pandiff.data.analog_bits import MapBitCodec
from pandiff.data.panoptic_map import PanopticMap
from pandiff.errors import ConfigError, DataError, WeightsError
from pandiff.pipeline import PanopticDiffusionPipeline


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _map(pipe, seed=0):
    rng = np.random.default_rng(seed)
    category = np.full((16, 16), pipe.table.index_of_name("grass"))
    category[:6] = pipe.table.index_of_name("sky")
    instance = np.zeros((16, 16), dtype=int)
    r, c = rng.integers(4, 10, size=2)
    category[r : r + 4, c : c + 4] = pipe.table.index_of_name("circle")
    instance[r : r + 4, c : c + 4] = 1
    return PanopticMap(category, instance, pipe.table)


def test_cogeneration_shapes_batching_and_determinism(pipe):
    out = pipe(
        ["a red circle on the grass", "two blue squares"],
        num_inference_steps=3,
        num_images=2,
        generator=_gen(),
    )
    assert out.prompts == ["a red circle on the grass"] * 2 + ["two blue squares"] * 2
    assert [im.size for im in out.images] == [(16, 16)] * 4
    assert all(m.shape == (16, 16) and m.table is pipe.table for m in out.maps)
    assert [o.size for o in out.overlays] == [(16, 16)] * 4
    again = pipe(
        ["a red circle on the grass", "two blue squares"],
        num_inference_steps=3,
        num_images=2,
        generator=_gen(),
    )
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, again.images))
    assert all(np.array_equal(a.category, b.category) for a, b in zip(out.maps, again.maps))
    other = pipe("a red circle on the grass", num_inference_steps=3, generator=_gen(1))
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(out.images[0]))


def test_map_to_image_keeps_the_map_and_follows_it(pipe):
    given = _map(pipe, 0)
    out = pipe("a circle on the grass", map=given, num_inference_steps=3, generator=_gen())
    assert np.array_equal(out.maps[0].category, given.category)
    assert np.array_equal(out.maps[0].instance, given.instance)
    other = pipe("a circle on the grass", map=_map(pipe, 5), num_inference_steps=3, generator=_gen())
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(other.images[0]))


def test_one_map_or_image_per_prompt_is_batched(pipe):
    maps = [_map(pipe, 0), _map(pipe, 5)]
    out = pipe(["a circle", "a circle"], map=maps, num_images=2, num_inference_steps=3, generator=_gen())
    for k, given in enumerate([maps[0], maps[0], maps[1], maps[1]]):  # prompts repeat num_images times
        assert np.array_equal(out.maps[k].category, given.category)
        assert np.array_equal(out.maps[k].instance, given.instance)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    out = pipe(["a", "b"], image=pictures, num_inference_steps=3, generator=_gen())
    for im, picture in zip(out.images, pictures):
        assert np.abs(np.asarray(im).astype(int) - picture).max() <= 1
    with pytest.raises(ConfigError, match="3 maps for 2 prompts"):
        pipe(["a", "b"], map=[_map(pipe)] * 3, num_inference_steps=2)


def test_image_to_map_keeps_the_image(pipe):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = pipe("a circle", image=Image.fromarray(picture), num_inference_steps=3, generator=_gen())
    assert np.abs(np.asarray(out.images[0]).astype(int) - picture).max() <= 1  # identity codec, rounding


def test_inpainting_keeps_the_map_outside_the_mask(pipe):
    given = _map(pipe, 0)
    mask = np.zeros((16, 16))
    mask[:, 8:] = 1
    out = pipe("a circle", map=given, mask=mask, num_inference_steps=3, generator=_gen())
    assert np.array_equal(out.maps[0].category[:, :8], given.category[:, :8])


def test_lossless_map_upsampling_is_automatic_lossy_resize_needs_consent(pipe):
    small = PanopticMap(_map(pipe).category[::2, ::2], _map(pipe).instance[::2, ::2], pipe.table)
    bits = pipe.prepare_map(small)
    assert bits.shape == (7, 16, 16)
    big = PanopticMap(
        np.kron(_map(pipe).category, np.ones((3, 3), int))[:40, :40], np.zeros((40, 40), int), pipe.table
    )
    with pytest.raises(DataError, match="resize"):
        pipe.prepare_map(big)
    assert pipe.prepare_map(big, resize=True).shape == (7, 16, 16)


def test_wrong_size_image_needs_resize(pipe):
    with pytest.raises(DataError, match="16x16"):
        pipe.prepare_image(Image.new("RGB", (20, 30)))
    assert pipe.prepare_image(Image.new("RGB", (20, 30)), resize=True).shape == (3, 16, 16)


@pytest.mark.parametrize("prompt, message", [("", "empty"), ("   ", "empty"), ("circle " * 40, "tokens")])
def test_bad_prompts(pipe, prompt, message):
    with pytest.raises(ConfigError, match=message):
        pipe(prompt, num_inference_steps=1)


def test_missing_or_broken_folders(tmp_path, tiny_pipeline_dir):
    with pytest.raises(WeightsError, match="does not exist"):
        PanopticDiffusionPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(WeightsError, match="pandiff_pipeline.json is missing"):
        PanopticDiffusionPipeline.from_pretrained(tmp_path)
    (tmp_path / "pandiff_pipeline.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        PanopticDiffusionPipeline.from_pretrained(tmp_path)


def test_generated_maps_are_cleaned_given_maps_are_not(pipe, tiny_pipeline_dir, tmp_path, monkeypatch):
    rimmed = _map(pipe, 0)
    rimmed.category[12, :] = pipe.table.index_of_name("square")  # a 1-pixel line: a sliver
    rimmed.instance[12, :] = 1
    # The random tiny model draws arbitrary bits; decode every sample to the rimmed map instead.
    monkeypatch.setattr(MapBitCodec, "decode_map", lambda self, bits, table: PanopticMap(
        rimmed.category.copy(), rimmed.instance.copy(), table))  # fmt: skip
    assert pipe.config.map_cleanup == 3  # the folder's
    cleaned = pipe("two blue squares", num_inference_steps=1, generator=_gen())
    assert "square" not in {pipe.table[c].name for c, _ in cleaned.maps[0].segments()}
    expected = rimmed.absorb_slivers(3)
    np.testing.assert_array_equal(cleaned.maps[0].category, expected.category)
    raw = pipe("two blue squares", num_inference_steps=1, generator=_gen(), map_cleanup=0)
    np.testing.assert_array_equal(raw.maps[0].category, rimmed.category)
    out = pipe("a circle", map=rimmed, num_inference_steps=1, generator=_gen())  # map -> image
    np.testing.assert_array_equal(out.maps[0].category, rimmed.category)  # returned as given
    with pytest.raises(ConfigError, match="map_cleanup must be >= 0"):
        pipe("a circle", num_inference_steps=1, map_cleanup=-1)
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    spec = json.loads((folder / "pandiff_pipeline.json").read_text())
    (folder / "pandiff_pipeline.json").write_text(json.dumps({**spec, "map_cleanup": 0}))
    assert PanopticDiffusionPipeline.from_pretrained(folder).config.map_cleanup == 0


def test_one_piece_instances_keeps_the_largest_piece_and_the_redraw_draws_that_map(
    pipe, tiny_pipeline_dir, tmp_path, monkeypatch
):
    two_blobs = _map(pipe, 0)
    circle = pipe.table.index_of_name("circle")
    two_blobs.category[0:3, 0:3], two_blobs.instance[0:3, 0:3] = circle, 1  # instance 1 again, far away
    monkeypatch.setattr(MapBitCodec, "decode_map", lambda self, bits, table: PanopticMap(
        two_blobs.category.copy(), two_blobs.instance.copy(), table))  # fmt: skip
    drawn = []  # the maps each redraw is given
    real_redraw = PanopticDiffusionPipeline.redraw
    monkeypatch.setattr(PanopticDiffusionPipeline, "redraw",
                        lambda self, text, empty, maps, *a, **k: drawn.append(maps) or real_redraw(
                            self, text, empty, maps, *a, **k))  # fmt: skip
    assert pipe.config.one_piece_instances is False  # the tiny folder's: off
    kept = pipe("a circle", num_inference_steps=1, generator=_gen())
    np.testing.assert_array_equal(kept.maps[0].category, two_blobs.absorb_slivers(3).category)
    out = pipe(
        "a circle", num_inference_steps=1, generator=_gen(), one_piece_instances=True, redraw_image=True
    )
    expected = two_blobs.absorb_slivers(3).keep_largest_pieces()
    np.testing.assert_array_equal(out.maps[0].codes(), expected.codes())
    assert (out.maps[0].category[0:3, 0:3] != circle).all()
    np.testing.assert_array_equal(drawn[-1][0].codes(), expected.codes())  # the picture is drawn for it
    given = pipe("a circle", map=two_blobs, num_inference_steps=1, generator=_gen(), one_piece_instances=True)
    np.testing.assert_array_equal(given.maps[0].codes(), two_blobs.codes())  # returned as given
    assert pipe.call_settings(one_piece_instances=True)["one_piece_instances"] is True
    with pytest.raises(ConfigError, match="one_piece_instances must be True, False or None"):
        pipe("a circle", num_inference_steps=1, one_piece_instances=1)
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    spec = json.loads((folder / "pandiff_pipeline.json").read_text())
    (folder / "pandiff_pipeline.json").write_text(json.dumps({**spec, "one_piece_instances": True}))
    on = PanopticDiffusionPipeline.from_pretrained(folder)
    assert on.config.one_piece_instances is True
    np.testing.assert_array_equal(on("a circle", num_inference_steps=1).maps[0].codes(), expected.codes())
    (folder / "pandiff_pipeline.json").write_text(json.dumps({**spec, "one_piece_instances": "yes"}))
    with pytest.raises((ConfigError, WeightsError), match="'one_piece_instances' must be true or false"):
        PanopticDiffusionPipeline.from_pretrained(folder)


def test_guidance_left_as_none_is_the_model_folders(pipe, monkeypatch):
    """pipe(prompt) uses the folder's guidance (pandiff_pipeline.json), not a hard-coded 3 / 1;
    given values win."""
    from pandiff.diffusion.sampler import LockstepSampler

    seen = []
    real = LockstepSampler.sample

    def spy(self, *args, **kwargs):
        seen.append((kwargs["guidance_scale"], kwargs["map_guidance_scale"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LockstepSampler, "sample", spy)
    monkeypatch.setattr(pipe.config, "guidance_scale", 0.0)
    monkeypatch.setattr(pipe.config, "map_guidance_scale", 0.5)
    pipe("a red circle", num_inference_steps=2, generator=_gen())
    pipe("a red circle", num_inference_steps=2, generator=_gen(), guidance_scale=4.0, map_guidance_scale=0.0)
    assert seen == [(0.0, 0.5), (4.0, 0.0)]


def test_redraw_draws_the_image_for_the_cogenerated_map(pipe):
    """redraw_image: the maps are the co-generated ones, and the image is exactly what map -> image
    draws for them with the generator where co-generation left it."""
    prompts = ["a red circle on the grass", "two blue squares"]
    redrawn = pipe(prompts, num_inference_steps=3, generator=_gen(), redraw_image=True)
    gen = _gen()
    plain = pipe(prompts, num_inference_steps=3, generator=gen, redraw_image=False)
    for a, b in zip(redrawn.maps, plain.maps):
        assert np.array_equal(a.category, b.category) and np.array_equal(a.instance, b.instance)
    by_map = pipe(prompts, map=plain.maps, num_inference_steps=3, generator=gen)
    for a, b, c in zip(redrawn.images, by_map.images, plain.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))
    # None takes the folder's setting (off in the tiny folder): the plain sample
    default = pipe(prompts, num_inference_steps=3, generator=_gen())
    assert np.array_equal(np.asarray(default.images[0]), np.asarray(plain.images[0]))
    # a given map or image is never redrawn
    given = pipe(prompts[0], map=_map(pipe), num_inference_steps=3, generator=_gen(), redraw_image=True)
    again = pipe(prompts[0], map=_map(pipe), num_inference_steps=3, generator=_gen())
    assert np.array_equal(np.asarray(given.images[0]), np.asarray(again.images[0]))
    with pytest.raises(ConfigError, match="redraw_image"):
        pipe(prompts[0], num_inference_steps=3, redraw_image="yes")


def test_image_map_guidance_reaches_map_to_image_and_the_redraw(pipe, monkeypatch):
    """image_map_guidance_scale: map -> image and the redraw pass it to the sampler (the folder's
    when None); co-generation's picture ignores it; a bad value is refused."""
    from pandiff.diffusion.sampler import LockstepSampler

    seen = []
    sample = LockstepSampler.sample

    def spy(self, *args, **kwargs):
        seen.append((kwargs.get("map_bits") is not None, kwargs["image_map_guidance_scale"]))
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(LockstepSampler, "sample", spy)
    plain = pipe("a red circle", map=_map(pipe), num_inference_steps=2, generator=_gen())
    guided = pipe(
        "a red circle", map=_map(pipe), num_inference_steps=2, generator=_gen(), image_map_guidance_scale=3.0
    )
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))
    monkeypatch.setattr(pipe.config, "image_map_guidance_scale", 3.0)
    folder = pipe("a red circle", map=_map(pipe), num_inference_steps=2, generator=_gen())
    assert np.array_equal(np.asarray(folder.images[0]), np.asarray(guided.images[0]))
    seen.clear()
    redrawn = pipe("a red circle", num_inference_steps=2, generator=_gen(), redraw_image=True)
    assert seen == [(False, 3.0), (True, 3.0)]  # co-generation, then the redraw for its map
    unguided = pipe("a red circle", num_inference_steps=2, generator=_gen(), redraw_image=True,
                    image_map_guidance_scale=0.0)  # fmt: skip
    assert np.array_equal(redrawn.maps[0].category, unguided.maps[0].category)
    assert not np.array_equal(np.asarray(redrawn.images[0]), np.asarray(unguided.images[0]))
    with pytest.raises(ConfigError, match="image_map_guidance_scale"):
        pipe("a red circle", map=_map(pipe), num_inference_steps=2, image_map_guidance_scale=float("nan"))
