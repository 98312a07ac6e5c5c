"""Lockstep sampler against a tiny random PDM: shapes, determinism, conditioning, batched guidance;
and against a stub model with known branch outputs: the guidance formula, exactly."""

from types import SimpleNamespace

import pytest
import torch

from pandiff.diffusion.sampler import LockstepSampler, lockstep_timesteps
from pandiff.diffusion.schedule import SCHEDULERS, NoiseSchedule
from pandiff.errors import ConfigError
from pandiff.model import pdm_from_preset
from pandiff.pipeline_config import SCHEDULER_NAMES

LATENT = (4, 8, 8)
MAP = (7, 16, 16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = pdm_from_preset(
        "world-s", latent_size=8, patch_factor=2, embed_dim=32, depth=2, num_heads=2, text_dim=16, text_len=6
    )
    # Random init leaves the zero-initialised parts silent; perturb every weight so that all inputs
    # (text, map, timesteps) influence the outputs and the checks below have teeth.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _text(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, 16, generator=g), torch.randn(1, 6, 16, generator=g)


def _sample(model, steps=4, seed=0, scheduler="dpmsolver++", batch_guidance=True, prediction="epsilon", **kw):
    text, empty = _text()
    schedule = NoiseSchedule(image_prediction=prediction)
    sampler = LockstepSampler(model, schedule, scheduler, batch_guidance=batch_guidance)
    return sampler.sample(
        text,
        empty,
        LATENT,
        MAP,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_shapes_and_ranges(model, scheduler, prediction):
    out = _sample(model, scheduler=scheduler, prediction=prediction)
    assert out.latents.shape == (2, *LATENT)
    assert out.map_bits.shape == (2, *MAP)
    assert out.map_bits.abs().max() <= 1.0
    assert torch.isfinite(out.latents).all()


def test_same_seed_same_output_other_seed_differs(model):
    a, b, c = _sample(model, seed=3), _sample(model, seed=3), _sample(model, seed=4)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.map_bits, b.map_bits)
    assert not torch.equal(a.latents, c.latents)


def test_sde_solver_adds_noise_each_step_and_stays_reproducible(model):
    """sde-dpmsolver++ starts from the same noise as dpmsolver++ (same seed) but draws fresh noise
    at every step from the generator: the same seed repeats it, and a different draw inside the
    steps (another generator state after the start) changes it."""
    schedule = NoiseSchedule(image_prediction="sample")
    sde = schedule.inference_scheduler("sde-dpmsolver++", "sample")
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.solver_order == 2
    a = _sample(model, scheduler="sde-dpmsolver++", prediction="sample", seed=3)
    b = _sample(model, scheduler="sde-dpmsolver++", prediction="sample", seed=3)
    ode = _sample(model, scheduler="dpmsolver++", prediction="sample", seed=3)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.map_bits, b.map_bits)
    assert (a.latents - ode.latents).abs().max() > 1e-3
    assert (a.map_bits - ode.map_bits).abs().max() > 1e-3
    # one step from the same state with two generators: the noise the step adds differs
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(0))
    outs = []
    for seed in (0, 1):
        sch = type(sde).from_config(sde.config)
        sch.set_timesteps(4)
        out = sch.step(
            torch.zeros_like(x), sch.timesteps[0], x, generator=torch.Generator().manual_seed(seed)
        )
        outs.append(out.prev_sample)
    assert (outs[0] - outs[1]).abs().max() > 1e-2


def test_batched_guidance_equals_separate_forwards(model):
    """One batched forward of a real transformer gives the numbers of one forward per branch (how
    the branches are then combined is checked against the formula by the stub tests below)."""
    batched = _sample(model, guidance_scale=2.0, map_guidance_scale=1.5, batch_guidance=True)
    separate = _sample(model, guidance_scale=2.0, map_guidance_scale=1.5, batch_guidance=False)
    torch.testing.assert_close(batched.latents, separate.latents, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched.map_bits, separate.map_bits, rtol=1e-4, atol=1e-5)


def test_guidance_is_one_forward_per_step(model):
    calls = []
    handle = model.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        _sample(model, steps=3, guidance_scale=2.0, map_guidance_scale=1.0)
    finally:
        handle.remove()
    assert calls == [6, 6, 6]  # cond + uncond + map-free branches, batch 2 each, one call per step


def test_guidance_changes_the_result(model):
    """By far more than the ~1e-7 that a different batch shape alone changes (guidance off, the
    branches still run), so a guidance term that is lost fails here too."""
    plain = _sample(model, guidance_scale=0.0, map_guidance_scale=0.0)
    guided = _sample(model, guidance_scale=3.0, map_guidance_scale=0.0)
    map_guided = _sample(model, guidance_scale=0.0, map_guidance_scale=3.0)
    assert (plain.latents - guided.latents).abs().max() > 0.05
    assert (plain.map_bits - map_guided.map_bits).abs().max() > 0.05


def _bits(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (2, *MAP), generator=g).float() * 2 - 1


def test_clean_given_map_is_returned_and_conditions_the_image(model):
    m1, m2 = _bits(5), _bits(6)
    out1 = _sample(model, map_bits=m1)
    out2 = _sample(model, map_bits=m2)
    assert torch.equal(out1.map_bits, m1)
    assert not torch.allclose(out1.latents, out2.latents)


def test_given_map_is_fed_clean_at_timestep_zero(model):
    seen = []
    handle = model.register_forward_hook(
        lambda mod, args, out: seen.append((args[3].clone(), args[4].clone()))
    )
    m = _bits(7)
    try:
        _sample(model, steps=3, map_bits=m)
    finally:
        handle.remove()
    schedule = NoiseSchedule()
    for map_in, t_map in seen:
        assert torch.equal(t_map, torch.zeros_like(t_map))
        assert torch.equal(map_in[:2], schedule.bits_to_diffusion(m))


def test_given_image_is_kept_and_conditions_the_map(model):
    g = torch.Generator().manual_seed(8)
    img1, img2 = torch.randn(2, *LATENT, generator=g), torch.randn(2, *LATENT, generator=g)
    out1, out2 = _sample(model, image=img1), _sample(model, image=img2)
    assert torch.equal(out1.latents, img1)
    assert not torch.allclose(out1.map_bits, out2.map_bits)


def test_inpainting_keeps_the_unmasked_map(model):
    m = _bits(9)
    mask = torch.zeros(2, 1, *MAP[1:])
    mask[..., :, 8:] = 1  # generate the right half only
    out = _sample(model, map_bits=m, map_mask=mask)
    assert torch.equal(out.map_bits[..., :8], m[..., :8])
    assert not torch.equal(out.map_bits[..., 8:], m[..., 8:])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance"),
        ({"map_mask": torch.ones(2, 1, 16, 16)}, "mask needs"),
        ({"map_bits": torch.ones(2, *MAP), "image": torch.zeros(2, *LATENT)}, "nothing to generate"),
    ],
)
def test_errors(model, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _sample(model, **kwargs)


def test_unknown_scheduler_is_refused(model):
    with pytest.raises(ConfigError, match="unknown scheduler 'euler'"):
        LockstepSampler(model, NoiseSchedule(), "euler")
    with pytest.raises(ConfigError, match="unknown scheduler 'heun'"):
        LockstepSampler(model, NoiseSchedule(), "dpmsolver++", map_scheduler="heun")


def test_the_names_a_pipeline_folder_accepts_are_the_samplers_there_are():
    """PipelineConfig and the CLI list scheduler names without importing torch; they must be the
    names the sampler builds (the shapes test runs every one of them)."""
    assert SCHEDULER_NAMES == tuple(SCHEDULERS)


def test_image_prediction_type_changes_the_solver_update(model):
    eps, v = _sample(model, prediction="epsilon"), _sample(model, prediction="v_prediction")
    x0 = _sample(model, prediction="sample")
    assert not torch.allclose(eps.latents, v.latents)
    assert not torch.allclose(x0.latents, eps.latents) and not torch.allclose(x0.latents, v.latents)


# --- the guidance formula, exactly, with a stub model whose branch outputs are known ---

STUB_B = 2


def _branch_outputs(seed: int = 11) -> dict[str, dict[str, torch.Tensor]]:
    """Fixed, different outputs per branch and per sample; the map values are small, so every
    guided combination below stays inside [-1, 1] (the sampler clamps the map's clean bits)."""
    g = torch.Generator().manual_seed(seed)
    return {
        branch: {
            "image": torch.randn(STUB_B, *LATENT, generator=g),
            "map": 0.1 * (2 * torch.rand(STUB_B, *MAP, generator=g) - 1),
        }
        for branch in ("cond", "uncond", "free")
    }


def _stub_output(outputs, rows: list[str]) -> SimpleNamespace:
    """A stub model's output: row r is ``outputs[rows[r]]``, sample i of a branch being that
    branch's i-th row in the call."""
    index = {name: 0 for name in outputs}
    images, maps = [], []
    for name in rows:
        images.append(outputs[name]["image"][index[name]])
        maps.append(outputs[name]["map"][index[name]])
        index[name] += 1
    return SimpleNamespace(image=torch.stack(images), map=torch.stack(maps))


class _StubModel:
    """Returns ``outputs[branch]`` for each row, the branch read off the inputs as the sampler's
    contract defines it: the empty prompt is the text-unconditional branch; a map at the last
    training timestep is the map-free branch (the sampling timesteps here never reach it)."""

    def __init__(self, outputs, empty_text, last_t):
        self.outputs, self.empty_text, self.last_t = outputs, empty_text, last_t
        self.seen: list[list[str]] = []  # branch of each row, per call

    def __call__(self, image, t_image, text, map_in, t_map):
        rows = []
        for r in range(image.shape[0]):
            if torch.equal(text[r], self.empty_text[0]):
                rows.append("uncond")
            elif int(t_map[r]) == self.last_t and int(t_image[r]) != self.last_t:
                rows.append("free")
            else:
                rows.append("cond")
        self.seen.append(rows)
        return _stub_output(self.outputs, rows)


def _recording_schedule(prediction: str, received: dict[tuple, list[torch.Tensor]]) -> NoiseSchedule:
    """A schedule whose sampling schedulers record the model output each step is given (keyed by
    its shape: image latents and map bits differ), before the unchanged diffusers step."""

    class Recording(NoiseSchedule):
        def inference_scheduler(self, name, prediction_type):
            scheduler = super().inference_scheduler(name, prediction_type)
            step = scheduler.step

            def recorded(model_output, timestep, sample, **kwargs):
                received.setdefault(tuple(model_output.shape[1:]), []).append(model_output.clone())
                return step(model_output, timestep, sample, **kwargs)

            scheduler.step = recorded
            return scheduler

    return Recording(image_prediction=prediction)


@pytest.mark.parametrize("map_scheduler", SCHEDULER_NAMES)
@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_mixed_samplers_step_image_and_map_at_one_timestep(model, scheduler, map_scheduler):
    """Every image sampler with every map sampler: both schedulers hold one timestep grid (their
    own grids differ across families: DPM-Solver++ from 999, DDIM/DDPM from 950 down to 0) and the
    sampler steps each through exactly that grid, so image and map stay at one noise level as in
    training."""
    stepped: dict[str, list[int]] = {"image": [], "map": []}
    made: dict[str, object] = {}

    class Recording(NoiseSchedule):
        def inference_scheduler(self, name, prediction_type):
            sched = super().inference_scheduler(name, prediction_type)
            step, key = sched.step, "map" if prediction_type == "sample" else "image"
            made[key] = sched

            def recorded(model_output, timestep, sample, **kwargs):
                stepped[key].append(int(timestep))
                return step(model_output, timestep, sample, **kwargs)

            sched.step = recorded
            return sched

    text, empty = _text()
    sampler = LockstepSampler(model, Recording(), scheduler, map_scheduler=map_scheduler)
    out = sampler.sample(
        text, empty, LATENT, MAP, num_inference_steps=4, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(out.latents).all() and out.map_bits.abs().max() <= 1.0
    image_grid, map_grid = (made[k].timesteps.tolist() for k in ("image", "map"))
    assert len(image_grid) == 4 and image_grid == map_grid  # one grid ...
    assert stepped["image"] == image_grid and stepped["map"] == map_grid  # ... stepped as it is
    assert image_grid == sorted(image_grid, reverse=True)


def test_the_image_keeps_its_grid_unless_the_maps_sampler_cannot_follow():
    """DPM-Solver++ and DDPM take custom timesteps, DDIM does not: the map follows the image's grid,
    except a DDIM map, which the image follows."""
    schedule = NoiseSchedule()

    def grids(image_name, map_name):
        image, map_ = (
            schedule.inference_scheduler(n, p) for n, p in ((image_name, "epsilon"), (map_name, "sample"))
        )
        lockstep_timesteps(image, map_, 20, "cpu")
        return image.timesteps.tolist(), map_.timesteps.tolist()

    dpm = [999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450, 400, 350, 300, 250, 200, 150, 100, 50]
    leading = list(range(950, -1, -50))  # DDIM's and DDPM's own: 950, 900, ..., 0
    assert grids("sde-dpmsolver++", "ddpm") == (dpm, dpm)
    assert grids("ddpm", "sde-dpmsolver++") == (leading, leading)
    assert grids("dpmsolver++", "ddim") == (leading, leading)
    assert grids("ddim", "ddpm") == (leading, leading)


@pytest.mark.parametrize("batch_guidance", [True, False])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize(
    "s_text, s_map, branches",
    [
        (2.0, 0.0, {"cond", "uncond"}),  # text guidance only
        (0.0, 1.5, {"cond", "free"}),  # map guidance only
        (2.0, 1.5, {"cond", "uncond", "free"}),  # both
    ],
    ids=["text-only", "map-only", "both"],
)
def test_guidance_combines_the_branches_by_the_formula(s_text, s_map, branches, prediction, batch_guidance):
    """image = e_c + s_text (e_c - e_u); map = m_c + s_text (m_c - m_u) + s_map (m_c - m_free),
    at every step, whether the branches run as one forward or one forward each."""
    steps = 3
    text = torch.ones(STUB_B, 6, 16)
    empty = torch.zeros(1, 6, 16)
    out = _branch_outputs()
    received: dict[tuple, list[torch.Tensor]] = {}
    schedule = _recording_schedule(prediction, received)
    stub = _StubModel(out, empty, schedule.num_train_timesteps - 1)
    sampler = LockstepSampler(stub, schedule, "ddim", batch_guidance=batch_guidance)
    sampler.sample(
        text,
        empty,
        LATENT,
        MAP,
        num_inference_steps=steps,
        guidance_scale=s_text,
        map_guidance_scale=s_map,
        generator=torch.Generator().manual_seed(0),
    )

    c, u, f = out["cond"], out["uncond"], out["free"]
    image = c["image"] + s_text * (c["image"] - u["image"])
    bits = c["map"] + s_text * (c["map"] - u["map"]) + s_map * (c["map"] - f["map"])
    assert bits.abs().max() < 1.0  # the sampler's clamp must not hide a wrong combination
    assert len(received[LATENT]) == steps and len(received[MAP]) == steps
    for given in received[LATENT]:
        torch.testing.assert_close(given, image, rtol=1e-6, atol=1e-6)
    for given in received[MAP]:  # the map scheduler works in diffusion space: bits / bit scale
        torch.testing.assert_close(given, schedule.bits_to_diffusion(bits), rtol=1e-6, atol=1e-6)
    assert {name for rows in stub.seen for name in rows} == branches
    assert len(stub.seen) == steps * (1 if batch_guidance else len(branches))
    assert all(len(rows) == STUB_B * (len(branches) if batch_guidance else 1) for rows in stub.seen)


@pytest.mark.parametrize("batch_guidance", [True, False])
def test_image_only_model_samples_images_with_text_guidance(batch_guidance):
    torch.manual_seed(0)
    uvit = pdm_from_preset(
        "world-s", "image-only", latent_size=8, embed_dim=32, depth=2, num_heads=2, text_dim=16, text_len=6
    ).eval()
    text, empty = _text()
    calls = []
    handle = uvit.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    sampler = LockstepSampler(
        uvit, NoiseSchedule(image_prediction="v_prediction"), batch_guidance=batch_guidance
    )
    try:
        out = sampler.sample(text, empty, LATENT, None, num_inference_steps=3, guidance_scale=2.0)
    finally:
        handle.remove()
    assert out.map_bits is None and out.latents.shape == (2, *LATENT)
    assert torch.isfinite(out.latents).all()
    assert calls == ([4, 4, 4] if batch_guidance else [2] * 6)  # cond + uncond, no map branch
    with pytest.raises(ConfigError, match="image-only"):
        sampler.sample(text, empty, LATENT, None, map_bits=torch.ones(2, *MAP))


class _MapGivenStub:
    """For map -> image: a row fed the given map clean (``clean_map`` at timestep 0) is ``cond``
    (or ``uncond`` with the empty prompt); a row fed another map, at the image's own timestep, is
    the image-side map guidance's ``noised_map`` branch. Records that branch's map inputs."""

    def __init__(self, outputs, empty_text, clean_map):
        self.outputs, self.empty_text, self.clean_map = outputs, empty_text, clean_map
        self.seen: list[list[str]] = []
        self.noised_maps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (map input, timestep)

    def __call__(self, image, t_image, text, map_in, t_map):
        rows = []
        for r in range(image.shape[0]):
            if torch.equal(map_in[r], self.clean_map[r % STUB_B]):
                assert int(t_map[r]) == 0
                rows.append("uncond" if torch.equal(text[r], self.empty_text[0]) else "cond")
            else:
                assert int(t_map[r]) == int(t_image[r]) and not torch.equal(text[r], self.empty_text[0])
                rows.append("noised_map")
        self.seen.append(rows)
        noised = [r for r, name in enumerate(rows) if name == "noised_map"]
        if noised:
            self.noised_maps.append((map_in[noised].clone(), t_map[noised].clone()))
        return _stub_output(self.outputs, rows)


@pytest.mark.parametrize("batch_guidance", [True, False])
@pytest.mark.parametrize("s_text, s_img_map", [(2.0, 1.5), (0.0, 3.0), (2.0, 0.0)])
def test_image_map_guidance_for_a_given_map_by_the_formula(s_text, s_img_map, batch_guidance):
    """map -> image: image = e_c + s_text (e_c - e_u) + s (e_c - e_n), e_n the prediction with the
    given map noised, with the sampler's map-free noise, to the image's own timestep (the joint
    training mode); s = 0 runs no such branch."""
    steps = 3
    text, empty = torch.ones(STUB_B, 6, 16), torch.zeros(1, 6, 16)
    g = torch.Generator().manual_seed(11)
    out = {
        name: {"image": torch.randn(STUB_B, *LATENT, generator=g), "map": torch.zeros(STUB_B, *MAP)}
        for name in ("cond", "uncond", "noised_map")
    }
    received: dict[tuple, list[torch.Tensor]] = {}
    schedule = _recording_schedule("epsilon", received)
    bits = _bits(3)
    stub = _MapGivenStub(out, empty, schedule.bits_to_diffusion(bits))
    sampler = LockstepSampler(stub, schedule, "ddim", batch_guidance=batch_guidance)
    result = sampler.sample(
        text, empty, LATENT, MAP, num_inference_steps=steps, guidance_scale=s_text,
        image_map_guidance_scale=s_img_map, map_bits=bits, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip

    c, u, n = out["cond"]["image"], out["uncond"]["image"], out["noised_map"]["image"]
    expected = c + s_text * (c - u) + s_img_map * (c - n)
    assert len(received[LATENT]) == steps and MAP not in received  # the given map is not stepped
    for given in received[LATENT]:
        torch.testing.assert_close(given, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(result.map_bits, bits)
    branches = {"cond"} | ({"uncond"} if s_text else set()) | ({"noised_map"} if s_img_map else set())
    assert {name for rows in stub.seen for name in rows} == branches
    if not s_img_map:
        assert stub.noised_maps == []
        return
    # the noised map: the given bits' diffusion values noised to t with the map-free noise, which
    # is the generator's third draw (image noise, map noise, map-free noise)
    gen = torch.Generator().manual_seed(0)
    for shape in ((STUB_B, *LATENT), (STUB_B, *MAP)):
        torch.randn(shape, generator=gen)
    free = torch.randn((STUB_B, *MAP), generator=gen)
    noiser = schedule.training_scheduler()
    assert len(stub.noised_maps) == steps
    for map_in, t in stub.noised_maps:
        torch.testing.assert_close(map_in, noiser.add_noise(schedule.bits_to_diffusion(bits), free, t))


def test_image_map_guidance_is_ignored_without_a_given_map(model):
    """Co-generation and image -> map have no given map to follow: the setting changes nothing
    and adds no forward."""
    calls = []
    handle = model.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        plain = _sample(model, steps=2, guidance_scale=2.0)
        asked = _sample(model, steps=2, guidance_scale=2.0, image_map_guidance_scale=3.0)
    finally:
        handle.remove()
    assert torch.equal(plain.latents, asked.latents) and torch.equal(plain.map_bits, asked.map_bits)
    assert calls == [6, 6, 6, 6]


def test_image_map_guidance_pulls_a_real_model_towards_the_given_map(model):
    """With a real (random) transformer the term changes the picture, and 2 forwards per step
    become 3 (cond, uncond, noised map)."""
    m = _bits(5)
    calls = []
    handle = model.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        plain = _sample(model, steps=2, guidance_scale=2.0, map_bits=m)
        guided = _sample(model, steps=2, guidance_scale=2.0, map_bits=m, image_map_guidance_scale=2.0)
    finally:
        handle.remove()
    assert calls == [4, 4, 6, 6]
    assert (plain.latents - guided.latents).abs().max() > 0.05
    with pytest.raises(ConfigError, match="image_map_guidance_scale"):
        _sample(model, map_bits=m, image_map_guidance_scale=-1.0)
