"""Helpers for end-to-end tests: run the whole pipeline in-process against the simulator over loopback."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import polars as pl
from aiohttp import web

from pipeline.config.rules import validate
from pipeline.config.settings import RunConfig
from pipeline.engines.local.app import run_job_async
from pipeline.simulator import SimulatorConfig, SimulatorStats, start_simulator

SIM_MODEL = "gpt-oss-safeguard-20b-simulator"
#: a key whose encodings all differ from it and from each other (``/``, ``+``, ``~``, ``?``, ``>``, ``=``)
LEAKED_KEY = "sk-proj-9f/Ke~y+?echo=Zq7_>x"


def key_spellings(key: str) -> dict[str, str]:
    """The key in every encoding a leak could take, written with the standard library's encoders."""
    data = key.encode()
    return {
        "plain": key,
        "base64": base64.b64encode(data).decode(),
        "base64 unpadded": base64.b64encode(data).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "percent": quote(key, safe=""),
        "percent lower": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(key, safe="")),
        "form": quote_plus(key),
        "path": quote(key),
        "html escape": html.escape(key),
        "html decimal": "".join(f"&#{ord(c)};" for c in key),
        "html hex": "".join(f"&#x{ord(c):x};" for c in key),
        "html named": key.replace("/", "&sol;").replace("+", "&plus;").replace("=", "&equals;"),
        "json slash": key.replace("/", "\\/"),
        "json unicode": key.replace("/", "\\u002f").replace("+", "\\u002B"),
        "json unicode all": "".join(f"\\u{ord(c):04x}" for c in key),
    }


def leaks(text: str, key: str = LEAKED_KEY) -> list[str]:
    """The names of the key's spellings found in ``text`` (case-insensitively for the escaped ones)."""
    lowered = text.lower()
    return [name for name, form in key_spellings(key).items()
            if form in text or (name.startswith(("percent", "html", "json")) and form.lower() in lowered)]


@dataclass
class RunResult:
    code: int
    stats: SimulatorStats
    stderr: str
    out: Path

    def labels(self) -> pl.DataFrame:
        files = sorted((self.out / "labels").glob("part-*.parquet"))
        return pl.read_parquet(files) if files else pl.DataFrame()

    def report(self) -> dict[str, Any]:
        return orjson.loads((self.out / "cost_report.json").read_bytes())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def make_config(tmp_path: Path, inputs: list[Path], **overrides: Any) -> RunConfig:
    config = RunConfig(
        inputs=[str(p) for p in inputs], policies=["spam", "hate_harassment"], out=str(tmp_path / "out"),
        provider="openai", model=SIM_MODEL, concurrency=8, max_attempts=4, request_timeout=5.0,
        grace_seconds=2.0,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    validate(config)
    return config


def run_pipeline(config: RunConfig, sim: SimulatorConfig | None = None, *, env_key: str | None = None) -> RunResult:
    """Start the simulator, point the config at it, run the job, return exit code and server stats."""

    async def main() -> RunResult:
        if env_key is not None:
            os.environ[config.api_key_env] = env_key
        async with start_simulator(sim or SimulatorConfig()) as server:
            config.base_url = server.base_url
            stream = io.StringIO()
            code = await run_job_async(config, stream=stream, progress=False)
            return RunResult(code, server.stats, stream.getvalue(), Path(config.out))

    return asyncio.run(main())


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve a small aiohttp app on 127.0.0.1 (a free port) while the block runs; yields its root URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class SimulatorProcess:
    """The simulator in a process of its own (for tests that kill or signal `moderate run`)."""

    def __init__(self, *args: str) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "simulate", "--port", "0", "--max-seconds", "120",
             "--idle-seconds", "60", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "http://" not in line:
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line.split("http://", 1)[1].split()[0]
        self.base_url = "http://" + self.base_url

    def stats(self) -> dict[str, Any]:
        import urllib.request

        scheme, _, host = self.base_url.partition("://")
        root = f"{scheme}://{host.split('/', 1)[0]}"  # the server's root, whatever the host's API path
        with urllib.request.urlopen(root + "/_simulator/stats", timeout=5) as response:
            return orjson.loads(response.read())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def moderate_command(config_path: Path, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "pipeline", "run", str(config_path), "--no-progress", *extra]


def write_config(path: Path, *, inputs: list[Path], out: Path, base_url: str, concurrency: int = 8,
                 shard_rows: int = 50, policies: tuple[str, ...] = ("spam",), extra: str = "") -> Path:
    path.write_text(f"""
[input]
paths = {[str(p) for p in inputs]!r}
[policies]
files = {list(policies)!r}
[endpoint]
provider = "openai"
base_url = "{base_url}"
model = "{SIM_MODEL}"
request_timeout = 10
[limits]
concurrency = {concurrency}
[output]
dir = "{out}"
shard_rows = {shard_rows}
grace_seconds = 5
{extra}
""".replace("'", '"'))
    return path


def write_toml(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    """``text`` written to ``tmp_path/name`` (a config file for a test)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    """The one-line `ConfigError` that loading config ``text`` raises (it names the file)."""
    import pytest

    from pipeline.config.load import load_config
    from pipeline.config.rules import ConfigError

    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message
    return message


def full_device(folder: Path) -> Path:
    """A node like /dev/full (every write fails with ENOSPC) inside ``folder``; needs root to create."""
    import stat

    import pytest

    node = folder / "full"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return node


def read_fifo(fifo: Path) -> tuple[Any, list[bytes]]:
    """A thread reading ``fifo`` to its end (join it), and the list its bytes land in."""
    import threading

    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as handle:
            got.append(handle.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, got


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` created and made unwritable while the block runs (root: ``chattr +i``, as mode bits do
    not stop root)."""
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i failed)")
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
