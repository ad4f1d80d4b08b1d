"""Batch moderation of datasets with gpt-oss-safeguard behind an OpenAI-compatible endpoint."""

__version__ = "0.1.0"
