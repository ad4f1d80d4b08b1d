"""``moderate simulate``: run the simulator as a server until stopped, idle or out of time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
import time

from pipeline.simulator.config import (
    ALL_FAULTS,
    DEFAULT_MODELS,
    REASONING_FIELDS,
    RETRY_AFTER_STYLES,
    Faults,
    SimulatorConfig,
)
from pipeline.simulator.server import Simulator

_FAULT_HELP = {
    "error_5xx": "answer 500/502/503/504 with a JSON error",
    "html_error": "answer 502 with an HTML page",
    "reset": "close the connection without answering",
    "hang": "answer only after --hang-seconds",
    "truncated_body": "send half of the JSON body, then close",
    "non_json": "answer 200 with a plain-text body",
    "junk_output": "billed answer that is not a verdict",
    "refusal": "billed refusal text",
    "length_empty": 'billed, finish_reason "length", empty content',
}


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags, on the ``simulate`` sub-command's parser."""
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--model", dest="models", action="append", metavar="NAME",
                        help=f"model name to serve (repeatable; default {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="time to answer each request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform ± spread around the latency")
    parser.add_argument("--rpm", type=float, help="requests per minute accepted (default unlimited)")
    parser.add_argument("--tpm", type=float, help="tokens per minute accepted (default unlimited)")
    parser.add_argument("--advertise-limits", action="store_true",
                        help="send x-ratelimit-* headers on every response")
    parser.add_argument("--retry-after", choices=RETRY_AFTER_STYLES, default="seconds",
                        help="how a 429 says when to retry (ms = retry-after-ms header)")
    parser.add_argument("--fault-rate", type=_probability, default=0.0,
                        help="probability of a transient fault, spread evenly over the transient kinds")
    for kind in ALL_FAULTS:
        parser.add_argument(f"--{kind.replace('_', '-')}", type=_probability, metavar="P",
                            help=f"probability per request: {_FAULT_HELP[kind]}")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--api-key", help="require this bearer key (default: any key accepted)")
    parser.add_argument("--out-of-credit", action="store_true", help="answer every request with 402")
    parser.add_argument("--reasoning-field", choices=REASONING_FIELDS, default="reasoning",
                        help="message field that carries the reasoning")
    parser.add_argument("--no-usage", action="store_true", help="leave usage out of answers")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and jitter draws")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    parser.add_argument("--idle-seconds", type=float, default=600.0,
                        help="stop after this long without a request")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """A SimulatorConfig from parsed flags."""
    faults = Faults.transient(args.fault_rate)
    for kind in ALL_FAULTS:
        value = getattr(args, kind)
        if value is not None:
            setattr(faults, kind, value)
    faults.hang_seconds = args.hang_seconds
    return SimulatorConfig(
        models=list(args.models or DEFAULT_MODELS),
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        advertise_limits=args.advertise_limits,
        retry_after=args.retry_after,
        faults=faults,
        api_key=args.api_key,
        out_of_credit=args.out_of_credit,
        reasoning_field=args.reasoning_field,
        include_usage=not args.no_usage,
        seed=args.seed,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(sim: Simulator, *, max_seconds: float, idle_seconds: float) -> str:
    """Run until a signal, ``max_seconds`` or ``idle_seconds`` without requests; say why it stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        print(f"simulator listening on {sim.base_url} (not a model: verdicts come from a keyword rule)",
              flush=True)
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if now - started >= max_seconds:
                return f"ran for {max_seconds:g} s (--max-seconds)"
            if now - sim.last_request_at >= idle_seconds:
                return f"no request for {idle_seconds:g} s (--idle-seconds)"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
                return "stopped by signal"


def main(args: argparse.Namespace) -> int:
    """Serve until stopped. Exit code 0, or 2 for a bad setting (one line on stderr)."""
    if not _is_loopback(args.host):
        print(f"error: --host must be a loopback address (127.0.0.1, ::1, localhost), not {args.host}",
              file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
        config.validate()
        sim = Simulator(config, host=args.host, port=args.port)
        reason = asyncio.run(_serve(sim, max_seconds=args.max_seconds, idle_seconds=args.idle_seconds))
    except (ValueError, OSError) as exc:
        print(f"error: simulator: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        reason = "interrupted"
    print(f"simulator stopped: {reason}", file=sys.stderr)
    return 0
