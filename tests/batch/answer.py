"""Answer a batch input file through the simulator's HTTP API, writing OpenAI-style result lines.

What a host's batch API does with the file, over real loopback HTTP: each line's body is POSTed
as it is, and the answer becomes ``{"custom_id", "response": {"status_code", "body"}, "error"}``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from pipeline.simulator import SimulatorConfig, start_simulator


def answer_batch_file(requests: list[Path], results: Path, sim: SimulatorConfig | None = None) -> int:
    """Answer every line of ``requests``; returns the number of calls the simulator billed."""

    async def main() -> int:
        async with start_simulator(sim or SimulatorConfig()) as server, aiohttp.ClientSession() as session:
            with open(results, "wb") as out:
                for path in requests:
                    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
                        line = orjson.loads(raw)
                        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
                        body = orjson.dumps(line["body"])
                        async with session.post(server.base_url + "/chat/completions", data=body,
                                                headers={"Content-Type": "application/json"}) as reply:
                            payload = await reply.read()
                            status = reply.status
                        answer = orjson.loads(payload)
                        out.write(orjson.dumps({
                            "id": f"batch_req_{number}", "custom_id": line["custom_id"],
                            "response": {"status_code": status, "request_id": f"req_{number}", "body": answer},
                            "error": None,
                        }) + b"\n")
            return server.stats.billed

    return asyncio.run(main())
