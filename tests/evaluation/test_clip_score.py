"""CLIP score through torchmetrics with a tiny random CLIP model built offline."""

import pytest
import torch

from pandiff.errors import DataError, WeightsError
from pandiff.evaluation.clip_score import ClipScorer, clip_loader


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random CLIPModel (32-d towers, 16-d projection) and its processor, saved to a folder."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from pandiff.encoders.text import save_tiny_clip_text_encoder

    folder = tmp_path_factory.mktemp("clip")
    save_tiny_clip_text_encoder(folder / "text")  # for its offline byte-level tokenizer
    tokenizer = CLIPTokenizer.from_pretrained(folder / "text")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    vision_cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=16)
    )
    model.save_pretrained(folder / "clip")
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder / "clip")
    return folder / "clip"


def by_hand(folder, images, prompts) -> float:
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=pixels).pooler_output
        tokens = processor(text=prompts, return_tensors="pt", padding=True)
        txt = model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    return max(0.0, float(100 * cos.mean()))


def test_score_equals_100_times_cosine(tiny_clip_dir):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=gen)
    prompts = ["a red circle", "two blue squares on the grass", "a star"]
    scorer = ClipScorer(clip_loader(tiny_clip_dir))
    scorer.update(images[:2], prompts[:2])
    scorer.update(images[2:], prompts[2:])
    expected = by_hand(tiny_clip_dir, images, prompts)
    assert expected > 0  # the clamp at 0 would hide a wrong score
    assert scorer.compute() == pytest.approx(expected, abs=1e-3)


def test_missing_weights_and_bad_inputs(tiny_clip_dir, tmp_path):
    with pytest.raises(WeightsError, match="--clip"):
        clip_loader(tmp_path / "nowhere")()
    scorer = ClipScorer(clip_loader(tiny_clip_dir))
    with pytest.raises(DataError, match="one prompt per image"):
        scorer.update(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["only one"])
    with pytest.raises(DataError, match="at least one image"):
        scorer.compute()
