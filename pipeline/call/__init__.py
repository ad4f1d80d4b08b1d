"""Calling the model: HTTP transport, one attempt per request, reading the answer into a verdict."""
