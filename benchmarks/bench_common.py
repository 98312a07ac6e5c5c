"""What every benchmark shares: a one-line machine description and appending to RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
# --redraw: the pipeline's redraw_image for each choice ("model": the folder's setting)
REDRAW = {"model": None, "on": True, "off": False}


def machine_description() -> str:
    """Platform, CPU model, cores, load, Python and torch versions (torch only if installed)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_part = f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_part = ""
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs (load average {load} at start), "
        f"Python {platform.python_version()}{torch_part}"
    )


def append_results(title: str, command: str, lines: list[str], note: str = "") -> None:
    """Append one titled, dated section (machine, command, table, note) to RESULTS.md in one write."""
    text = "\n".join(
        [
            "",
            f"## {title} ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            f"Machine: {machine_description()}",
            "",
            f"Command: `{command}`",
            "",
            *lines,
            "",
            *([note, ""] if note else []),
        ]
    )
    with open(RESULTS, "a") as fh:
        fh.write(text)


def publish(title: str, lines: list[str], append: bool = True, note: str = "") -> None:
    """Print ``lines`` and, if ``append``, add them to RESULTS.md with this run's command line."""
    print("\n" + "\n".join(lines) + "\n", flush=True)
    if append:
        command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
        append_results(title, command, lines, note)


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a hint) when the bench extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is missing: pip install -e ".[bench]" to draw the plot', file=sys.stderr)
        return None
    return plt


def log_x_panel(ax, ticks: list, xlabel: str, ylabel: str, legend: bool = True) -> None:
    """A log-x panel labelled at exactly ``ticks`` (no 3x10^1 minor labels), with grid and legend
    (``legend=False``: none, for a figure-wide one)."""
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def save_figure(fig, path: Path, title: str, legend_from=None) -> None:
    """Title, tight layout and a 120-dpi PNG at ``path`` (folders made as needed); with
    ``legend_from`` (an axis), one legend for the figure below its panels."""
    fig.suptitle(title, fontsize=9)
    if legend_from is not None:
        handles, labels = legend_from.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
