"""Input readers: stream rows (id, text) from Parquet, JSON Lines and CSV files, folders, globs and URIs.

>>> from pipeline.readers import open_inputs
>>> inputs = open_inputs(["data/"], text_column="text")  # doctest: +SKIP
>>> for batch in inputs.batches(batch_size=4096):  # doctest: +SKIP
...     ...
"""

from pipeline.readers.base import InputError, InputFile, RowBatch
from pipeline.readers.inputs import InputSet, open_inputs

__all__ = ["InputError", "InputFile", "InputSet", "RowBatch", "open_inputs"]
