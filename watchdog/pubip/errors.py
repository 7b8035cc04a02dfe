"""Errors the command line reports as one line and exit code 2."""


class PubipError(Exception):
    """A request that cannot be carried out; the message names the culprit."""
