"""Errors that are the user's to fix: ``bobjax.main`` prints them as one line, without a traceback.

Anything else is a bug in bobjax and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the file, field or value and what was expected."""


class ConfigError(UserError, ValueError):
    """A config field has a value bobjax cannot use."""
