"""Audits of a dataset or a run: cost estimates, evaluation against gold labels, training-set export."""
