"""A stand-in for a gpt-oss-safeguard host, for demos, tests and benchmarks.

It speaks OpenAI's chat-completions protocol but is not a model: verdicts come from a keyword
rule (see ``rules``), and every model name it serves contains ``simulator``.
"""

from pipeline.simulator.config import Faults, SimulatorConfig, SimulatorStats
from pipeline.simulator.server import Simulator, start_simulator

__all__ = ["Faults", "Simulator", "SimulatorConfig", "SimulatorStats", "start_simulator"]
