"""The one exception type for bad user input; cli.py turns it into a one-line error."""


class CharlmError(Exception):
    """A problem with the user's input, files or settings, stated in one line."""


class TrainingDiverged(CharlmError):
    """Training stopped at a loss or gradient norm that is not finite (its checkpoints are kept)."""


class Interrupted(Exception):
    """Training stopped because stop() turned true; the checkpoint of where it stopped is saved."""


def mxnet_cause(e):
    """The cause an MXNet exception states: its message's last line, without MXNet's C++ stack."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return lines[-1].removeprefix("MXNetError: ")
