"""User-facing errors.

An ``EdgeIQAError`` carries one line for the user: which input is wrong and what to do.
The CLI prints it without a traceback and exits non-zero; library callers can catch it.
"""


class EdgeIQAError(Exception):
    """A problem with the user's input (file, option, config), not a bug in edge-iqa."""


class ImageError(EdgeIQAError):
    """An image file that cannot be decoded or does not fit the model's views."""


class DatasetError(EdgeIQAError):
    """A dataset directory, manifest or adapter input that cannot be read."""
