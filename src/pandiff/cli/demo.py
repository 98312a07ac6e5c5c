"""``pandiff demo``: load the pipeline once and serve the web demo (on 127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import logging

from pandiff.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the bundled built-in-world model)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the demo to the network)",
    )
    p.add_argument("--port", type=int, default=7860, help="port to bind (default 7860; 0 picks a free one)")
    p.add_argument("--max-prompt-chars", type=int, default=200, help="longest prompt accepted (default 200)")
    p.add_argument("--max-images", type=int, default=4, help="most images per request (default 4)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args) -> int:
    from pandiff.demo import DemoApp, DemoLimits, make_server
    from pandiff.pipeline import PanopticDiffusionPipeline

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.max_prompt_chars < 1:
        raise ConfigError(f"--max-prompt-chars must be >= 1, got {args.max_prompt_chars}")
    if args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pipe = PanopticDiffusionPipeline.from_pretrained(args.model, device=args.device)
    limits = DemoLimits(max_prompt_chars=args.max_prompt_chars, max_images=args.max_images)
    app = DemoApp(pipe, limits, model_name=str(args.model or "bundled world-s"))
    try:
        server = make_server(app, args.host, args.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot bind {args.host}:{args.port} ({exc.strerror}); pass another --port"
        ) from None
    if not server.loopback_only:
        print(f"warning: the demo is reachable from other machines on {args.host}; it has no authentication")
    print(f"pandiff demo serving on {server.url} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("pandiff demo: stopped")
    finally:
        server.server_close()
    return 0
