"""A newcomer's path (#20): help with examples and defaults, unknown prompt words named, segment's
own output folder and summary, inputs checked before the weights load, a run folder as --model."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from pandiff.cli import SUBCOMMANDS, HelpFormatter, build_parser, main
from pandiff.errors import ConfigError


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_help_ends_with_examples_and_shows_every_default(name):
    sub = _subparsers()[name]
    text = sub.format_help()
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 2 <= len([e for e in examples if e.startswith(f"  pandiff {name} ")]) <= 3, text
    formatter = HelpFormatter(name)
    for action in sub._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction) or action.required:
            continue
        if action.default is False:  # a flag: off unless given
            continue
        assert "default" in formatter._get_help_string(action), (name, action.option_strings)


def test_generate_help_lists_the_vocabulary():
    text = _subparsers()["generate"].format_help()
    for word in ("circle", "crosses", "purple", "small", "four", "water", "to the left of"):
        assert word in text
    assert '"two white circles, one above the other, on the floor"' in text


def test_unknown_words_are_named_on_the_command_line_without_a_progress_bar(
    tiny_pipeline_dir, tmp_path, capsys
):
    args = ["generate", "a cat sitting on the grass", "--model", str(tiny_pipeline_dir), "--n", "1"]
    assert main([*args, "--steps", "1", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "pandiff generate: warning: the model never saw the word(s) cat, sitting" in err
    assert "Loading weights" not in err


def test_the_api_warns_about_unknown_words(tiny_pipeline_dir):
    from pandiff.pipeline import PanopticDiffusionPipeline

    pipe = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    with pytest.warns(UserWarning, match=r"never saw the word\(s\) sofa"):
        pipe.check_prompts("two red circles on a sofa")
    assert pipe.unknown_words("two red circles on the grass") == []


def test_segment_needs_no_prompt_and_writes_its_own_folder(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save("picture.png")
    assert main(["segment", "picture.png", "--model", str(tiny_pipeline_dir), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("segmented 1 image(s) to outputs/segment")
    assert (tmp_path / "outputs/segment/000_map.png").is_file()
    assert not (tmp_path / "outputs/generate").exists()


def test_a_bad_map_fails_before_the_weights_load(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    from pandiff.pipeline import PanopticDiffusionPipeline

    def never(*args, **kwargs):
        raise AssertionError("the weights were loaded before the --map was checked")

    monkeypatch.setattr(PanopticDiffusionPipeline, "from_pretrained", never)
    picture = tmp_path / "photo.png"  # an image, not a panoptic PNG with its JSON
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(picture)
    args = ["generate", "a red circle", "--model", str(tiny_pipeline_dir), "--map", str(picture)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "--map-json" in capsys.readouterr().err


def test_prepare_without_codec_names_the_codec_to_pass(tmp_path):
    from pandiff.cli.prepare import default_codec

    (tmp_path / "annotations").mkdir()
    with pytest.raises(ConfigError, match="not a built-in world: pass --codec"):
        default_codec(str(tmp_path))
    (tmp_path / "annotations" / "world_specs_train2017.json").write_text("{}")
    assert default_codec(str(tmp_path)) == "identity"


def test_a_run_folder_as_model_uses_its_export(tiny_pipeline_dir, tmp_path):
    import shutil

    from pandiff.pipeline_config import resolve_model_dir

    shutil.copytree(tiny_pipeline_dir, tmp_path / "run" / "final")
    with pytest.warns(UserWarning, match="training run, not a pipeline folder; using its export"):
        assert resolve_model_dir(tmp_path / "run") == tmp_path / "run" / "final"
    assert resolve_model_dir(tiny_pipeline_dir) == tiny_pipeline_dir
    assert resolve_model_dir(tmp_path / "absent") == tmp_path / "absent"  # its error comes later
