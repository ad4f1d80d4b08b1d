"""The leanest client we can write: the reference the pipeline's throughput is compared with.

N worker coroutines share one aiohttp session (TCPConnector(limit=N)) and POST the same JSON bodies
`moderate run` sends (system message from `render_system`, body from `build_body`, orjson), read
each answer and decode it with orjson. Nothing else: no retries, no limiter, no store, no shards.
Bodies are built before the clock starts.

    python -m bench.raw_loop --url http://127.0.0.1:PORT/v1 --connections 64 [--rows N]

prints one JSON line: rows, ok (HTTP 200 answers), elapsed_s, cpu_s (of the timed loop).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pyarrow.csv as pacsv

from bench.common import MODEL, OUTPUT_FORMAT, POLICY, TWEETS
from pipeline.config.providers import build_body, chat_url, request_headers
from pipeline.core.records import OutputFormat
from pipeline.plan.policies import load_policy
from pipeline.plan.prompt import neutralise, normalise, render_system


def read_texts(path: Path, column: str, rows: int | None) -> list[str]:
    """The text column of a CSV, as `moderate run` would send it (normalised, special tokens defused)."""
    table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(include_columns=[column],
                                                                column_types={column: "string"}))
    texts = [t for t in (neutralise(normalise(v or "")) for v in table.column(column).to_pylist()) if t]
    return texts[:rows] if rows is not None else texts


def build_bodies(texts: list[str]) -> list[bytes]:
    system = render_system(load_policy(POLICY), OutputFormat(OUTPUT_FORMAT))
    return [orjson.dumps(build_body("openai", model=MODEL, system=system, user=text, reasoning_effort="low",
                                    max_tokens=8192, keep_reasoning=False, api_key=None))
            for text in texts]


async def send_all(url: str, bodies: list[bytes], connections: int) -> tuple[int, float, float]:
    """(answers with HTTP 200, elapsed seconds, CPU seconds) for POSTing every body once."""
    headers = request_headers("openai", None)
    connector = aiohttp.TCPConnector(limit=connections)
    ok = 0
    index = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, index
        while index < len(bodies):
            body = bodies[index]
            index += 1
            async with session.post(url, data=body, headers=headers) as response:
                orjson.loads(await response.read())
                ok += response.status == 200

    async with aiohttp.ClientSession(connector=connector) as session:
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return ok, elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_loop", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="base URL of the server (…/v1)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rows", type=int, help="only the first N rows")
    parser.add_argument("--input", type=Path, default=TWEETS)
    parser.add_argument("--text-column", default="tweet")
    args = parser.parse_args(argv)
    bodies = build_bodies(read_texts(args.input, args.text_column, args.rows))
    ok, elapsed, cpu = asyncio.run(send_all(chat_url(args.url), bodies, args.connections))
    sys.stdout.write(orjson.dumps({"rows": len(bodies), "ok": ok, "elapsed_s": elapsed, "cpu_s": cpu}).decode())
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
