"""Exit codes of `moderate run`, stable for cron jobs and scripts."""

EXIT_OK = 0  # every row labelled (skipped_empty / too_long rows count as handled)
EXIT_ROWS_FAILED = 1  # finished, but some rows ended failed, invalid_output, truncated, rejected, filtered or
#                       input_error
EXIT_USAGE = 2  # bad flags, config, input or policy; an unreadable input or store (the directory stays resumable)
EXIT_BUDGET = 3  # stopped by --max-cost (a cap on the whole directory): unsent rows are budget_exhausted
EXIT_ENDPOINT = 4  # fatal endpoint error: 401/403 bad key, 402 no credit, 404 wrong model or URL, unreachable,
#                    or a quota the host reports spent for longer than max_retry_after (or refusals asking
#                    for longer, heard again after waiting max_retry_after with nothing answered)
EXIT_LOCKED = 5  # another run holds the output directory
EXIT_CANARY = 6  # finished, but the model gave a canary (a text of known verdict) the wrong verdict
EXIT_DRIFT = 7  # finished, but a policy's violation rate moved past drift_threshold against earlier nights
EXIT_INTERNAL = 70  # a bug: please report it with the log
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: rerun the same command to resume

HELP = """exit codes:
  0    every row labelled
  1    finished, some rows failed (failed, invalid_output, truncated, rejected, filtered,
       input_error)
  2    usage, config, input, policy or store error (found before sending, or an input or
       store that became unreadable mid-run: the directory stays resumable)
  3    stopped by --max-cost, a cap on everything the directory has spent (raise it to resume)
  4    fatal endpoint error: bad key (401/403), out of credit (402), wrong model or URL (404),
       nothing answering at the base URL, or a quota the host reports spent for longer
       than max_retry_after, or refusals asking for longer again after one such wait
       (a daily cap: rerun after its reset)
  5    another run is using the output directory
  6    finished, but some canaries (--canaries) got the wrong verdict: a model, host or
       policy change (see OUT/canaries.parquet); takes precedence over 1 and 7
  7    finished, but a policy's violation rate moved past --drift-threshold against
       earlier nights in the same store (see report.html); takes precedence over 1;
       --drift-threshold off turns it off
  70   internal error (a bug): the traceback is printed
  130  interrupted by SIGINT/SIGTERM (rerun the same command to resume)"""
