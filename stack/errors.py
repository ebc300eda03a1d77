"""Errors a user can hit: each is printed as one clear line by the CLI, never as a traceback."""


class StackError(RuntimeError):
    """Something in the local stack cannot be done; the message says what and where to look."""
