"""What charlm shows on the terminal, for cli.py: log lines, the run's first line and a line per epoch, the
progress bar, generated samples and a run's last line; and the signals that stop a run at a batch boundary."""
import logging
import math
import signal
import sys
import time

import click


class Echo(logging.Handler):
    """charlm's log messages on the terminal: warnings on stderr, the rest on stdout."""

    def emit(self, record):
        click.echo(record.getMessage(), err=record.levelno >= logging.WARNING)


class EpochLines:
    """The run's first line, and a line per epoch with its samples."""

    def __init__(self, bar):
        self.bar, self.run = bar, None

    def on_start(self, info):
        from .run import Run

        self.run = Run(info["run"])
        unit = "word" if info["level"] == "word" else "character"
        spread = info["workers"] and " | {} worker(s) x {} device(s), kvstore {}".format(*info["workers"])
        resumed = info["resumed"] or (0, 0)
        if info.get("recipe"):
            click.echo(info["recipe"])
        click.echo(f"run {info['run']} | {info['cell']} | {info['parameters']:,} parameters | "
                   f"{info['vocab_size']:,}-{unit} vocabulary, {'lowercased' if info['lowercase'] else 'case kept'} | "
                   f"{info['train_tokens']:,} train / "
                   f"{info['val_tokens']:,} val" + (spread or "")
                   + (f" | {info['split_lines']:,} lines longer than the largest bucket split" if info["split_lines"]
                      else "")
                   + (f" | resuming after epoch {resumed[0]}" if info["resumed"] else "")
                   + (f" and {resumed[1]} batches of epoch {resumed[0] + 1}" if resumed[1] else ""))

    def on_epoch(self, r, samples):
        self.bar.close()
        ema = " (average)" if r.get("val_loss_ema", math.inf) < r.get("val_loss_raw", math.inf) else ""
        val = f" | val ppl {ppl(r['val_ppl'])}{ema}" if "val_ppl" in r else ""
        at = f" to batch {r['step']} (time limit)" if "step" in r else ""
        click.echo(f"epoch {r['epoch']}{at} | train ppl {ppl(r['train_ppl'])}{val} | "
                   f"{r['tokens_per_s'] / 1e3:.1f}k tok/s | {r['elapsed_s']:.1f} s")
        for text in samples:
            click.echo(f"  > {text!r}")


def ppl(value, decimals=3):
    """A perplexity as text, in exponent form from 1e6 on (a diverging model's reaches 1e304)."""
    return f"{value:.{decimals}f}" if value < 1e6 else f"{value:.{decimals}e}"


class ProgressBar:
    """A tqdm bar per epoch on stderr (off when stderr is not a terminal); reads the loss once a second."""

    def __init__(self):
        self.bar, self.last = None, 0.0

    def on_batch(self, done, total, tokens, running_loss):
        from tqdm import tqdm
        from .run import perplexity

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done - 1, file=sys.stderr, leave=False, unit="batch", disable=None)
            self.start, self.tokens0 = time.perf_counter(), tokens  # rate counted from the first batch's end
        self.bar.update(1)
        if self.bar.disable or time.perf_counter() - self.last < 1.0 or done == 1:
            return
        loss = running_loss()  # a host sync: waits for the queued batches, so the rate below is real
        self.last = time.perf_counter()
        rate = (tokens - self.tokens0) / (self.last - self.start)
        self.bar.set_postfix_str(f"loss {loss:.3f} ppl {ppl(perplexity(loss), 2)} {rate / 1e3:.1f}k tok/s")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar = None


class StopRequest:
    """Catch SIGINT and SIGTERM and stop at the next batch boundary, never inside a checkpoint write."""

    def __init__(self):
        self.signum, self.name = None, None
        self.previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _note(self, signum, frame):
        self.signum, self.name = signum, signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def requested(self):
        """Whether Ctrl-C or SIGTERM arrived."""
        return self.signum is not None

    def restore(self):
        """Put back the signal handlers found at the start."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def echo_samples(pieces, live):
    """Print each sample as generate prints one, `--- sample K ---` before the K-th; the first live if asked."""
    texts = None
    for block in pieces:
        texts = texts or [[] for _ in block]
        for text, piece in zip(texts, block):
            text.append(piece)
        if live and block[0]:
            click.echo(block[0], nl=False)  # click.echo flushes
    for k, text in enumerate(texts, 1):
        if k > 1:
            click.echo(f"--- sample {k} ---")
        click.echo("" if live and k == 1 else "".join(text))


def echo_stopped(stop, run):
    """Say where an interrupted run stands (rank 0 speaks for the run) and exit 130 (SIGINT) or 143 (SIGTERM)."""
    if run is None:
        sys.exit(128 + stop.signum)
    state = run.read_state()
    where = (f"epoch {state['epoch'] + 1} after batch {state['step']}" if state.get("step")
             else f"the end of epoch {state.get('epoch', 0)}")
    kept = f"the checkpoint of {where} is saved" if state.get("last") else "no checkpoint was saved yet"
    click.echo(f"stopped by {stop.name}; {kept}. Resume with: charlm train --resume {run.path}", err=True)
    sys.exit(128 + stop.signum)


def echo_done(run):
    """The final line: the best checkpoint's perplexity, and the test text's when there is one."""
    from .run import checkpoint_metric, perplexity

    state, records = run.read_state(), run.metrics()
    if not records:
        click.echo(f"done | the time limit ended before the first epoch did: no model to score yet | resume with: "
                   f"charlm train --resume {run.path} --time-limit LONGER")
        return
    metric = "val" if "val_loss" in records[-1] else "train"
    best = checkpoint_metric(run.best(records))
    test = f" | test ppl {ppl(state['test']['test_ppl'])}" if "test" in state else ""
    click.echo(f"done | best {metric} ppl {ppl(perplexity(best))}{test} | {run.path}")
