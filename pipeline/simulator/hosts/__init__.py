"""How each host shapes its answers: paths, required fields, error bodies, usage, headers.

``OpenAI`` is the plain shape every other host starts from; ``host_for(profile)`` picks one.
"""

from __future__ import annotations

from pipeline.simulator.hosts.base import OpenAI, Reply
from pipeline.simulator.hosts.groq import Groq
from pipeline.simulator.hosts.modelslab import ModelsLab
from pipeline.simulator.hosts.openrouter import OpenRouter
from pipeline.simulator.hosts.vllm import VLLM

_HOSTS: dict[str, type[OpenAI]] = {
    "openai": OpenAI, "modelslab": ModelsLab, "openrouter": OpenRouter, "groq": Groq, "vllm": VLLM,
}


def host_for(profile: str) -> OpenAI:
    """The shapes of ``profile`` (one of config.PROFILES)."""
    return _HOSTS[profile]()


__all__ = ["Reply", "host_for"]
