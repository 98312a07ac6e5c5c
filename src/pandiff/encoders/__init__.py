"""Encoders: prompts -> token features (:mod:`.text`) and images <-> latents (:mod:`.codec`)."""

from typing import TYPE_CHECKING

from pandiff._lazy import lazy_exports

# Imported on first use (PEP 562): `pandiff train-codec --help` does not load torch.
_EXPORTS = {
    "ClipTextEncoder": "pandiff.encoders.text",
    "IdentityCodec": "pandiff.encoders.codec",
    "ImageCodec": "pandiff.encoders.codec",
    "TextEncoder": "pandiff.encoders.text",
    "VaeCodec": "pandiff.encoders.codec",
    "load_codec": "pandiff.encoders.codec",
    "load_text_encoder": "pandiff.encoders.text",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
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
