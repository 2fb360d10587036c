"""The one exception type for bad user input; cli.py turns it into a one-line error."""


class CharlmError(Exception):
    """A problem with the user's input, files or settings, stated in one line."""


class Interrupted(Exception):
    """Training stopped because stop() turned true; the checkpoint of where it stopped is saved."""
