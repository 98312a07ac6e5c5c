"""The command line starts without torch: `pandiff --help`, `pandiff COMMAND --help` and
`python -m pandiff` build every parser from modules that import torch only to run a command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pandiff.cli import SUBCOMMANDS


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "-c", code] if code else [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_building_every_parser_imports_no_torch():
    code = (
        "import sys\n"
        "import pandiff, pandiff.encoders\n"
        "from pandiff.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(
    "command", [[], *([name] for name in SUBCOMMANDS)], ids=lambda c: c[0] if c else "pandiff"
)
def test_help_answers_without_torch(command):
    code = (
        "import sys\n"
        "from pandiff.cli import main\n"
        f"try:\n    main({[*command, '--help']!r})\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "usage: pandiff" in done.stdout


def test_lazy_names_resolve_to_their_modules():
    import pandiff
    import pandiff.encoders
    from pandiff.data.analog_bits import MapBitCodec
    from pandiff.encoders.codec import load_codec

    assert pandiff.MapBitCodec is MapBitCodec and pandiff.encoders.load_codec is load_codec
    assert set(pandiff.__all__) <= set(dir(pandiff))
    for name in pandiff.__all__:
        getattr(pandiff, name)
    for name in pandiff.encoders.__all__:
        getattr(pandiff.encoders, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pandiff.nope  # noqa: B018


def test_python_m_pandiff_is_the_command():
    done = _python("", "-m", "pandiff", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pandiff")
    assert "generate" in done.stdout and "train-codec" in done.stdout
