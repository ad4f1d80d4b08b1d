"""`moderate export OUT_DIR --format chat-jsonl|parquet --output FILE [--review N]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.audit.trainingset import FORMATS, export
from pipeline.core import exitcodes
from pipeline.output.outfiles import is_stream

DESCRIPTION = """\
Write a training set from a run's ok labels. chat-jsonl: {"messages": [system = the policy as
the run sent it, user = the content as sent, assistant = the verdict in the run's output format],
"metadata": {id, policy, policy_version, output_format, model, served_model, run_id, fingerprint,
confidence}} per label; parquet: flat columns (id, text, policy, violation, category, rule_ids,
confidence, rationale, policy_version, model, the provenance columns, the kept input columns).
The input is read again for the texts: run it from where the run ran, or pass
--input/--text-column/--id-column as the run had them."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="a finished run's output directory (a local path or s3://, gs://, abfs://)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="export_format")
    parser.add_argument("--output", required=True, metavar="FILE", help="file to write")
    parser.add_argument("--review", type=int, metavar="N",
                        help="also write the N labels most worth a human look (low confidence, policies that "
                             "disagree, disagreement with --gold) to --review-output")
    parser.add_argument("--review-output", metavar="FILE", help="default: OUTPUT with .review.jsonl")
    parser.add_argument("--gold", metavar="FILE", help="gold labels for --review (any input format)")
    parser.add_argument("--gold-column", metavar="C", help="0/1 column of --gold")
    parser.add_argument("--gold-id-column", metavar="C", help="id column of --gold (default: id)")
    parser.add_argument("--input", dest="inputs", action="append", metavar="PATH",
                        help="the run's input (default: the files named in the shards); repeatable")
    parser.add_argument("--text-column", metavar="C",
                        help="the run's text column (default: as recorded in OUT_DIR/report.html, else text)")
    parser.add_argument("--id-column", metavar="C", help="the run's id column, if it named one")
    parser.add_argument("--policy", dest="policies", action="append", metavar="FILE",
                        help="the policy file the run used (default: the shipped policy of the same name)")
    parser.add_argument("--no-metadata", dest="metadata", action="store_false",
                        help="chat-jsonl: records with messages only (for fine-tuning APIs that refuse other keys)")
    parser.add_argument("--partial", action="store_true",
                        help="export the ok labels of a run that did not finish (otherwise refused)")


def main(args: argparse.Namespace) -> int:
    from pipeline.audit.export import recorded_columns as recorded_run_columns
    from pipeline.report.html import recorded_columns

    if args.text_column is None:  # as the manifest records them; folders from before that: report.html's
        args.text_column, recorded_id = recorded_run_columns(args.out_dir) or recorded_columns(args.out_dir)
        args.id_column = args.id_column or recorded_id
    summary = export(args.out_dir, fmt=args.export_format, output=Path(args.output),
                     review=args.review, review_output=args.review_output, gold=args.gold,
                     gold_column=args.gold_column, gold_id_column=args.gold_id_column, inputs=args.inputs,
                     text_column=args.text_column, id_column=args.id_column, policy_files=args.policies,
                     partial=args.partial, metadata=args.metadata)  # a mistake raises UserError: main prints it
    line = f"moderate export: {summary['examples']:,} examples to {summary['output']}"
    if summary["review_output"]:
        line += f"; {summary['review']:,} labels to review in {summary['review_output']}"
    print(line, file=sys.stderr if is_stream(Path(args.output)) else sys.stdout)  # keep /dev/stdout for the data
    return exitcodes.EXIT_OK


