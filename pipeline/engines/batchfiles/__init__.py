"""Batch files: label a job offline (``vllm run-batch``) or through a host's discounted batch API.

``moderate batch prepare`` writes the job's requests in the OpenAI batch format (one line per unique
text and policy not already answered); ``moderate batch ingest`` reads the result files back into
the store and writes the same shards and cost report as ``moderate run``.
"""
