from pipeline.cli import command

raise SystemExit(command())
