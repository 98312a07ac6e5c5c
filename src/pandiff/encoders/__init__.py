"""Encoders: prompts -> token features (:mod:`.text`) and images <-> latents (:mod:`.codec`)."""

from pandiff.encoders.codec import IdentityCodec, ImageCodec, VaeCodec, load_codec
from pandiff.encoders.text import ClipTextEncoder, TextEncoder, load_text_encoder

__all__ = [
    "ClipTextEncoder",
    "IdentityCodec",
    "ImageCodec",
    "TextEncoder",
    "VaeCodec",
    "load_codec",
    "load_text_encoder",
]
