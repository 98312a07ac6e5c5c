"""The pixel refiner (``refine_channels``): a warm start from a model without it predicts exactly
what that model did, it reads the noisy input and neighbouring patches, and it is saved and loaded
with the model's config."""

import pytest
import torch
import torch.nn.functional as F

from pandiff.errors import ConfigError
from pandiff.model import PDMTwoStream, PDMUnified, UViT, load_pdm
from pandiff.training.setup import warm_start

TINY = {
    "latent_channels": 3,
    "latent_size": 16,
    "patch_size": 4,
    "map_bits": 3,
    "patch_factor": 1,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "text_dim": 12,
    "text_len": 5,
}


IMAGE_ONLY = {k: v for k, v in TINY.items() if k not in ("map_bits", "patch_factor")}  # UViT's fields


def inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, 16, 16, generator=g),
        "timestep_image": torch.randint(0, 1000, (batch,), generator=g),
        "text": torch.randn(batch, 5, 12, generator=g),
        "map_bits": torch.randn(batch, 3, 16, 16, generator=g).sign(),
    }


def assert_warm_start_is_exact(tmp_path, base, model, prefix: str):
    """Warm-start ``model`` from ``base`` (saved to ``tmp_path``): only parameters named ``prefix...``
    stay fresh, and both predict the same image and map bit for bit. Returns both outputs."""
    base.save_pretrained(tmp_path / "base")
    fresh = warm_start(model, tmp_path / "base")
    assert fresh and all(name.startswith(prefix) for name in fresh)
    with torch.no_grad():
        a, b = base(**inputs()), model(**inputs())
    torch.testing.assert_close(b.image, a.image, rtol=0, atol=0)
    torch.testing.assert_close(b.map, a.map, rtol=0, atol=0)
    return a, b


def test_warm_start_keeps_the_predictions_exactly(tmp_path):
    torch.manual_seed(0)
    plain = PDMUnified(**TINY)
    assert_warm_start_is_exact(tmp_path, plain, PDMUnified(**TINY, refine_channels=8), "refiner.")
    # the patch head alone (refine_channels=0) has no refiner weights at all
    assert not any(k.startswith("refiner") for k in plain.state_dict())


def test_refiner_reads_the_noisy_input_and_crosses_patch_borders():
    """The refiner alone, tokens and patch-head prediction fixed: one noisy-input pixel moves the
    refined pixels within its 7x7 receptive field (three 3x3 convolutions), across the patch border
    at column 4, and nothing farther away. Through the whole model attention would move every pixel,
    so the refiner is called directly."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, refine_channels=8)
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)  # as after some training
    tokens = torch.randn(1, 16, 32)
    base = torch.randn(1, 3, 16, 16)
    noisy = torch.randn(1, 3, 16, 16)
    moved_noisy = noisy.clone()
    moved_noisy[:, :, 5, 4] += 1.0
    with torch.no_grad():
        moved = (model.refiner(tokens, base, moved_noisy) - model.refiner(tokens, base, noisy)).abs()
    changed = moved.amax(dim=(0, 1)) > 0  # 16 x 16
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[5, 3] and changed[5, 1]  # the neighbouring patch (columns 0-3), 3 pixels away
    assert rows.min() == 2 and rows.max() == 8 and cols.min() == 1 and cols.max() == 7  # no farther


def test_refined_model_learns_a_detail_the_patch_head_misses():
    """A 1-pixel outline at every patch border: the refined model fits it to a lower loss in the
    same number of steps than the patch head alone."""
    target = torch.zeros(2, 3, 16, 16)
    target[:, :, ::4, :] = 1.0
    target[:, :, :, ::4] = 1.0
    x = inputs()
    losses = {}
    for channels in (0, 8):
        torch.manual_seed(0)
        model = PDMUnified(**TINY, refine_channels=channels)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            loss = F.mse_loss(model(**x).image, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[channels] = loss.item()
    assert losses[8] < losses[0], losses


@pytest.mark.parametrize("cls", [PDMUnified, PDMTwoStream])
def test_config_round_trip(tmp_path, cls):
    torch.manual_seed(0)
    model = cls(**TINY, refine_channels=4)
    torch.nn.init.normal_(
        model.state_dict()[
            "image_stream.refiner.conv_out.weight" if cls is PDMTwoStream else "refiner.conv_out.weight"
        ],
        std=0.1,
    )
    model.save_pretrained(tmp_path / "m")
    back = load_pdm(tmp_path / "m")
    assert back.config.refine_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs()).image, model(**inputs()).image)


def test_bad_refine_channels():
    fields = {k: v for k, v in TINY.items() if k not in ("map_bits", "patch_factor")}
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="refine_channels"):
            UViT(**fields, refine_channels=bad)
    model = UViT(**fields, refine_channels=4)
    with pytest.raises(ConfigError, match="noisy image"):
        model.decode_image(torch.zeros(1, 16, 32))


def test_map_reading_refiner_warm_starts_exactly_and_needs_a_refiner(tmp_path):
    """``refine_map`` adds only the zero-initialised map convolution: a warm start from a refined
    model predicts exactly what it did; without a refiner, or not a bool, it is refused."""
    torch.manual_seed(0)
    refined = PDMUnified(**TINY, refine_channels=8)
    torch.nn.init.normal_(refined.refiner.conv_out.weight, std=0.1)
    refined.save_pretrained(tmp_path / "refined")
    reading = PDMUnified(**TINY, refine_channels=8, refine_map=True)
    assert warm_start(reading, tmp_path / "refined") == ["refiner.map_in.weight"]
    assert reading.refiner.map_in.weight.shape[1] == 2 * TINY["map_bits"]  # map input + prediction
    with torch.no_grad():
        a, b = refined(**inputs()), reading(**inputs())
        torch.testing.assert_close(b.image, a.image, rtol=0, atol=0)
        no_map = {k: v for k, v in inputs().items() if k != "map_bits"}
        torch.testing.assert_close(reading(**no_map).image, refined(**no_map).image, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="refine_channels > 0"):
        PDMUnified(**TINY, refine_map=True)
    with pytest.raises(ConfigError, match="refine_map must be"):
        PDMUnified(**TINY, refine_channels=8, refine_map=1)
    with pytest.raises(ConfigError, match=r"map input of shape \(B, 6, 16, 16\), got None"):
        reading.refiner(torch.zeros(1, 16, 32), torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_map_reading_refiner_sees_one_map_pixel_within_its_reach():
    """One map pixel moves the refined image within the refiner's 7x7 reach and nowhere else, and
    the model's map input and map prediction both reach it."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, refine_channels=8, refine_map=True)
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)
    torch.nn.init.normal_(model.refiner.map_in.weight, std=0.1)
    tokens, base, noisy = torch.randn(1, 16, 32), torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    maps = torch.randn(1, 6, 16, 16).sign()
    for channel in (0, 5):  # an input bit and a predicted bit
        moved_map = maps.clone()
        moved_map[:, channel, 10, 10] *= -1
        with torch.no_grad():
            moved = model.refiner(tokens, base, noisy, moved_map) - model.refiner(tokens, base, noisy, maps)
        rows, cols = torch.nonzero(moved.abs().amax(dim=(0, 1)) > 0, as_tuple=True)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 13, 7, 13)


def test_image_loss_does_not_train_the_map_head_through_the_refiner():
    """The refiner reads the map prediction detached: an image-only loss leaves the map head's
    weights without a gradient, while the map convolution gets one."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, refine_channels=8, refine_map=True)
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)
    model(**inputs()).image.square().mean().backward()
    assert model.map_decoder_pred.weight.grad is None
    assert model.refiner.map_in.weight.grad is not None and model.refiner.map_in.weight.grad.abs().sum() > 0


def test_map_is_pooled_to_the_image_resolution_with_multi_scale_patching(tmp_path):
    """patch_factor 2: the 32x32 map is average-pooled to the 16x16 image for the refiner; the
    model runs, and saves and loads with ``refine_map``."""
    torch.manual_seed(0)
    model = PDMUnified(**{**TINY, "patch_factor": 2}, refine_channels=4, refine_map=True)
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)
    torch.nn.init.normal_(model.refiner.map_in.weight, std=0.1)
    x = {**inputs(), "map_bits": torch.randn(2, 3, 32, 32).sign()}
    bits, pred = x["map_bits"], torch.randn(2, 3, 32, 32)
    pooled = model._refiner_map(bits, pred)
    torch.testing.assert_close(pooled[:, :3], F.avg_pool2d(bits, 2))
    torch.testing.assert_close(pooled[:, 3:], F.avg_pool2d(pred, 2))
    model.save_pretrained(tmp_path / "m")
    back = load_pdm(tmp_path / "m")
    assert back.config.refine_map is True
    with torch.no_grad():
        out = model(**x)
        assert out.image.shape == (2, 3, 16, 16) and out.map.shape == (2, 3, 32, 32)
        torch.testing.assert_close(back(**x).image, out.image)


def _block_maps(batch: int, g: torch.Generator):
    """Maps of four axis-aligned instances split at arbitrary (not patch-aligned) pixels, their
    3 analog bits, and the world's outline: 1 on each pixel where the instance changes."""
    ids = torch.zeros(batch, 16, 16, dtype=torch.long)
    for b in range(batch):
        r, c = torch.randint(2, 15, (2,), generator=g).tolist()
        ids[b, r:, :c] = 1
        ids[b, :r, c:] = 2
        ids[b, r:, c:] = 3
    bits = torch.stack([(ids >> k) & 1 for k in range(3)], 1).float() * 2 - 1
    edge = torch.zeros(batch, 16, 16)
    edge[:, 1:, :] += (ids[:, 1:] != ids[:, :-1]).float()
    edge[:, :, 1:] += (ids[:, :, 1:] != ids[:, :, :-1]).float()
    return bits, (edge > 0).float()[:, None].expand(batch, 3, 16, 16)


def test_map_reading_refiner_draws_outlines_where_the_map_has_boundaries():
    """Given a clean map, the world draws a 1-pixel outline where the instance changes. Trained on
    fresh maps each step, a model whose refiner reads the map draws the outlines of unseen maps
    far better than one that sees the map only through its 4x4-pixel tokens."""
    held_bits, held_target = _block_maps(8, torch.Generator().manual_seed(99))
    x = inputs(batch=8)
    x["timestep_image"] = torch.full((8,), 999)
    losses = {}
    for reads_map in (False, True):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        model = PDMUnified(**TINY, refine_channels=8, refine_map=reads_map)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            bits, target = _block_maps(8, g)
            loss = F.mse_loss(model(**{**x, "map_bits": bits}, timestep_map=0).image, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = model(**{**x, "map_bits": held_bits}, timestep_map=0).image
        losses[reads_map] = F.mse_loss(pred, held_target).item()
    assert losses[True] < 0.5 * losses[False], losses


# -- the map's pixel refiner (map_refine_channels) -----------------------------------------------------
def test_map_refiner_warm_starts_exactly_and_round_trips(tmp_path):
    """A map refiner (``map_refine_channels``) added to a trained model: the warm start leaves its
    weights fresh and predicts exactly what the model did; saved and loaded, it predicts the same."""
    torch.manual_seed(0)
    base = PDMUnified(**TINY, refine_channels=8, refine_map=True)
    torch.nn.init.normal_(base.refiner.conv_out.weight, std=0.1)  # a trained image refiner
    model = PDMUnified(**TINY, refine_channels=8, refine_map=True, map_refine_channels=8)
    a, _ = assert_warm_start_is_exact(tmp_path, base, model, "map_refiner.")
    torch.nn.init.normal_(model.map_refiner.conv_out.weight, std=0.1)  # as after some training
    model.save_pretrained(tmp_path / "refined")
    back = load_pdm(tmp_path / "refined")
    assert back.config.map_refine_channels == 8
    with torch.no_grad():
        out, again = model(**inputs()), back(**inputs())
    assert not torch.equal(out.map, a.map)  # the refiner now changes the map
    torch.testing.assert_close(again.map, out.map, rtol=0, atol=0)
    assert out.map.abs().max() <= 1  # still bits in [-1, 1] (the refiner acts before the tanh)


def test_map_refiner_reads_the_noisy_map_and_is_checked():
    """Through the whole model with the tokens' path fixed, one noisy map pixel moves the refined
    map only inside the refiner's 7x7 reach; bad widths and a missing noisy map are refused."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, map_refine_channels=8)
    torch.nn.init.normal_(model.map_refiner.conv_out.weight, std=0.1)
    tokens = torch.randn(1, 16, 32)
    noisy = torch.randn(1, 3, 16, 16)
    moved_noisy = noisy.clone()
    moved_noisy[:, :, 8, 8] += 1.0
    with torch.no_grad():
        moved = (model.decode_map(tokens, moved_noisy) - model.decode_map(tokens, noisy)).abs()
    rows, cols = torch.nonzero(moved.amax(dim=(0, 1)) > 0, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 11, 5, 11)
    with pytest.raises(ConfigError, match="noisy map"):
        model.decode_map(tokens)
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="map_refine_channels"):
            PDMUnified(**TINY, map_refine_channels=bad)


def test_map_refiner_learns_straight_edges_the_patch_head_misses():
    """Block maps split at arbitrary pixels, fed clean to the map at t = 0: the map head must give
    them back. A patch head spells each pixel from its 4x4 token alone; with the map refiner the
    model reproduces unseen maps far better in the same steps."""
    held_bits, _ = _block_maps(8, torch.Generator().manual_seed(99))
    x = inputs(batch=8)
    losses = {}
    for channels in (0, 8):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        model = PDMUnified(**TINY, map_refine_channels=channels)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            bits, _ = _block_maps(8, g)
            noisy = bits + 0.8 * torch.randn(bits.shape, generator=g)
            loss = F.mse_loss(model(**{**x, "map_bits": noisy}, timestep_map=200).map, bits)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            noisy = held_bits + 0.8 * torch.randn(held_bits.shape, generator=torch.Generator().manual_seed(5))
            losses[channels] = F.mse_loss(
                model(**{**x, "map_bits": noisy}, timestep_map=200).map, held_bits
            ).item()
    assert losses[8] < 0.5 * losses[0], losses


# -- a wider map refiner (map_refine_dilations) ------------------------------------------------------
def test_dilated_map_refiner_warm_starts_exactly_from_a_trained_refiner(tmp_path):
    """Residual dilated convolutions added to a trained map refiner: only they start fresh, the
    model predicts exactly what it did, and the config round-trips."""
    torch.manual_seed(0)
    base = PDMUnified(**TINY, map_refine_channels=8)
    torch.nn.init.normal_(base.map_refiner.conv_out.weight, std=0.1)  # a trained map refiner
    model = PDMUnified(**TINY, map_refine_channels=8, map_refine_dilations=[2, 4])
    assert [c.dilation for c in model.map_refiner.conv_wide] == [(2, 2), (4, 4)]
    a, _ = assert_warm_start_is_exact(tmp_path, base, model, "map_refiner.conv_wide.")
    for conv in model.map_refiner.conv_wide:  # as after some training
        torch.nn.init.normal_(conv.weight, std=0.1)
    model.save_pretrained(tmp_path / "wide")
    back = load_pdm(tmp_path / "wide")
    assert list(back.config.map_refine_dilations) == [2, 4]
    with torch.no_grad():
        out, again = model(**inputs()), back(**inputs())
    assert not torch.equal(out.map, a.map)
    torch.testing.assert_close(again.map, out.map, rtol=0, atol=0)


def test_dilated_map_refiner_reaches_further_and_is_checked():
    """One noisy map pixel at (8, 8): three 3x3 convolutions reach 3 pixels, a residual one at
    dilation 2 two more (11x11); zero-initialised it adds nothing. Bad dilations are refused."""
    tokens, noisy = torch.randn(1, 16, 32), torch.randn(1, 3, 16, 16)
    moved_noisy = noisy.clone()
    moved_noisy[:, :, 8, 8] += 1.0

    def reach(model):
        with torch.no_grad():
            moved = (model.decode_map(tokens, moved_noisy) - model.decode_map(tokens, noisy)).abs()
        rows, cols = torch.nonzero(moved.amax(dim=(0, 1)) > 0, as_tuple=True)
        return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()

    torch.manual_seed(0)
    model = PDMUnified(**TINY, map_refine_channels=8, map_refine_dilations=[2])
    torch.nn.init.normal_(model.map_refiner.conv_out.weight, std=0.1)
    assert reach(model) == (5, 11, 5, 11)  # the wide convolution starts at zero
    torch.nn.init.normal_(model.map_refiner.conv_wide[0].weight, std=0.1)
    assert reach(model) == (3, 13, 3, 13)
    with pytest.raises(ConfigError, match="map_refine_channels > 0"):
        PDMUnified(**TINY, map_refine_dilations=[2])
    for bad in ([0], [1.5], [True], "2", 2):
        with pytest.raises(ConfigError, match="map_refine_dilations"):
            PDMUnified(**TINY, map_refine_channels=8, map_refine_dilations=bad)


@pytest.mark.parametrize("cls", [PDMUnified, PDMTwoStream, UViT])
def test_dilated_image_refiner_warm_starts_exactly_and_round_trips(tmp_path, cls):
    """``refine_dilations`` on the image refiner of every model: a warm start from the refiner
    without them is exact (only the dilated convolutions start fresh) and the config round-trips."""
    fields = TINY if cls is not UViT else IMAGE_ONLY
    prefix = "image_stream.refiner." if cls is PDMTwoStream else "refiner."
    torch.manual_seed(0)
    base = cls(**fields, refine_channels=4)
    torch.nn.init.normal_(base.get_submodule(prefix + "conv_out").weight, std=0.1)  # a trained refiner
    model = cls(**fields, refine_channels=4, refine_dilations=[2])
    base.save_pretrained(tmp_path / "base")
    fresh = warm_start(model, tmp_path / "base")
    assert sorted(fresh) == [prefix + "conv_wide.0.bias", prefix + "conv_wide.0.weight"]
    x = inputs() if cls is not UViT else {k: v for k, v in inputs().items() if k != "map_bits"}
    with torch.no_grad():
        torch.testing.assert_close(model(**x).image, base(**x).image, rtol=0, atol=0)
    torch.nn.init.normal_(model.get_submodule(prefix + "conv_wide.0").weight, std=0.1)
    model.save_pretrained(tmp_path / "wide")
    back = (load_pdm if cls is not UViT else UViT.from_pretrained)(tmp_path / "wide")
    assert list(back.config.refine_dilations) == [2]
    with torch.no_grad():
        out = model(**x).image
        assert not torch.equal(out, base(**x).image)
        torch.testing.assert_close(back(**x).image, out, rtol=0, atol=0)


def test_dilated_image_refiner_reaches_further_and_is_checked():
    """One noisy pixel at (8, 8) through the image refiner with one trained residual convolution
    (dilation 1): the reach grows from 3 pixels to 4 (a 9x9 patch), nothing farther moves; widths
    without a refiner and bad dilations are refused."""
    torch.manual_seed(0)
    model = PDMUnified(**TINY, refine_channels=8, refine_dilations=[1])
    torch.nn.init.normal_(model.refiner.conv_out.weight, std=0.1)
    torch.nn.init.normal_(model.refiner.conv_wide[0].weight, std=0.1)
    tokens, base, noisy = torch.randn(1, 16, 32), torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    moved_noisy = noisy.clone()
    moved_noisy[:, :, 8, 8] += 1.0
    with torch.no_grad():
        moved = (model.refiner(tokens, base, moved_noisy) - model.refiner(tokens, base, noisy)).abs()
    rows, cols = torch.nonzero(moved.amax(dim=(0, 1)) > 0, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 12, 4, 12)
    with pytest.raises(ConfigError, match="refine_channels > 0"):
        UViT(**IMAGE_ONLY, refine_dilations=[2])
    for bad in ([0], [-2], "2", 2.0):
        with pytest.raises(ConfigError, match="refine_dilations"):
            PDMUnified(**TINY, refine_channels=4, refine_dilations=bad)
