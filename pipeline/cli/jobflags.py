"""The flags that describe a job (config file, inputs, policies, endpoint, limits, output), shared by
`run`, `check`, `estimate` and `batch prepare`, and how they are read back into a `RunConfig`."""

from __future__ import annotations

import argparse

from pipeline.cli.runflags import run_overrides
from pipeline.config.load import apply_overrides, load_config
from pipeline.config.rules import EFFORTS, PROVIDERS
from pipeline.config.settings import RunConfig
from pipeline.core.records import OutputFormat

__all__ = ["add_job_arguments", "job_config"]


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe a job: config file, inputs, policies, endpoint, limits, output."""
    parser.add_argument("config", nargs="?", help="TOML config (see configs/); flags override it")
    parser.add_argument("--input", dest="inputs", action="append", metavar="PATH",
                        help="file, folder or glob (.parquet, .jsonl/.ndjson[.gz|.zst], .csv); repeatable")
    parser.add_argument("--id-column", metavar="C", help="id column (default: 'id' if present, else file:row)")
    parser.add_argument("--text-column", metavar="C", help="text column (default: text)")
    parser.add_argument("--policy", dest="policies", action="append", metavar="FILE",
                        help="policy file or built-in name (spam, hate_harassment, ...); repeatable "
                             "(default: every built-in policy)")
    parser.add_argument("--output-format", choices=[f.value for f in OutputFormat],
                        help="answer format asked of the model (default rationale); policy: send each policy as "
                             "written and read its own labels with --label-pattern and --violation-pattern")
    parser.add_argument("--label-pattern", metavar="RE",
                        help="output format policy: the answer's label is the first match (its group, if it has one)")
    parser.add_argument("--violation-pattern", metavar="RE",
                        help="output format policy: a label matching RE whole means violation = 1")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: out/run)")
    parser.add_argument("--store", metavar="PATH",
                        help="result store to share across runs (default: OUT/store.sqlite; 'none' = no store)")
    parser.add_argument("--provider", choices=PROVIDERS)
    parser.add_argument("--base-url", metavar="URL")
    parser.add_argument("--model", metavar="NAME")
    parser.add_argument("--concurrency", type=int, metavar="N", help="connections and workers (default 64)")
    parser.add_argument("--rpm", type=float, metavar="N", help="requests per minute (default: unlimited)")
    parser.add_argument("--tpm", type=float, metavar="N", help="tokens per minute (default: unlimited)")
    parser.add_argument("--request-timeout", type=float, metavar="S", help="seconds per attempt (default 120)")
    parser.add_argument("--reasoning-effort", choices=EFFORTS, help="default low")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="output budget incl. reasoning (default 8192)")
    parser.add_argument("--response-format", choices=("text", "json_schema"),
                        help="json_schema: ask the host for answers matching the verdict schema (default text)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N input rows")
    parser.add_argument("--max-cost", type=float, metavar="USD", help="stop sending once spend would pass this")
    parser.add_argument("--keep-reasoning", action="store_true", default=None,
                        help="store the model's raw reasoning in the shards")
    parser.add_argument("--force", action="store_true", default=None,
                        help="start the output directory over (answers in the store are reused)")


def job_config(args: argparse.Namespace) -> RunConfig:
    """The job's config: the file named by ``args.config`` with the flags laid over it.

    Raises `ConfigError` (one line) on a bad file or flag.
    """
    overrides = {
        "inputs": args.inputs, "id_column": args.id_column, "text_column": args.text_column,
        "policies": args.policies, "output_format": args.output_format, "out": args.out,
        "label_pattern": args.label_pattern, "violation_pattern": args.violation_pattern,
        "store": args.store, "provider": args.provider, "base_url": args.base_url, "model": args.model,
        "concurrency": args.concurrency, "rpm": args.rpm, "tpm": args.tpm,
        "request_timeout": args.request_timeout, "reasoning_effort": args.reasoning_effort,
        "max_tokens": args.max_tokens, "limit": args.limit, "max_cost": args.max_cost,
        "keep_reasoning": args.keep_reasoning, "force": args.force, "response_format": args.response_format,
        **run_overrides(args),
    }
    return apply_overrides(load_config(args.config), overrides)
