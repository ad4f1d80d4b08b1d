"""Quality guards around a run: sampling, canaries and drift of violation rates."""
