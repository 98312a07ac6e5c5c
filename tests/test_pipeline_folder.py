"""The pipeline owns its folder: PipelineConfig, save_pretrained / from_pretrained, None meaning the
folder's, dtype and device moves, the progress bar setting and per-image generators."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pandiff.errors import ConfigError, WeightsError
from pandiff.pipeline import PanopticDiffusionPipeline
from pandiff.pipeline_config import PIPELINE_FILE, PipelineConfig


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch_sizes(pipe):
    """Records the batch of every model forward (guidance branches are stacked in one forward)."""
    sizes = []
    handle = pipe.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes, handle


def test_a_folder_saved_with_guidance_off_runs_one_branch_per_step(pipe, tmp_path):
    """pipe(prompt) takes the folder's guidance: 0 / 0 saved means the conditional branch alone
    (one sample per forward), where the old pipeline hard-coded 3 / 1 and ran three."""
    pipe.config.guidance_scale, before = 0.0, pipe.config.guidance_scale
    pipe.config.map_guidance_scale = 0.0
    try:
        pipe.save_pretrained(tmp_path / "off")
    finally:
        pipe.config.guidance_scale, pipe.config.map_guidance_scale = before, 1.0
    off = PanopticDiffusionPipeline.from_pretrained(tmp_path / "off")
    assert (off.config.guidance_scale, off.config.map_guidance_scale) == (0.0, 0.0)
    sizes, handle = _batch_sizes(off)
    try:
        off("a red circle", num_inference_steps=2, generator=_gen())
        assert sizes == [1, 1]
        sizes.clear()
        off(
            "a red circle",
            num_inference_steps=2,
            generator=_gen(),
            guidance_scale=2.0,
            map_guidance_scale=1.0,
        )
        assert sizes == [3, 3]  # given values win: conditional, text-free and map-free branches
    finally:
        handle.remove()


def test_none_means_the_folders_steps_and_scheduler(pipe, tmp_path):
    folder = tmp_path / "p"
    replace_config = replace(pipe.config, num_inference_steps=3, scheduler="ddim")
    pipe.config, before = replace_config, pipe.config
    try:
        pipe.save_pretrained(folder)
    finally:
        pipe.config = before
    loaded = PanopticDiffusionPipeline.from_pretrained(folder)
    assert loaded.scheduler == "ddim" and loaded.call_settings()["num_inference_steps"] == 3
    sizes, handle = _batch_sizes(loaded)
    try:
        loaded("a red circle", generator=_gen(), guidance_scale=0.0, map_guidance_scale=0.0)
    finally:
        handle.remove()
    assert len(sizes) == 3
    assert PanopticDiffusionPipeline.from_pretrained(folder, scheduler="ddpm").scheduler == "ddpm"


def test_save_pretrained_round_trips_the_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    again = PanopticDiffusionPipeline.from_pretrained(tmp_path / "copy")
    assert again.config == pipe.config
    for a, b in zip(pipe.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    first = pipe("a red circle", num_inference_steps=2, generator=_gen())
    second = again("a red circle", num_inference_steps=2, generator=_gen())
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))


def test_the_weights_fingerprint_follows_the_weights_not_the_folder(pipe, tmp_path):
    import hashlib

    first = pipe.weights_fingerprint()
    assert len(first) == 16 and int(first, 16) >= 0
    pipe.save_pretrained(tmp_path / "elsewhere")  # the same weights in another folder
    copy = PanopticDiffusionPipeline.from_pretrained(tmp_path / "elsewhere")
    assert copy.weights_fingerprint() == first
    # by hand: names, dtypes, shapes and bytes of the model's state dict (the tiny folder's codec
    # is the identity, with no weights)
    digest = hashlib.sha256()
    for name, tensor in pipe.model.state_dict().items():
        digest.update(f"0:{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    assert first == digest.hexdigest()[:16]
    with torch.no_grad():  # one weight nudged by one ulp
        weight = next(copy.model.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(1e9))
    nudged = copy.weights_fingerprint()
    assert nudged != first
    assert copy.to(torch.bfloat16).weights_fingerprint() != nudged  # other dtype, other bytes


def test_dtype_round_trip(tiny_pipeline_dir, tmp_path):
    """from_pretrained(torch_dtype=bf16) holds bf16 weights and samples; saved, the folder keeps
    those values (it loads as float32, as every folder does, and casts back to bf16 exactly)."""
    half = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    out = half("a red circle", num_inference_steps=2, generator=_gen())
    assert np.asarray(out.images[0]).shape == (16, 16, 3)
    half.save_pretrained(tmp_path / "bf16")
    loaded = PanopticDiffusionPipeline.from_pretrained(tmp_path / "bf16")
    assert loaded.dtype == torch.float32
    for a, b in zip(half.model.parameters(), loaded.model.parameters()):
        assert torch.equal(a.float(), b)
    back = loaded.to(torch.bfloat16)
    assert back is loaded and back.dtype == torch.bfloat16
    again = back("a red circle", num_inference_steps=2, generator=_gen())
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(out.images[0]))
    assert back.to("cpu").device.type == "cpu"
    with pytest.raises(ConfigError, match="floating-point"):
        back.to(torch.int64)


def test_the_maps_own_sampler_is_a_folder_setting(pipe, tiny_pipeline_dir, tmp_path):
    """map_scheduler: saved and read back; the map (and through it the picture) then samples with it;
    a scheduler given at loading replaces both; unknown names are refused by name."""
    pipe.config, before = replace(pipe.config, map_scheduler="sde-dpmsolver++"), pipe.config
    try:
        pipe.save_pretrained(tmp_path / "m")
    finally:
        pipe.config = before
    assert json.loads((tmp_path / "m" / PIPELINE_FILE).read_text())["map_scheduler"] == "sde-dpmsolver++"
    assert "map_scheduler" not in pipe.config.to_dict()  # None: the map takes the scheduler
    mixed = PanopticDiffusionPipeline.from_pretrained(tmp_path / "m")
    assert (mixed.scheduler, mixed.map_scheduler) == ("dpmsolver++", "sde-dpmsolver++")
    sampler = mixed.sampler()
    assert (sampler.scheduler_name, sampler.map_scheduler_name) == ("dpmsolver++", "sde-dpmsolver++")
    a, b, ode = (p("a red circle", num_inference_steps=3, generator=_gen(2)) for p in (mixed, mixed, pipe))
    assert np.array_equal(a.maps[0].category, b.maps[0].category)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(ode.images[0]))
    ddim = PanopticDiffusionPipeline.from_pretrained(tmp_path / "m", scheduler="ddim")
    assert (ddim.scheduler, ddim.map_scheduler) == ("ddim", "ddim")
    # map_scheduler at loading: the map's alone, after scheduler; the same sampling as the folder's
    given = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir, map_scheduler="sde-dpmsolver++")
    assert (given.scheduler, given.map_scheduler) == ("dpmsolver++", "sde-dpmsolver++")
    same = given("a red circle", num_inference_steps=3, generator=_gen(2))
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(a.images[0]))
    both = PanopticDiffusionPipeline.from_pretrained(tmp_path / "m", scheduler="ddim", map_scheduler="ddpm")
    assert (both.scheduler, both.map_scheduler) == ("ddim", "ddpm")
    with pytest.raises(ConfigError, match="unknown map_scheduler 'euler'"):
        replace(pipe.config, map_scheduler="euler")
    with pytest.raises(ConfigError, match="unknown map_scheduler 'euler'"):
        PanopticDiffusionPipeline.from_pretrained(tmp_path / "m", map_scheduler="euler")


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "sde-dpmsolver++"])
def test_list_generators_reproduce_per_image_seeds(pipe, scheduler):
    """generator=[g0, g1, ...]: image i is what a call with generator i alone draws, also with the
    SDE solver, which draws noise at every step (each sample's from its own generator)."""
    pipe.config, before = replace(pipe.config, scheduler=scheduler), pipe.config
    try:
        _check_list_generators(pipe)
    finally:
        pipe.config = before


def _check_list_generators(pipe):
    prompts = ["a red circle on the grass", "two blue squares"]
    both = pipe(prompts, num_inference_steps=2, generator=[_gen(5), _gen(7)])
    for k, (prompt, seed) in enumerate(zip(prompts, (5, 7))):
        alone = pipe(prompt, num_inference_steps=2, generator=_gen(seed))
        image = np.asarray(alone.images[0]).astype(int)
        assert np.abs(np.asarray(both.images[k]).astype(int) - image).max() <= 1
    swapped = pipe(prompts[:1], num_images=2, num_inference_steps=2, generator=[_gen(7), _gen(5)])
    again = pipe(prompts[:1], num_images=2, num_inference_steps=2, generator=[_gen(5), _gen(7)])
    assert np.array_equal(np.asarray(swapped.images[1]), np.asarray(again.images[0]))
    with pytest.raises(ConfigError, match="3 generators for 2 samples"):
        pipe(prompts, num_inference_steps=1, generator=[_gen(), _gen(), _gen()])


def test_progress_bar_config(pipe, capsys):
    pipe("a red circle", num_inference_steps=2, generator=_gen())
    assert "sampling" not in capsys.readouterr().err  # hidden by default
    pipe.set_progress_bar_config(disable=False)
    try:
        pipe("a red circle", num_inference_steps=2, generator=_gen())
        assert "sampling" in capsys.readouterr().err
        pipe("a red circle", num_inference_steps=2, generator=_gen(), progress=False)
        assert "sampling" not in capsys.readouterr().err  # the call's argument wins
    finally:
        pipe.set_progress_bar_config(disable=True)
    with pytest.raises(TypeError, match="colour"):
        pipe.set_progress_bar_config(colour="red")


def test_an_export_with_a_local_text_encoder_is_portable(pipe, tmp_path):
    """A local text-encoder folder is copied into the saved folder, which then loads after the
    original is gone; "minilm" stays a name."""
    from pandiff.encoders.text import save_tiny_clip_text_encoder
    from pandiff.pipeline_config import save_pipeline_folder

    encoder = save_tiny_clip_text_encoder(tmp_path / "my-encoder", max_positions=pipe.model.config.text_len)
    config = replace(pipe.config, text_encoder=str(encoder))
    # The tiny model reads 384-wide MiniLM features; this check is about the folder, not sampling.
    save_pipeline_folder(tmp_path / "portable", pipe.model, config)
    saved = json.loads((tmp_path / "portable" / PIPELINE_FILE).read_text())
    assert saved["text_encoder"] == "text_encoder" and saved["codec"] == "identity"
    assert (tmp_path / "portable" / "text_encoder" / "config.json").is_file()
    for item in sorted(encoder.iterdir()):
        item.unlink()
    encoder.rmdir()
    moved = tmp_path / "moved"
    (tmp_path / "portable").rename(moved)
    loaded = PipelineConfig.from_pretrained(moved)
    from pandiff.encoders.text import load_text_encoder
    from pandiff.pipeline_config import component_path

    text = load_text_encoder(component_path(moved, loaded.text_encoder))
    assert text.encode(["a red circle"]).shape[0] == 1
    pipe.save_pretrained(tmp_path / "named")
    assert json.loads((tmp_path / "named" / PIPELINE_FILE).read_text())["text_encoder"] == "minilm"
    assert not (tmp_path / "named" / "text_encoder").exists()


def test_training_export_copies_a_local_text_encoder(pipe, tmp_path):
    """pandiff train's export writes through the same writer: a folder path becomes a copy."""
    from types import SimpleNamespace

    from pandiff.encoders.text import save_tiny_clip_text_encoder
    from pandiff.training.config import SampleConfig
    from pandiff.training.export import export_pipeline

    encoder = save_tiny_clip_text_encoder(tmp_path / "enc")
    spec = SimpleNamespace(
        codec="identity",
        text_encoder=str(encoder),
        categories=pipe.table.to_coco(),
        instance_bits=3,
        image_size=16,
    )
    out = export_pipeline(
        tmp_path / "final", pipe.model, spec, pipe.schedule, SampleConfig(guidance_scale=2.5), 7
    )
    config = PipelineConfig.from_pretrained(out)
    assert (config.text_encoder, config.guidance_scale, config.trained_steps, config.weights) == (
        "text_encoder",
        2.5,
        7,
        "ema",
    )
    assert (out / "text_encoder" / "config.json").is_file()


def test_config_validation_names_the_key(tmp_path, tiny_pipeline_dir):
    data = json.loads((tiny_pipeline_dir / PIPELINE_FILE).read_text())
    for change, message in (({"num_inference_steps": 0}, "num_inference_steps"),
                            ({"scheduler": "euler"}, "unknown scheduler"),
                            ({"guidance_scale": "3"}, "guidance_scale"),
                            ({"redraw_image": "yes"}, "redraw_image"),
                            ({"image_map_guidance_scale": -1}, "image_map_guidance_scale")):  # fmt: skip
        (tmp_path / PIPELINE_FILE).write_text(json.dumps({**data, **change}))
        with pytest.raises(WeightsError, match=message):
            PipelineConfig.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="map_cleanup"):
        PipelineConfig(**{**data, "map_cleanup": -1})


def test_the_bundled_folder_loads_as_before():
    """The bundled folder's settings; keys it predates (steps) take the defaults, and keys added
    since (redraw, one piece, image-side map guidance, self check, things apart, bite, colour splits)
    are off in a folder without them."""
    from pandiff.pipeline_config import DEFAULT_MODEL_DIR

    config = PipelineConfig.from_pretrained(DEFAULT_MODEL_DIR)
    # map guidance 0 since session 13, the SDE solver since session 15 (the image-judged sweeps)
    assert (config.guidance_scale, config.map_guidance_scale, config.map_cleanup) == (2.0, 0.0, 3)
    assert (config.num_inference_steps, config.scheduler, config.codec) == (20, "sde-dpmsolver++", "identity")
    assert config.map_scheduler is None  # the map samples with the scheduler too
    assert config.redraw_image is True  # set since session 10; a folder without the key does not redraw
    assert config.one_piece_instances is True  # set since session 13; off without the key
    # the self check since session 18 (2 more draws), 4 with things apart in sessions 21-29 (since
    # session 30 touching things are spread apart instead); a folder without the keys checks nothing
    # and lets things touch
    assert (config.self_check, config.avoid_touching) == (4, False)
    # things still touching bitten 2 px apart before the redraw since session 24; off without the key
    assert config.separate_touching == 2
    # pictures painting a thing in two colours drawn again since session 26; off without the key
    assert config.colour_split == 0.15
    # maps holding a thing no single world shape looks like drawn again since session 27; off
    # without the key
    assert config.misshapen == 0.95
    # a picture matching its map below IoU 0.5 drawn again, and samples still failing drawn again
    # whole up to twice, since session 28; off without the keys
    assert (config.picture_match, config.restarts) == (0.5, 2)
    # things snapped to world shapes since session 29, and moved 2 px apart since session 30, before
    # the redraw; off without the keys
    assert (config.snap_shapes, config.spread_things) == (True, 2)
    # co-generation (whose picture the redraw replaces) at 12 steps since session 31; a folder
    # without the key runs it at num_inference_steps
    assert config.cogen_steps == 12
    # pictures with the prompt's colours wrong drawn again since session 33; off without the key
    assert config.colour_check is True
    data = json.loads((DEFAULT_MODEL_DIR / PIPELINE_FILE).read_text())
    del data["self_check"], data["avoid_touching"], data["separate_touching"], data["colour_split"]
    del data["misshapen"], data["picture_match"], data["restarts"], data["snap_shapes"], data["spread_things"]
    del data["cogen_steps"], data["colour_check"]
    assert PipelineConfig.from_dict(data).cogen_steps == 0
    assert PipelineConfig.from_dict(data).colour_check is False
    assert PipelineConfig.from_dict(data).self_check == 0
    assert PipelineConfig.from_dict(data).avoid_touching is False
    assert PipelineConfig.from_dict(data).separate_touching == 0
    assert PipelineConfig.from_dict(data).colour_split == 0.0
    assert PipelineConfig.from_dict(data).misshapen == 0.0
    # picture match and restarts: off in older folders
    assert (PipelineConfig.from_dict(data).picture_match, PipelineConfig.from_dict(data).restarts) == (0.0, 0)
    assert (PipelineConfig.from_dict(data).snap_shapes, PipelineConfig.from_dict(data).spread_things) == (
        False,
        0,
    )
    del data["redraw_image"]
    del data["one_piece_instances"]
    assert PipelineConfig.from_dict(data).redraw_image is False
    assert PipelineConfig.from_dict(data).one_piece_instances is False
    data.pop("image_map_guidance_scale", None)  # a folder without the key: off
    assert PipelineConfig.from_dict(data).image_map_guidance_scale == 0.0


def test_a_folder_saved_with_redraw_redraws_unless_told_not_to(pipe, tmp_path):
    pipe.config.redraw_image = True
    try:
        pipe.save_pretrained(tmp_path / "redraw")
    finally:
        pipe.config.redraw_image = False
    folder = PanopticDiffusionPipeline.from_pretrained(tmp_path / "redraw")
    assert folder.config.redraw_image is True
    sizes, handle = _batch_sizes(folder)
    try:
        redrawn = folder("a red circle", num_inference_steps=2, generator=_gen())
        assert len(sizes) == 4  # two co-generation steps, then two map -> image steps
        sizes.clear()
        plain = folder("a red circle", num_inference_steps=2, generator=_gen(), redraw_image=False)
        assert len(sizes) == 2
    finally:
        handle.remove()
    reference = pipe("a red circle", num_inference_steps=2, generator=_gen(), redraw_image=True)
    assert np.array_equal(np.asarray(redrawn.images[0]), np.asarray(reference.images[0]))
    assert not np.array_equal(np.asarray(redrawn.images[0]), np.asarray(plain.images[0]))


def test_the_bundled_weights_have_the_recorded_fingerprint():
    """The fingerprint the CHANGELOG and reports since session 32 give for the bundled weights
    (unchanged since session 16): it moves only when the weights file does."""
    from pandiff.pipeline_config import DEFAULT_MODEL_DIR

    assert (
        PanopticDiffusionPipeline.from_pretrained(DEFAULT_MODEL_DIR).weights_fingerprint()
        == "7a3437fd5eb30bfc"
    )
