"""A stand-in for a gpt-oss-safeguard host, for demos, tests and benchmarks.

It speaks OpenAI's chat-completions protocol, or the shapes of ModelsLab, OpenRouter, Groq or vLLM
(``SimulatorConfig.profile``), but is not a model: verdicts come from a keyword rule (see ``rules``),
and every model name it serves contains ``simulator`` (ModelsLab's ``model_id`` aside).
``run_batch`` answers an OpenAI batch input file offline. See docs/simulator.md.
"""

from pipeline.simulator.batch import run_batch
from pipeline.simulator.config import EIGHT_WAY_MIX, Faults, SimulatorConfig, SimulatorStats
from pipeline.simulator.server import Simulator, start_simulator

__all__ = ["EIGHT_WAY_MIX", "Faults", "Simulator", "SimulatorConfig", "SimulatorStats", "run_batch",
           "start_simulator"]
