"""FID and KID between real and generated images, with torchmetrics, on any feature extractor.

A feature extractor is an ``nn.Module`` that maps ``N 3 H W`` uint8 images to ``N d`` features
and has an int ``num_features``. Two are used:

* :func:`inception_extractor`: the Inception-v3 pool features (d = 2048) of the FID literature,
  through torchmetrics' ``NoTrainInceptionV3``; needs the optional ``torch-fidelity`` package and
  its weight file (``weights-inception-2015-12-05-6726825d.pth``) on disk; nothing is downloaded.
* the built-in world's judge (:meth:`pandiff.world.judge.JudgeNet.features`), so world
  FID/KID need no downloaded weights at all.

:class:`FeatureDistance` extracts features once per image and feeds them to torchmetrics'
``FrechetInceptionDistance`` and ``KernelInceptionDistance`` through an identity module, so the
two metrics share one pass of the (expensive) extractor. KID's subset size is lowered to the
sample count when fewer than 1000 images are compared (torchmetrics refuses larger subsets).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from pandiff.errors import ConfigError, DataError, WeightsError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class _Precomputed(nn.Module):
    """Identity "extractor" over ``N d`` feature rows, so torchmetrics accumulates given features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class _Inception(nn.Module):
    """Inception-v3 pool features (2048-d) of ``N 3 H W`` uint8 images (resized to 299 inside)."""

    num_features = 2048

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).reshape(images.shape[0], -1)  # N 2048


def find_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weight file: ``path`` (a file, or a folder holding it), else torch's hub cache.

    Raises:
        WeightsError: the file is absent, saying where to put it.
    """
    if path is not None:
        path = Path(path)
        candidate = path / INCEPTION_FILE if path.is_dir() else path
    else:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if candidate.is_file():
        return candidate
    raise WeightsError(
        f"FID/KID on Inception features need the weight file {INCEPTION_FILE} (looked at "
        f"{candidate}); download it from {INCEPTION_URL} and pass "
        "--inception PATH (or put it in torch's hub cache, checkpoints/)"
    )


def inception_extractor(path: str | Path | None = None) -> nn.Module:
    """Inception-v3 (FID's network) from local weights; see :func:`find_inception_weights`.

    Raises:
        WeightsError: ``torch-fidelity`` is not installed or the weight file is absent.
    """
    if importlib.util.find_spec("torch_fidelity") is None:
        raise WeightsError(
            "FID/KID on Inception features need the torch-fidelity package for the network "
            "definition: pip install torch-fidelity (then pass --inception PATH to its weight file)"
        )
    weights = find_inception_weights(path)
    try:
        return _Inception(weights).eval()
    except (RuntimeError, OSError, KeyError) as exc:
        raise WeightsError(
            f"cannot load Inception weights from {weights} ({exc}); download them again"
        ) from None


class FeatureDistance:
    """FID and KID between real and generated images on one feature extractor.

    Args:
        extractor: ``N 3 H W`` uint8 images -> ``N d`` features, with an int ``num_features``.
        kid_subsets: KID's number of random subsets.
        kid_subset_size: KID's subset size (lowered to the smaller sample count when needed).
        seed: seed of KID's subset sampling, so a report is reproducible.
    """

    def __init__(
        self, extractor: nn.Module, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0
    ) -> None:
        if not isinstance(getattr(extractor, "num_features", None), int):
            raise ConfigError(
                "a feature extractor must have an int attribute num_features (its output width d)"
            )
        self.extractor = extractor.eval()
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.features: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add ``N 3 H W`` uint8 images to the real or the generated set."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected N 3 H W uint8 images, got {tuple(images.shape)} {images.dtype}")
        device = next(self.extractor.parameters(), torch.empty(0)).device
        self.add_features(self.extractor(images.to(device)).double().cpu(), real)

    def add_features(self, features: torch.Tensor, real: bool) -> None:
        """Add precomputed ``N d`` features to the real or the generated set."""
        if features.ndim != 2 or features.shape[1] != self.extractor.num_features:
            raise DataError(
                f"expected N x {self.extractor.num_features} features, got {tuple(features.shape)}"
            )
        self.features[real].append(features.double())

    def compute(self) -> dict[str, float]:
        """``fid``, ``kid_mean``, ``kid_std``, ``n_real``, ``n_generated``, ``kid_subset_size``."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        real = torch.cat(self.features[True]) if self.features[True] else torch.empty(0, 1)
        fake = torch.cat(self.features[False]) if self.features[False] else torch.empty(0, 1)
        n = min(len(real), len(fake))
        if n < 2:
            raise DataError(
                f"FID/KID need at least 2 real and 2 generated images, got {len(real)} and {len(fake)}"
            )
        d = self.extractor.num_features
        fid = FrechetInceptionDistance(feature=_Precomputed(d))
        fid.update(real, real=True)
        fid.update(fake, real=False)
        subset = min(self.kid_subset_size, n)
        with warnings.catch_warnings():  # "KID keeps all features in memory": ours already are
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(
                feature=_Precomputed(d), subsets=self.kid_subsets, subset_size=subset
            )
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            kid_mean, kid_std = kid.compute()
        return {
            "fid": float(fid.compute()),
            "kid_mean": float(kid_mean),
            "kid_std": float(kid_std),
            "n_real": len(real),
            "n_generated": len(fake),
            "kid_subset_size": subset,
        }
