"""Print the parameter counts (total / trainable) of every model preset x variant.

Models are built on the meta device (shapes only, no memory, no initialisation), so the whole
table takes a few seconds. Run: ``python benchmarks/param_counts.py``.
"""

from __future__ import annotations

import torch

from pandiff.model import PRESETS, VARIANTS, pdm_from_preset


def count(name: str, variant: str) -> tuple[int, int]:
    """(total, trainable) parameters of one preset x variant."""
    with torch.device("meta"):
        model = pdm_from_preset(name, variant)
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def main() -> None:
    print(f"{'preset':<14} {'variant':<12} {'total':>14} {'trainable':>14}")
    for name in PRESETS:
        for variant in VARIANTS:
            total, trainable = count(name, variant)
            print(f"{name:<14} {variant:<12} {total:>14,} {trainable:>14,}")


if __name__ == "__main__":
    main()
