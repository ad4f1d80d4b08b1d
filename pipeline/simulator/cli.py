"""``moderate simulate``: run the simulator as a server until stopped, idle or out of time, or answer
a batch file offline (``--batch``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
import time
from pathlib import Path

from pipeline.output.outfiles import OutputFileError
from pipeline.simulator.batch import run_batch
from pipeline.simulator.config import (
    ALL_FAULTS,
    DEFAULT_MODELS,
    EIGHT_WAY_MIX,
    MODELSLAB_MODEL_ID,
    PROFILES,
    REASONING_FIELDS,
    RETRY_AFTER_STYLES,
    TOKEN_COUNTERS,
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
    "rate_limited": "answer 429 with Retry-After: 1 whatever the limits (a busy upstream)",
    "error_503_html": "answer 503 with an HTML page",
    "content_parts": "billed, message.content as a list of text parts",
    "malformed_fields": "billed 200 with a non-string model/finish_reason or implausible usage",
    "choice_error": 'OpenRouter: 200 with finish_reason "error" and an error object in the choice',
    "content_filter": 'OpenRouter: billed, finish_reason "content_filter", empty content',
    "odd_details": "billed verdict with an impossible usage detail or a non-string model/finish_reason",
    "odd_content": "billed 200 whose message.content is a number or an object",
    "endless_body": "answer 200 with a chunked body that never ends (closed after --hang-seconds)",
}


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _fault_mix(text: str) -> dict[str, float]:
    if text == "eight-way":
        return dict(EIGHT_WAY_MIX)
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item]
        mix = {kind.strip().replace("-", "_"): float(p) for kind, p in pairs}
        Faults.mix(**mix)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected eight-way or KIND=P,KIND=P ({exc})") from None
    return mix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags, on the ``simulate`` sub-command's parser."""
    parser.add_argument("--profile", choices=PROFILES, default="openai",
                        help="answer in this host's shapes: paths, errors, headers, limits (default openai)")
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
    parser.add_argument("--quota-storm", type=float, metavar="SECONDS",
                        help="answer every request 429 with Retry-After: SECONDS and "
                        "x-ratelimit-remaining-requests: 0 but no reset (a quota spent until a time not said)")
    parser.add_argument("--fault-rate", type=_probability, default=0.0,
                        help="probability of a transient fault, spread evenly over the transient kinds")
    for kind in ALL_FAULTS:
        parser.add_argument(f"--{kind.replace('_', '-')}", type=_probability, metavar="P",
                            help=f"probability per request: {_FAULT_HELP[kind]}")
    parser.add_argument("--fault-mix", type=_fault_mix, metavar="MIX",
                        help="fault probabilities as KIND=P,KIND=P or 'eight-way' (20%% failing in eight ways)")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--api-key", help="require this bearer key (default: any key accepted)")
    parser.add_argument("--echo-key", action="store_true",
                        help="a leaky host: repeat the --api-key in every reply, in every encoded form")
    parser.add_argument("--out-of-credit", action="store_true", help="answer every request with 402")
    parser.add_argument("--reasoning-field", choices=REASONING_FIELDS, default="reasoning",
                        help="message field that carries the reasoning")
    parser.add_argument("--no-usage", action="store_true", help="leave usage out of answers")
    parser.add_argument("--bills-past-max-tokens", type=int, default=0, metavar="N",
                        help="bill N more completion tokens on every answer, past max_tokens (default 0)")
    parser.add_argument("--count-tokens", choices=TOKEN_COUNTERS, default="approx",
                        help="bill tokens by a 4-bytes estimate or by o200k over the Harmony rendering")
    parser.add_argument("--current-date", metavar="YYYY-MM-DD", help="date in the Harmony system message")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and jitter draws")
    parser.add_argument("--answer-template", nargs=3, action="append", metavar=("PHRASE", "VIOLATES", "SAFE"),
                        help="answer a policy containing PHRASE in its own format: VIOLATES when the keyword rule "
                             "fires ({rule} = its rule id), SAFE otherwise; repeatable")
    host = parser.add_argument_group("host profiles")
    host.add_argument("--model-id", default=MODELSLAB_MODEL_ID, help="modelslab: the served model_id")
    host.add_argument("--queue", type=int, default=5, help="modelslab: concurrent requests per account (5/10/15)")
    host.add_argument("--queue-retry-after", type=float, default=1.0,
                      help="modelslab: retry_after (s) in a full-queue 429 body")
    host.add_argument("--processing", type=_probability, default=0.0, metavar="P",
                      help='modelslab: probability of a "processing" reply to fetch later')
    host.add_argument("--processing-eta", type=float, default=0.2, help="modelslab: seconds until it is ready")
    host.add_argument("--input-price", type=float, default=0.075, help="openrouter: USD per 1M input tokens")
    host.add_argument("--cached-input-price", type=float, default=0.0375, help="openrouter: per 1M cached")
    host.add_argument("--output-price", type=float, default=0.30, help="openrouter: USD per 1M output tokens")
    host.add_argument("--provider-name", default="Simulator", help="openrouter: the provider field")
    host.add_argument("--in-flight-budget", type=int, metavar="N",
                      help="openrouter: over N requests in flight answer 402 with Retry-After")
    host.add_argument("--rpd", type=float, help="groq: requests per day (x-ratelimit-limit-requests); "
                      "openrouter: a free model's daily cap (429 until midnight UTC)")
    host.add_argument("--max-num-seqs", type=int, default=256, help="vllm: requests the engine runs at once")
    batch = parser.add_argument_group("batch mode")
    batch.add_argument("--batch", type=Path, metavar="REQUESTS.jsonl",
                       help="answer this OpenAI batch input file offline instead of serving")
    batch.add_argument("-o", "--output", type=Path, metavar="RESULTS.jsonl", help="batch results file")
    batch.add_argument("--errors", type=Path, metavar="ERRORS.jsonl",
                       help="failed lines go here (default: into the results file, as vllm run-batch does)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    parser.add_argument("--idle-seconds", type=float, default=600.0,
                        help="stop after this long without a request")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """A SimulatorConfig from parsed flags."""
    faults = Faults.transient(args.fault_rate)
    for kind, p in (args.fault_mix or {}).items():
        setattr(faults, kind, p)
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
        quota_storm=args.quota_storm,
        faults=faults,
        api_key=args.api_key,
        echo_key=args.echo_key,
        out_of_credit=args.out_of_credit,
        reasoning_field=args.reasoning_field,
        include_usage=not args.no_usage,
        bills_past_max_tokens=args.bills_past_max_tokens,
        seed=args.seed,
        profile=args.profile,
        count_tokens=args.count_tokens,
        current_date=args.current_date,
        model_id=args.model_id,
        queue=args.queue,
        queue_retry_after=args.queue_retry_after,
        processing=args.processing,
        processing_eta=args.processing_eta,
        input_price=args.input_price,
        cached_input_price=args.cached_input_price,
        output_price=args.output_price,
        provider_name=args.provider_name,
        in_flight_budget=args.in_flight_budget,
        rpd=args.rpd,
        max_num_seqs=args.max_num_seqs,
        answer_templates=[tuple(t) for t in args.answer_template or []],
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
        print(f"simulator listening on {sim.base_url} (not a model: verdicts come from a keyword rule; "
              f"profile {sim.config.profile}, chat at {sim.chat_url})", flush=True)
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


def _batch(args: argparse.Namespace) -> int:
    if args.output is None:
        print("error: --batch needs -o/--output RESULTS.jsonl", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
        config.validate()
        summary = run_batch(config, args.batch, args.output, args.errors)
    except (ValueError, OSError, OutputFileError) as exc:  # BatchInputError names the file and line
        print(f"error: simulator: {exc}", file=sys.stderr)
        return 2
    print(f"simulated batch: {summary.lines} lines, {summary.succeeded} succeeded, {summary.failed} failed "
          f"-> {args.output}" + (f" (errors in {args.errors})" if args.errors else ""), file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    """Serve until stopped (or answer ``--batch``). Exit code 0, or 2 for a bad setting (one line)."""
    if args.batch is not None:
        return _batch(args)
    if not _is_loopback(args.host):
        print(f"error: --host must be a loopback address (127.0.0.1, ::1, localhost), not {args.host}",
              file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}: must be 0..65535 (0 picks a free one)", file=sys.stderr)
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
