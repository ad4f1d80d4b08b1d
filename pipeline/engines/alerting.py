"""Alerts at the end of a run (`pipeline.quality.alerts`): sent when the exit code is not 0 and an alert is set.

A failed alert is one warning line; the run's outcome and exit code stay what they were.
"""

from __future__ import annotations

from typing import Any

from pipeline.config.settings import RunConfig
from pipeline.engines.ending import Ending
from pipeline.engines.runlog import RunLog
from pipeline.quality.alerts import alert_summary, post_webhook, run_command

__all__ = ["alert_after_error", "alert_after_run"]


def alert_after_run(config: RunConfig, log: RunLog, ending: Ending) -> None:
    """Alert about a run that ended (any outcome), unless it exited 0 or no alert is set."""
    _send(config, log, exit_code=ending.exit_code, outcome=ending.outcome, out=ending.out, report=ending.report,
          run_cost_usd=ending.run_cost_usd)


def alert_after_error(config: RunConfig, log: RunLog, *, exit_code: int, message: str) -> None:
    """Alert about a run refused before it could start (a usage error, a locked directory)."""
    _send(config, log, exit_code=exit_code, outcome="not_started", out=config.out, error=message)


def _send(config: RunConfig, log: RunLog, *, exit_code: int, outcome: str, out: str, report: Any = None,
          run_cost_usd: float = 0.0, error: str | None = None) -> None:
    if exit_code == 0 or not (config.alert_webhook or config.alert_command):
        return
    summary = log.clean(alert_summary(exit_code=exit_code, outcome=outcome, out=out, report=report,
                                      run_cost_usd=run_cost_usd, max_cost=config.max_cost, error=error))
    if config.alert_webhook:
        failed = post_webhook(config.alert_webhook, summary)
        if failed:
            log.say("warning", f"moderate: warning: the alert webhook failed ({failed}); the exit code stays "
                    f"{exit_code}", alert="webhook", alert_error=failed)
        else:
            log.say("notice", "moderate: alert sent to the webhook", alert="webhook")
    if config.alert_command:
        failed = run_command(config.alert_command, summary)
        if failed:
            log.say("warning", f"moderate: warning: the alert command failed ({failed}); the exit code stays "
                    f"{exit_code}", alert="command", alert_error=failed)
        else:
            log.say("notice", "moderate: alert command run", alert="command")
