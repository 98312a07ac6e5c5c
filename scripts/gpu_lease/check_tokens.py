"""Device side: every token id the world's captions use must be one the pruned MiniLM kept."""

import json
import sys
from pathlib import Path

from safetensors import safe_open
from transformers import AutoTokenizer

world, minilm = Path(sys.argv[1]), Path(sys.argv[2])
with safe_open(str(minilm / "pruned.safetensors"), "pt") as f:
    key = next(k for k in f.keys() if k.startswith("__ids__."))  # noqa: SIM118 (a safe_open handle)
    kept = set(f.get_tensor(key).tolist())
tok = AutoTokenizer.from_pretrained(str(minilm))
missing, n = {}, 0
for split in ("train", "val"):
    caps = [
        a["caption"]
        for a in json.loads((world / "annotations" / f"captions_{split}2017.json").read_text())["annotations"]
    ]
    n += len(caps)
    for i in range(0, len(caps), 10000):
        for row in tok(caps[i : i + 10000])["input_ids"]:
            for t in row:
                if t not in kept:
                    missing[t] = missing.get(t, 0) + 1
print(f"token check: {n} captions, {len(missing)} token ids not kept: {sorted(missing.items())[:20]}")
sys.exit(1 if missing else 0)
