"""CLI handlers of the device side: `slimedge agent run`. Imports nothing host-only, so the
command works on a board with the `device` extra alone."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_agent_run_options", "agent_run"]


def add_agent_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deploy", required=True, help="deployment directory (slimedge export)")
    p.add_argument("--device", required=True, help="this device's id in the manifest")
    p.add_argument("--broker", required=True,
                   help="mqtt://[user:pass@]host:port, or mqtts://... for TLS")
    p.add_argument("--ca-file", default=None, help="CA certificate for mqtts:// brokers")
    p.add_argument("--public-key", default=None, metavar="PEM",
                   help="the public key provisioned out of band (default: "
                        "$SLIMEDGE_PUBLIC_KEY); the deployment must be signed with it")
    p.add_argument("--source", default="replay",
                   help="replay[:DATASET] (view v of test object i = frame i; default "
                        "<deploy>/../dataset), folder:PATH, or plugin:MODULE:CLASS")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--start-at", type=int, default=None, metavar="UNIX_NS",
                   help="capture time of frame 0 (frame i at start + i / fps); started "
                        "late (a restart), the agent skips the frames already past (capture "
                        "+ the plan's latency before now) and starts with the next one due")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="S",
                   help="heartbeat period in seconds (default 1)")
    p.add_argument("--emulate-latency", action="store_true",
                   help="hold each result for the board's predicted inference + link time")
    p.add_argument("--outbox", type=int, default=64,
                   help="frames waiting for the link before the oldest is dropped")
    p.add_argument("--keepalive", type=int, default=5,
                   help="MQTT keep-alive in seconds (the Will fires after 1.5 x this)")
    p.add_argument("--state", default=None, metavar="DIR",
                   help="where the device keeps its A/B model slots for signed updates "
                        "(default <deploy>/../device-state/<device>)")
    p.add_argument("--no-updates", dest="updates", action="store_false",
                   help="serve the deployment as given; ignore pushed updates")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def agent_run(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.runtime.agent import AgentConfig, run_agent

    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = AgentConfig(
        deploy=Path(args.deploy), device=args.device, broker=args.broker,
        public_key=Path(args.public_key) if args.public_key else None, source=args.source,
        fps=args.fps, frames=args.frames, start_at_ns=args.start_at,
        heartbeat_s=args.heartbeat, emulate_latency=args.emulate_latency, outbox=args.outbox,
        keepalive=args.keepalive, ca_file=Path(args.ca_file) if args.ca_file else None,
        state=Path(args.state) if args.state else None, updates=args.updates)
    return run_agent(cfg)
