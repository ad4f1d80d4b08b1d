"""Batch moderation of datasets with gpt-oss-safeguard behind an OpenAI-compatible endpoint.

The library a notebook, an orchestrator task or a script calls (docs/api.md); the ``moderate``
command is a thin layer over it.

>>> import pipeline
>>> config = pipeline.load_config("configs/demo.toml", out="out/notebook", limit=20)  # doctest: +SKIP
>>> pipeline.run(config).labels()  # doctest: +SKIP

Names are loaded on first use, so ``import pipeline`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "load_config": "pipeline.api", "run": "pipeline.api", "run_async": "pipeline.api", "RunResult": "pipeline.api",
    "estimate": "pipeline.audit.costing", "check": "pipeline.call.preflight", "evaluate": "pipeline.audit.evaluate",
    "export": "pipeline.audit.trainingset", "write_report": "pipeline.report.html",
    "RunConfig": "pipeline.config.settings",
    # the error tree: ModerateError > UserError > one class per kind of mistake
    "ModerateError": "pipeline.core.errors", "UserError": "pipeline.core.errors",
    "OutputLockedError": "pipeline.core.errors", "ConfigError": "pipeline.config.rules",
    "InputError": "pipeline.readers.base", "PolicyError": "pipeline.plan.policies",
    "PricingError": "pipeline.core.cost", "StorageError": "pipeline.core.storage",
    "StoreError": "pipeline.output.store", "OutputDirError": "pipeline.output.errors",
}

__all__ = [
    "ConfigError", "InputError", "ModerateError", "OutputDirError", "OutputLockedError", "PolicyError", "PricingError",
    "RunConfig", "RunResult", "StorageError", "StoreError", "UserError", "__version__", "check", "estimate",
    "evaluate", "export", "load_config", "run", "run_async", "write_report",
]

if TYPE_CHECKING:
    from pipeline.api import RunResult, load_config, run, run_async
    from pipeline.audit.costing import estimate
    from pipeline.audit.evaluate import evaluate
    from pipeline.audit.trainingset import export
    from pipeline.call.preflight import check
    from pipeline.config.rules import ConfigError
    from pipeline.config.settings import RunConfig
    from pipeline.core.cost import PricingError
    from pipeline.core.errors import ModerateError, OutputLockedError, UserError
    from pipeline.core.storage import StorageError
    from pipeline.output.errors import OutputDirError
    from pipeline.output.store import StoreError
    from pipeline.plan.policies import PolicyError
    from pipeline.readers.base import InputError
    from pipeline.report.html import write_report


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
