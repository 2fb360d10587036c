"""The command line: train, launch-local, generate, eval, config, sweep and plot.
The only module that talks to the terminal.

MXNet is imported inside the commands that need it, so `charlm --help` stays instant."""
import functools
import json
import logging
import math
import os
import signal
import sys
import time
import typing
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__, configs
from .errors import CharlmError, Interrupted, mxnet_cause
from .launch import KVSTORES, MAX_PROCESSES

RUNS_DIR = click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
                        help="directory that holds run directories and the `latest` pointer")
GPU = click.option("--gpu", is_flag=True, help="run on mx.gpu(0) (needs MXNet's CUDA build)")
CONFIG = click.option("-c", "--config", "config_files", multiple=True, type=click.Path(dir_okay=False),
                      help="YAML config file (sections data, model, train); repeat it, later files win")
SET = click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                   help="override one setting last of all, the value read as YAML; repeatable")
CTX = click.option("--ctx", default=None, metavar="cpu:0,cpu:1",
                   help="train data-parallel on these devices, each batch split along N (several CPU contexts "
                        "run the multi-device path on a CPU machine)")
GPUS = click.option("--gpus", default=None, metavar="0,1", help="train data-parallel on these GPUs")
KVSTORE = click.option("--kvstore", type=click.Choice(KVSTORES), default="local", show_default=True,
                       help="MXNet kvstore that sums gradients: over devices (local, device) or over the workers "
                            "of a cluster too (dist_sync, dist_async; start them with launch-local or "
                            "mxnet.tools.launch)")
RUN = click.option("--run", "run_dir", type=click.Path(), default=None,
                   help="run directory  [default: the latest run in --runs-dir]")


def _user_errors(command):
    """Turn CharlmError, and MXNet's errors, into click's one-line error (exit 1); --debug shows the traceback
    instead."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as e:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            if isinstance(e, CharlmError):
                raise click.ClickException(str(e)) from None
            if type(e).__name__ != "MXNetError":  # matched by name: MXNet is imported only by commands that need it
                raise
            # What no check of charlm's foresaw (a resource MXNet cannot get, say): its cause, not its C++ stack.
            raise click.ClickException(f"MXNet failed: {mxnet_cause(e)} (`charlm --debug ...` shows the traceback)"
                                       ) from None
    return wrapper


def _config_options(command):
    """Add one flag per config key (`--hidden-size` for model.hidden_size), showing its default."""
    types = {int: int, float: float, str: str, typing.Optional[int]: int, typing.Optional[float]: float,
             typing.Optional[str]: click.Path(dir_okay=True)}
    for section, f in reversed(configs.keys()):
        flag = configs.flag_name(f)
        if not flag:
            continue
        dest, help = f"{section}__{f.name}", f"{f.metadata['help']}  [{section}.{f.name}]"
        if f.type in (bool, typing.Optional[bool]):
            option = click.option(f"--{flag}/--no-{flag}", dest, default=f.default,
                                  show_default=f.default is not None, help=help)
        else:
            kind = click.Choice(f.metadata["choices"]) if "choices" in f.metadata else types[f.type]
            option = click.option(f"--{flag}", dest, type=kind, default=f.default, metavar=f.metadata.get("metavar"),
                                  show_default=f.default is not None, help=help)
        command = option(command)
    return command


def _typed_flags(kwargs):
    """The config flags the user actually typed, as {(section, name): value}."""
    ctx = click.get_current_context()
    return {tuple(k.split("__")): v for k, v in kwargs.items()
            if "__" in k and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}


SECTIONS = {"data": "Data", "model": "Model", "train": "Training", "devices": "Devices", "run": "Run",
            "other": "Other"}
SECTION_OF = {"config_files": "run", "sets": "run", "runs_dir": "run", "name": "run", "resume": "run", "gpu": "devices",
              "gpus": "devices", "ctx": "devices", "kvstore": "devices"}


class _Grouped(click.Command):
    """A command whose --help lists its options by section (data, model, training, devices, run), as
    torch-rnn's flag documentation does."""

    def format_options(self, ctx, formatter):
        groups = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                section = param.name.split("__")[0] if "__" in param.name else SECTION_OF.get(param.name, "other")
                groups.setdefault(section, []).append(record)
        for section, title in SECTIONS.items():
            if section in groups:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(groups[section])


class _Echo(logging.Handler):
    """charlm's log messages on the terminal: warnings on stderr, the rest on stdout."""

    def emit(self, record):
        click.echo(record.getMessage(), err=record.levelno >= logging.WARNING)


class _Group(click.Group):
    """A click group whose usage errors are one line too, like every other charlm error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else ctx.command_path
            raise click.ClickException(f"{e.format_message()} (see `{where} --help`)") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charlm")
@click.option("--debug", is_flag=True, help="show tracebacks instead of one-line errors")
def main(debug):
    """Character-level language models on MXNet Gluon: train, generate, eval, sweep, plot."""
    log = logging.getLogger("charlm")
    if not any(isinstance(h, _Echo) for h in log.handlers):
        log.addHandler(_Echo())
        log.setLevel(logging.INFO)


@main.command(cls=_Grouped)
@CONFIG
@_config_options
@SET
@RUNS_DIR
@click.option("--name", default=None, help="run directory name  [default: the start time, YYYYmmdd-HHMMSS]")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="continue a run from its last checkpoint (RUN_DIR defaults to the latest run); "
                   "--epochs then raises its target, --time-limit sets its budget (earlier sessions included)")
@GPU
@GPUS
@CTX
@KVSTORE
@_user_errors
def train(config_files, sets, runs_dir, name, resume, gpu, gpus, ctx, kvstore, **kwargs):
    """Train a model; defaults train an LSTM on the bundled Time Machine."""
    from . import api

    typed = _typed_flags(kwargs)
    devices = {"gpu": gpu, "gpus": gpus, "ctx": ctx, "kvstore": kvstore}
    bar, stop, trial = _ProgressBar(), _StopRequest(), _sweep_trial()
    callbacks = [bar, _EpochLines(bar)] + ([trial] if trial else [])
    requested = (lambda: stop.requested() or trial.stop()) if trial else stop.requested
    try:
        if resume is None:
            cfg = configs.resolve(config_files, typed, sets)
            run = api.train(cfg, runs_dir=runs_dir, name=name, callbacks=callbacks, stop=requested, **devices)
        else:
            if config_files or sets or name or set(typed) - {("train", "epochs"), ("train", "time_limit")}:
                raise CharlmError("--resume continues a run with its own config.yaml: only --epochs and --time-limit "
                                  "may be given")
            run = api.train(resume=resume or True, runs_dir=runs_dir, epochs=typed.get(("train", "epochs")),
                            time_limit=typed.get(("train", "time_limit")), callbacks=callbacks,
                            stop=requested, **devices)
    except Interrupted:
        bar.close()
        if trial:
            trial.interrupted()
        if trial and trial.pruned:
            click.echo(f"pruned by the sweep's early_terminate; the checkpoint is saved. Resume with: charlm train "
                       f"--resume {callbacks[1].run.path}")
            return
        _stopped(stop, callbacks[1].run)
    finally:
        stop.restore()
    if run is not None and callbacks[1].run:  # rank 0, and it trained
        if trial:
            trial.finished(run)
        _done(run)


def _sweep_trial():
    """The trial of a sweep's study this trainer runs (the sweep sets it in the environment), or None."""
    if "CHARLM_TRIAL" not in os.environ:  # no Optuna import for a plain run
        return None
    from .trial import Reporter

    return Reporter.from_env()


def _stopped(stop, run):
    """Say where an interrupted run stands (rank 0 speaks for the run) and exit 130 (SIGINT) or 143 (SIGTERM)."""
    if run is None:
        sys.exit(128 + stop.signum)
    state = run.read_state()
    where = (f"epoch {state['epoch'] + 1} after batch {state['step']}" if state.get("step")
             else f"the end of epoch {state.get('epoch', 0)}")
    kept = f"the checkpoint of {where} is saved" if state.get("last") else "no checkpoint was saved yet"
    click.echo(f"stopped by {stop.name}; {kept}. Resume with: charlm train --resume {run.path}", err=True)
    sys.exit(128 + stop.signum)


def _done(run):
    """The final line: the best checkpoint's perplexity, and the test text's when there is one."""
    from .training import checkpoint_metric, perplexity

    state, records = run.read_state(), run.metrics()
    if not records:
        click.echo(f"done | the time limit ended before the first epoch did: no model to score yet | resume with: "
                   f"charlm train --resume {run.path} --time-limit LONGER")
        return
    metric = "val" if "val_loss" in records[-1] else "train"
    best = min(map(checkpoint_metric, records))
    test = f" | test ppl {_ppl(state['test']['test_ppl'])}" if "test" in state else ""
    click.echo(f"done | best {metric} ppl {_ppl(perplexity(best))}{test} | {run.path}")


class _EpochLines:
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
        val = f" | val ppl {_ppl(r['val_ppl'])}{ema}" if "val_ppl" in r else ""
        at = f" to batch {r['step']} (time limit)" if "step" in r else ""
        click.echo(f"epoch {r['epoch']}{at} | train ppl {_ppl(r['train_ppl'])}{val} | "
                   f"{r['tokens_per_s'] / 1e3:.1f}k tok/s | {r['elapsed_s']:.1f} s")
        for text in samples:
            click.echo(f"  > {text!r}")


def _ppl(value, decimals=3):
    """A perplexity as text, in exponent form from 1e6 on (a diverging model's reaches 1e304)."""
    return f"{value:.{decimals}f}" if value < 1e6 else f"{value:.{decimals}e}"


@main.command("launch-local", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-n", "--num-workers", type=click.IntRange(1, MAX_PROCESSES), required=True,
              help="worker processes (at most 64: each trains a model of its own on this machine)")
@click.option("-s", "--num-servers", type=click.IntRange(1, MAX_PROCESSES), default=1, show_default=True,
              help="parameter-server processes")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_user_errors
def launch_local(num_workers, num_servers, command):
    """Run `charlm COMMAND` as the workers of a parameter-server cluster on 127.0.0.1, with its scheduler
    and servers: `charlm launch-local -n 2 -- train --kvstore dist_sync ...`. Rank 0 prints the run;
    the first failure stops every process."""
    from . import launch

    if not command:
        raise CharlmError("give the workers' charlm command after --, e.g. "
                          "`charlm launch-local -n 2 -- train --kvstore dist_sync`")
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with launch.loopback(num_workers, num_servers, [sys.executable, "-m", "charlm", *command]) as cluster:
            click.echo(f"launch-local: scheduler on {launch.HOST}:{cluster.port}, {num_servers} server(s), "
                       f"{num_workers} worker(s) running: charlm {' '.join(command)}", err=True)
            code, failed = cluster.wait()
            if code:
                click.echo(f"launch-local: {failed} exited with status {code}; stopping the others", err=True)
    except KeyboardInterrupt:
        click.echo("launch-local: interrupted; every process of the cluster is stopped", err=True)
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the cluster's cleanup


@main.group("config")
def config_group():
    """Inspect settings."""


@config_group.command("show")
@CONFIG
@_config_options
@SET
@_user_errors
def config_show(config_files, sets, **kwargs):
    """Print the config a run of these settings would train with (defaults < files < flags < --set, the rest
    chosen by the recipe) as YAML."""
    from .api import choose

    cfg = configs.resolve(config_files, _typed_flags(kwargs), sets)
    chosen = choose(cfg)
    click.echo((f"# {chosen}\n" if chosen else "") + configs.to_yaml(cfg), nl=False)


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="list the planned runs and their status, then exit")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, MAX_PROCESSES),
              help="runs at once (each gets cores/jobs threads; on 2 cores one at a time is usually right)")
@click.option("--storage", default=None, metavar="URL",
              help="the study's database, any SQLAlchemy URL shared by the sweep's workers on other machines  "
                   "[default: sqlite:///RUNS_DIR/NAME/study.db, for bayes and early_terminate]")
@RUNS_DIR
@_user_errors
def sweep(sweep_file, dry_run, jobs, storage, runs_dir):
    """Run a grid, random or bayes sweep of configs; re-running resumes it, and workers share one --storage."""
    from . import study, sweep as sweeps

    plan = sweeps.load(sweep_file)
    sweep_dir = Path(runs_dir) / plan.name
    on_study = plan.uses_study or storage is not None
    if dry_run:
        for state, run in (study.dry_run(plan, sweep_dir, storage) if on_study else sweeps.dry_run(plan, sweep_dir)):
            click.echo(f"{state:12} {run}")
        return
    finished = []

    def done(row):
        finished.append(row["run"])
        best = row.get(f"best_{plan.metric}")
        result = f"best {plan.metric} {best:.4g} at epoch {row['best_epoch']}" if best is not None else ""
        click.echo(f"[{len(finished)}] {row['run']}: {row['state']}" + (f" | {result}" if result else "")
                   + (f" | {row['error']}" if row["error"] else ""))

    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        rows = (study.execute(plan, sweep_dir, storage, jobs, on_done=done) if on_study
                else sweeps.execute(plan, sweep_dir, jobs, on_done=done))
    except (KeyboardInterrupt, SystemExit) as e:
        click.echo(f"sweep stopped; its runs keep their checkpoints. Resume with: charlm sweep {sweep_file}"
                   + (f" --runs-dir {runs_dir}" if runs_dir != "runs" else "")
                   + (" --storage URL" if storage else ""), err=True)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else e.code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    best = sweeps.best_command(plan, rows)
    click.echo(f"summary: {sweep_dir / 'summary.csv'}" + (f"\nbest: {best}" if best else ""))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="PNG to write  [default: ppl.png in the one directory given, else in the current directory]")
@_user_errors
def plot(paths, output):
    """Plot train/validation perplexity per epoch of runs (RUN_DIR... or a sweep directory)."""
    from .plot import plot as draw

    output = output or str(Path(paths[0] if len(paths) == 1 else ".") / "ppl.png")
    click.echo(draw(paths, output))
    if len(paths) == 1:  # a sweep on a study: its search too
        from .study import plot as draw_study

        for path in draw_study(paths[0], Path(output).parent) or []:
            click.echo(path)


class _StopRequest:
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


class _ProgressBar:
    """A tqdm bar per epoch on stderr (off when stderr is not a terminal); reads the loss once a second."""

    def __init__(self):
        self.bar, self.last = None, 0.0

    def on_batch(self, done, total, tokens, running_loss):
        from tqdm import tqdm
        from .training import perplexity

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done - 1, file=sys.stderr, leave=False, unit="batch", disable=None)
            self.start, self.tokens0 = time.perf_counter(), tokens  # rate counted from the first batch's end
        self.bar.update(1)
        if self.bar.disable or time.perf_counter() - self.last < 1.0 or done == 1:
            return
        loss = running_loss()  # a host sync: waits for the queued batches, so the rate below is real
        self.last = time.perf_counter()
        rate = (tokens - self.tokens0) / (self.last - self.start)
        self.bar.set_postfix_str(f"loss {loss:.3f} ppl {_ppl(perplexity(loss), 2)} {rate / 1e3:.1f}k tok/s")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar = None


def _read_prefix(path):
    """The text of a prefix file (- for stdin), as it is: its last line break too."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise CharlmError(f"cannot read prefix file {path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise CharlmError(f"prefix file {path} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}") \
            from None


def _echo_samples(pieces, live):
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


@main.command()
@click.argument("prefix", required=False)
@click.option("--prefix-file", metavar="FILE", default=None,
              help="continue the text of this UTF-8 file (- for stdin) instead of PREFIX, its last line break too")
@click.option("--length", default=100, show_default=True,
              help="tokens to generate: characters, or words at word level")
@click.option("--temperature", type=float, default=None,
              help="sample with this softmax temperature  [default: greedy argmax]")
@click.option("--top-k", type=int, default=None, help="sample only from the k likeliest tokens")
@click.option("--top-p", type=float, default=None,
              help="sample only from the smallest set of likeliest tokens whose probabilities sum to at least P "
                   "(nucleus sampling, after the temperature)")
@click.option("--stop", multiple=True, metavar="TEXT",
              help="end a continuation just before the first TEXT it produces (TEXT is not printed); repeatable. "
                   "In lines mode a continuation also ends at its line end")
@click.option("--num-samples", default=1, show_default=True,
              help="continuations made as one batch, printed one after another, a line `--- sample K ---` before "
                   "each from the second on")
@click.option("--stream/--no-stream", "live", default=None,
              help="write the text as it is produced  [default: when stdout is a terminal]")
@click.option("-i", "--interactive", is_flag=True,
              help="keep the model loaded and continue each line read from stdin, until an empty line or EOF")
@click.option("--seed", type=int, default=None, help="random seed for sampling")
@RUN
@RUNS_DIR
@GPU
@_user_errors
def generate(prefix, prefix_file, length, temperature, top_k, top_p, stop, num_samples, live, interactive, seed,
             run_dir, runs_dir, gpu):
    """Continue PREFIX (or --prefix-file, or with -i each line typed) with the run's best model; prints only the
    text."""
    from . import api, generate as gen

    gen.check(length, temperature, None, top_p, stop, num_samples)  # before the model loads
    given = (prefix is not None) + (prefix_file is not None)
    if given != (0 if interactive else 1):
        raise CharlmError("-i reads its prefixes from stdin: give no PREFIX or --prefix-file" if interactive else
                          "give a PREFIX or --prefix-file FILE, not both" if given else
                          "give a PREFIX to continue, or --prefix-file FILE (- for stdin)")
    text = _read_prefix(prefix_file) if prefix_file is not None else prefix
    lm = api.load(run_dir, runs_dir, gpu)
    live = sys.stdout.isatty() if live is None else live
    options = {"length": length, "temperature": temperature, "top_k": top_k, "seed": seed, "top_p": top_p,
               "stop": stop, "num_samples": num_samples}
    if interactive:
        _continue_lines(lm, options, live)
    else:
        _echo_samples(lm.stream(text, **options), live)


def _continue_lines(lm, options, live):
    """Continue each line of stdin as generate continues its PREFIX, until an empty line or EOF."""
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if not line:
            return
        try:
            _echo_samples(lm.stream(line, **options), live)
        except CharlmError as e:  # one bad prompt does not end the session
            click.echo(f"Error: {e}", err=True)


@main.command("eval")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="text file to score  [default: the run's validation text]")
@click.option("--task", type=click.Choice(["lm", "addition"]), default="lm",
              help="lm: loss and perplexity; addition: exact-match accuracy of greedy answers after `=`")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a line")
@RUN
@RUNS_DIR
@GPU
@_user_errors
def evaluate(data_path, task, as_json, run_dir, runs_dir, gpu):
    """Perplexity (per word at word level, with bits per character at char level) of the run's best
    model, or its accuracy on addition lines."""
    from . import api

    if task == "addition" and not data_path:
        raise CharlmError("--task addition needs --data FILE of lines a+b=c (see `charlm data addition`)")
    lm = api.load(run_dir, runs_dir, gpu)
    if task == "addition":
        return _eval_addition(lm, data_path, as_json)
    result = lm.score_file(data_path)
    if as_json:
        click.echo(json.dumps(result))
    else:
        per = "per word" if lm.config.data.level == "word" else f"| bpc {result['bpc']:.3f}"
        click.echo(f"loss {result['loss']:.4f} | ppl {_ppl(result['ppl'])} {per} | {result['tokens']:,} tokens")


def _eval_addition(lm, data_path, as_json):
    """Print the exact-match accuracy of the run's best model on the addition lines of data_path."""
    from . import addition, data

    path = data.check_file(Path(data_path))
    lines = [line for line in data.read_text(path).splitlines() if line.strip()]
    vocab = lm.vocab
    start = vocab.bos if lm.config.data.mode == "lines" else vocab.eos
    if vocab.level != "char" or start is None:
        raise CharlmError(f"{lm.run.path} is not a character model trained on lines: it cannot answer a+b=")
    exact, positions = addition.accuracy(lm.model, vocab, start, lines, lm.ctx)
    result = {"accuracy": exact, "count": len(lines), "position_accuracy": positions}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"accuracy {exact:.4f} | {len(lines):,} lines | by answer position (as written): "
                   + " ".join(f"{p:.2f}" for p in positions))


@main.group("data")
def data_group():
    """Make datasets."""


@data_group.command("addition")
@click.option("--digits", default=8, show_default=True, help="numbers of up to this many digits")
@click.option("--count", default=50000, show_default=True, help="lines to write")
@click.option("--seed", default=1, show_default=True, help="random seed (use another one for a test set)")
@click.option("--base", default=10, show_default=True, help="number base (2 for the binary-adder tutorial)")
@click.option("--msd-first", is_flag=True, help="write the most significant digit first  [default: least first]")
@click.option("--pad", is_flag=True, help="zero-pad a and b to --digits digits and c to one more (fixed width)")
@click.option("--mixed", is_flag=True, help="draw each number's digit count uniformly from 1 to --digits, "
              "then its value  [default: values uniform below base**digits, almost all full length]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="file to write")
@_user_errors
def data_addition(digits, count, seed, base, msd_first, pad, mixed, output):
    """Write lines a+b=c: the memory task of the binary-adder tutorial, in decimal by default."""
    from .addition import make_lines
    from .run import write_text

    write_text(output, "\n".join(make_lines(digits, count, seed, base, msd_first, pad, mixed)) + "\n")
    click.echo(f"wrote {count:,} lines to {output}")


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(), help="directory to write the export into")
@click.option("--format", "fmt", required=True, type=click.Choice(["mxnet", "onnx"]),
              help="mxnet: HybridBlock.export's symbol and params files; onnx: model.onnx (needs charlm[onnx])")
@click.option("--force", is_flag=True, help="replace --output if it exists")
@RUN
@RUNS_DIR
@_user_errors
def export(output, fmt, force, run_dir, runs_dir):
    """Export the run's best model (one generation step, its states in and out) for runtimes without charlm."""
    from .export import export as write_export

    click.echo(f"wrote {write_export(output, fmt, run_dir, runs_dir, force)}")
