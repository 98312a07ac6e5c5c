"""The joint objective: modes, masking of losses, and that it trains a tiny model."""

import pytest
import torch

from pandiff.diffusion.loss import LossConfig, joint_loss
from pandiff.diffusion.schedule import NoiseSchedule
from pandiff.errors import ConfigError
from pandiff.model import pdm_from_preset


class Recorder(torch.nn.Module):
    """Returns fixed predictions and records its inputs."""

    def __init__(self, image_pred, map_pred):
        super().__init__()
        self.image_pred, self.map_pred, self.calls = image_pred, map_pred, []

    def forward(self, image, t_image, text, map_bits, t_map):
        self.calls.append((image, t_image, text, map_bits, t_map))
        return type("Out", (), {"image": self.image_pred, "map": self.map_pred})()


def _batch(b=64):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(b, 4, 4, 4, generator=g)
    bits = torch.randint(0, 2, (b, 5, 8, 8), generator=g).float() * 2 - 1
    text = torch.randn(b, 3, 8, generator=g)
    return latents, bits, text, torch.zeros(1, 3, 8)


def test_modes_timesteps_and_text_dropout():
    latents, bits, text, empty = _batch()
    schedule = NoiseSchedule()
    rec = Recorder(torch.zeros_like(latents), bits.clone())
    cfg = LossConfig(text_dropout=0.5, p_clean_map=0.3, p_clean_image=0.3)
    joint_loss(
        rec,
        schedule,
        schedule.training_scheduler(),
        latents,
        bits,
        text,
        empty,
        cfg,
        torch.Generator().manual_seed(1),
    )
    image, t_image, text_in, map_in, t_map = rec.calls[0]
    clean_map = t_map == 0
    clean_image = t_image == 0
    # a clean map is fed exactly (scaled bits), a clean image exactly
    assert torch.equal(map_in[clean_map], bits[clean_map] / 2.0)
    assert torch.equal(image[clean_image], latents[clean_image])
    # joint examples share one timestep
    joint = ~clean_map & ~clean_image
    assert torch.equal(t_image[joint], t_map[joint])
    assert 5 < int(clean_map.sum()) < 35 and 5 < int(clean_image.sum()) < 35
    dropped = (text_in == 0).all(dim=(1, 2))
    assert 15 < int(dropped.sum()) < 50
    assert torch.equal(text_in[~dropped], text[~dropped])


def test_losses_only_on_generated_modalities():
    latents, bits, text, empty = _batch()
    schedule = NoiseSchedule()
    # perfect map prediction, image prediction off by exactly 1 everywhere
    cfg = LossConfig(p_clean_map=0.0, p_clean_image=1.0, text_dropout=0.0)
    rec = Recorder(torch.full_like(latents, 1e3), bits.clone())
    out = joint_loss(rec, schedule, schedule.training_scheduler(), latents, bits, text, empty, cfg)
    assert out.image_loss.item() == 0.0  # every image was clean: no image loss however wrong
    assert out.map_loss.item() == 0.0
    cfg = LossConfig(p_clean_map=1.0, p_clean_image=0.0, text_dropout=0.0)
    rec = Recorder(torch.zeros_like(latents), -bits)
    out = joint_loss(rec, schedule, schedule.training_scheduler(), latents, bits, text, empty, cfg)
    assert out.map_loss.item() == 0.0  # maps were given clean: no map loss


def test_map_loss_value_and_weight():
    latents, bits, text, empty = _batch(8)
    schedule = NoiseSchedule()
    cfg = LossConfig(p_clean_map=0.0, p_clean_image=1.0, text_dropout=0.0, map_loss_weight=0.5)
    rec = Recorder(torch.zeros_like(latents), torch.zeros_like(bits))
    out = joint_loss(rec, schedule, schedule.training_scheduler(), latents, bits, text, empty, cfg)
    assert out.map_loss.item() == pytest.approx(1.0)  # (0 - (+-1))^2
    assert out.loss.item() == pytest.approx(0.5)


def test_tiny_model_loss_falls():
    torch.manual_seed(0)
    model = pdm_from_preset(
        "world-s",
        latent_size=4,
        patch_factor=2,
        map_bits=5,
        embed_dim=32,
        depth=2,
        num_heads=2,
        text_dim=8,
        text_len=3,
    )
    latents, bits, text, empty = _batch(16)
    bits = bits[..., :8, :8]
    schedule = NoiseSchedule()
    noiser = schedule.training_scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = LossConfig()
    losses = []
    for step in range(150):
        out = joint_loss(
            model, schedule, noiser, latents, bits, text, empty, cfg, torch.Generator().manual_seed(step % 4)
        )
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bad_config():
    with pytest.raises(ConfigError):
        LossConfig(p_clean_map=0.7, p_clean_image=0.7)
    with pytest.raises(ConfigError):
        LossConfig(text_dropout=1.5)


def _replay_draws(latents, seed):
    """The timesteps and image noise that ``joint_loss`` draws from a generator seeded ``seed``."""
    b = latents.shape[0]
    g = torch.Generator().manual_seed(seed)
    torch.rand(b, generator=g)  # modes
    torch.rand(b, generator=g)  # text dropout
    t = torch.randint(0, 1000, (b,), generator=g)
    return t, torch.randn(latents.shape, generator=g)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_image_target_follows_the_prediction_type(prediction):
    latents, bits, text, empty = _batch(8)
    schedule = NoiseSchedule(image_prediction=prediction)
    noiser = schedule.training_scheduler()
    cfg = LossConfig(p_clean_map=0.0, p_clean_image=0.0, text_dropout=0.0)
    gen_seed = 3
    # Replay the loss's own draws to build the exact target, then feed it back as the prediction.
    t, eps = _replay_draws(latents, gen_seed)
    target = noiser.get_velocity(latents, eps, t) if prediction == "v_prediction" else latents
    rec = Recorder(target, bits.clone())
    out = joint_loss(
        rec, schedule, noiser, latents, bits, text, empty, cfg, torch.Generator().manual_seed(gen_seed)
    )
    assert out.image_loss.item() == pytest.approx(0.0, abs=1e-10)
    rec_eps = Recorder(eps, bits.clone())
    out_eps = joint_loss(
        rec_eps, schedule, noiser, latents, bits, text, empty, cfg, torch.Generator().manual_seed(gen_seed)
    )
    assert out_eps.image_loss.item() > 0.01  # epsilon is not the target any more


def test_unknown_prediction_type():
    with pytest.raises(ConfigError, match="image_prediction"):
        NoiseSchedule(image_prediction="flow")


def test_x0_weight_equals_the_v_loss_up_to_its_cap():
    """x0 error weighted by 1 + SNR is the v loss of the same prediction; the cap clips it."""
    latents, bits, text, empty = _batch(16)
    schedule = NoiseSchedule(image_prediction="sample", beta_schedule="squaredcos_cap_v2")
    noiser = schedule.training_scheduler()
    seed = 5
    t, eps = _replay_draws(latents, seed)
    x_t = noiser.add_noise(latents, eps, t)
    guess = latents + 0.3 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(9))
    # the v implied by predicting `guess` as the clean image: v = (alpha x_t - x0) / sigma
    ab = noiser.alphas_cumprod[t].view(-1, 1, 1, 1)
    v_hat = (ab.sqrt() * x_t - guess) / (1 - ab).sqrt()
    v_loss = (v_hat - noiser.get_velocity(latents, eps, t)).pow(2).mean(dim=(1, 2, 3))
    plain = (guess - latents).pow(2).mean(dim=(1, 2, 3))
    cfg = {"p_clean_map": 0.0, "p_clean_image": 0.0, "text_dropout": 0.0}
    for cap, expected in (
        (1e9, v_loss.mean()),
        (1.0, plain.mean()),
        (4.0, (plain * (1 + ab.view(-1) / (1 - ab.view(-1))).clamp(max=4.0)).mean()),
    ):
        out = joint_loss(
            Recorder(guess, bits.clone()),
            schedule,
            noiser,
            latents,
            bits,
            text,
            empty,
            LossConfig(x0_weight_cap=cap, **cfg),
            torch.Generator().manual_seed(seed),
        )
        assert out.image_loss.item() == pytest.approx(expected.item(), rel=1e-4)
    with pytest.raises(ConfigError, match="x0_weight_cap"):
        LossConfig(x0_weight_cap=0.5)


def _two_touching_squares():
    """``1 2 6 6`` bits: background, and two squares side by side (cols 1-2 and 3-4, rows 1-4)
    that differ only in their second (instance) bit."""
    bits = -torch.ones(1, 2, 6, 6)
    bits[0, 0, 1:5, 1:5] = 1  # category bit: both squares
    bits[0, 1, 1:5, 3:5] = 1  # instance bit: the right square
    return bits


def test_map_boundaries_mark_both_sides_of_every_edge():
    from pandiff.diffusion.loss import boundary_weights, map_boundaries

    edge = map_boundaries(_two_touching_squares())[0, 0]
    expected = torch.zeros(6, 6)
    expected[0, 1:5] = expected[5, 1:5] = expected[1:5, 0] = expected[1:5, 5] = 1  # background side
    expected[1, 1:5] = expected[4, 1:5] = expected[1:5, 1] = expected[1:5, 4] = 1  # squares' rims
    expected[1:5, 2] = expected[1:5, 3] = 1  # the contact between the two squares, both sides
    assert torch.equal(edge, expected)
    assert map_boundaries(-torch.ones(1, 3, 5, 5)).sum() == 0  # one segment: no edge
    w = boundary_weights(_two_touching_squares(), (3, 3), 4.0)  # a coarser (latent) grid: max-pooled
    assert w.shape == (1, 1, 3, 3) and torch.equal(w[0, 0], torch.full((3, 3), 5.0))
    w = boundary_weights(_two_touching_squares(), (6, 6), 4.0)
    assert torch.equal(w[0, 0], 1 + 4 * expected)


def test_boundary_weight_counts_errors_on_edges_more():
    """An image error only on boundary pixels weighs (1 + w) times more, normalised by the total
    weight; an error only inside segments weighs less; w = 0 is the plain mean."""
    from pandiff.diffusion.loss import map_boundaries

    bits = _two_touching_squares()
    latents = torch.zeros(1, 3, 6, 6)
    edge = map_boundaries(bits)  # 1 1 6 6
    n_edge, n = edge.sum().item(), 36
    schedule = NoiseSchedule(image_prediction="sample", beta_schedule="squaredcos_cap_v2")
    cfg = {"p_clean_map": 1.0, "p_clean_image": 0.0, "text_dropout": 0.0}
    text, empty = torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)

    def loss(pred, w):
        rec = Recorder(pred, bits.clone())
        out = joint_loss(rec, schedule, schedule.training_scheduler(), latents, bits, text, empty,
                         LossConfig(image_boundary_weight=w, **cfg))  # fmt: skip
        return out.image_loss.item()

    on_edge = edge.expand(1, 3, 6, 6).clone()  # error 1 on every boundary pixel, 0 elsewhere
    inside = 1 - on_edge
    assert loss(on_edge, 0.0) == pytest.approx(n_edge / n)
    assert loss(on_edge, 3.0) == pytest.approx(4 * n_edge / (n + 3 * n_edge))
    assert loss(inside, 3.0) == pytest.approx((n - n_edge) / (n + 3 * n_edge))
    assert loss(torch.ones_like(latents), 3.0) == pytest.approx(1.0)  # a uniform error keeps its scale
    with pytest.raises(ConfigError, match="image_boundary_weight"):
        LossConfig(image_boundary_weight=-1.0)
