"""A training callback that writes each epoch's metrics and samples as TensorBoard event files (tensorboardX)."""
from pathlib import Path

from .errors import CharlmError


def writer_class():
    """tensorboardX's SummaryWriter, or a one-line error saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise CharlmError('--tensorboard needs tensorboardX: pip install "charlm[tensorboard]"') from None
    return SummaryWriter


class TensorBoard:
    """Events in directory/<run name>, one step per epoch, written at its end (a sync point: no cost per batch)."""

    def __init__(self, directory):
        self.directory, self.writer = Path(directory), None

    def on_start(self, info):
        self.writer = writer_class()(str(self.directory / Path(info["run"]).name))

    def on_epoch(self, record, samples):
        epoch = record["epoch"]
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch)
        for k, text in enumerate(samples):
            self.writer.add_text(f"sample {k + 1}", text, epoch)
        self.writer.flush()

    def close(self):
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()
