"""The command line: train, launch-local, generate, eval, config, sweep, plot, export and viz.
With options.py (the flags) and terminal.py (what is shown), the only modules that talk to the terminal.

MXNet is imported inside the commands that need it, so `charlm --help` stays instant."""
import json
import logging
import signal
import sys
from pathlib import Path

import click

from . import __version__, configs
from .errors import CharlmError, Interrupted
from .options import (CONFIG, CTX, GPU, GPUS, KVSTORE, RUN, RUNS_DIR, SET, Group, Grouped, config_options,
                      typed_flags, user_errors)
from .launch import MAX_PROCESSES, exiting_on
from .terminal import Echo, EpochLines, ProgressBar, StopRequest, echo_done, echo_samples, echo_stopped, ppl


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charlm")
@click.option("--debug", is_flag=True, help="show tracebacks instead of one-line errors")
def main(debug):
    """Character-level language models on MXNet Gluon: train, generate, eval, sweep, plot."""
    log = logging.getLogger("charlm")
    if not any(isinstance(h, Echo) for h in log.handlers):
        log.addHandler(Echo())
        log.setLevel(logging.INFO)


@main.command(cls=Grouped)
@CONFIG
@config_options
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
@user_errors
def train(config_files, sets, runs_dir, name, resume, gpu, gpus, ctx, kvstore, **kwargs):
    """Train a model; defaults train an LSTM on the bundled Time Machine."""
    from . import api
    from .trial import Reporter

    typed = typed_flags(kwargs)
    devices = {"gpu": gpu, "gpus": gpus, "ctx": ctx, "kvstore": kvstore}
    bar, stop, trial = ProgressBar(), StopRequest(), Reporter.from_env()  # a sweep's trainer reports to its trial
    callbacks = [bar, EpochLines(bar)] + ([trial] if trial else [])
    requested = (lambda: stop.requested() or trial.stop()) if trial else stop.requested
    try:
        if resume is None:
            cfg = configs.resolve(config_files, typed, sets, check=False)  # api.train checks it
            run = api.train(cfg, runs_dir=runs_dir, name=name, callbacks=callbacks, stop=requested, **devices)
        else:
            epochs, time_limit = api.resume_settings(typed, config_files, sets, name)
            run = api.train(resume=resume or True, runs_dir=runs_dir, epochs=epochs, time_limit=time_limit,
                            callbacks=callbacks, stop=requested, **devices)
    except Interrupted:
        bar.close()
        if trial:
            trial.interrupted()
        if trial and trial.pruned:
            click.echo(f"pruned by the sweep's early_terminate; the checkpoint is saved. Resume with: charlm train "
                       f"--resume {callbacks[1].run.path}")
            return
        echo_stopped(stop, callbacks[1].run)
    finally:
        stop.restore()
    if run is not None and callbacks[1].run:  # rank 0, and it trained
        if trial:
            trial.finished(run)
        echo_done(run)


@main.command("launch-local", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-n", "--num-workers", type=click.IntRange(1, MAX_PROCESSES), required=True,
              help="worker processes (at most 64: each trains a model of its own on this machine)")
@click.option("-s", "--num-servers", type=click.IntRange(1, MAX_PROCESSES), default=1, show_default=True,
              help="parameter-server processes")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@user_errors
def launch_local(num_workers, num_servers, command):
    """Run `charlm COMMAND` as the workers of a parameter-server cluster on 127.0.0.1, with its scheduler
    and servers: `charlm launch-local -n 2 -- train --kvstore dist_sync ...`. Rank 0 prints the run;
    the first failure stops every process."""
    from . import launch

    if not command:
        raise CharlmError("give the workers' charlm command after --, e.g. "
                          "`charlm launch-local -n 2 -- train --kvstore dist_sync`")

    def started(cluster):
        click.echo(f"launch-local: scheduler on {launch.HOST}:{cluster.port}, {num_servers} server(s), "
                   f"{num_workers} worker(s) running: charlm {' '.join(command)}", err=True)

    code, failed = launch.run_local(num_workers, num_servers, [sys.executable, "-m", "charlm", *command], started)
    if failed == "interrupted":
        click.echo("launch-local: interrupted; every process of the cluster is stopped", err=True)
    elif code:
        click.echo(f"launch-local: {failed} exited with status {code}; stopping the others", err=True)
    sys.exit(code)


@main.group("config")
def config_group():
    """Inspect settings."""


@config_group.command("show")
@CONFIG
@config_options
@SET
@user_errors
def config_show(config_files, sets, **kwargs):
    """Print the config a run of these settings would train with (defaults < files < flags < --set, the rest
    chosen by the recipe) as YAML."""
    from .api import choose

    cfg = configs.resolve(config_files, typed_flags(kwargs), sets)
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
@user_errors
def sweep(sweep_file, dry_run, jobs, storage, runs_dir):
    """Run a grid, random or bayes sweep of configs; re-running resumes it, and workers share one --storage."""
    from . import study, summary as summaries, sweep as sweeps

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

    try:
        with exiting_on(signal.SIGTERM, signal.SIGHUP):
            rows = (study.execute(plan, sweep_dir, storage, jobs, on_done=done) if on_study
                    else sweeps.execute(plan, sweep_dir, jobs, on_done=done))
    except (KeyboardInterrupt, SystemExit) as e:
        click.echo(f"sweep stopped; its runs keep their checkpoints. Resume with: charlm sweep {sweep_file}"
                   + (f" --runs-dir {runs_dir}" if runs_dir != "runs" else "")
                   + (" --storage URL" if storage else ""), err=True)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else e.code)
    best = summaries.best_command(plan, rows)
    click.echo(f"summary: {sweep_dir / 'summary.csv'}" + (f"\nbest: {best}" if best else ""))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="PNG to write  [default: ppl.png in the one directory given, else in the current directory]")
@click.option("--storage", default=None, metavar="URL",
              help="a sweep's study database when it is not the sweep directory's study.db (the sweep's --storage)")
@user_errors
def plot(paths, output, storage):
    """Plot train/validation perplexity per epoch of runs (RUN_DIR... or a sweep directory)."""
    from .plot import plot as draw, plot_study

    output = output or str(Path(paths[0] if len(paths) == 1 else ".") / "ppl.png")
    click.echo(draw(paths, output))
    if len(paths) == 1:  # a sweep on a study: its search too
        from .study import recorded

        study = recorded(paths[0], storage)
        for path in plot_study(study, Path(output).parent) if study else []:
            click.echo(path)


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
@user_errors
def generate(prefix, prefix_file, length, temperature, top_k, top_p, stop, num_samples, live, interactive, seed,
             run_dir, runs_dir, gpu):
    """Continue PREFIX (or --prefix-file, or with -i each line typed) with the run's best model; prints only the
    text."""
    from . import api, generate as gen
    from .text import read_prefix

    gen.check(length, temperature, None, top_p, stop, num_samples)  # before the model loads
    given = (prefix is not None) + (prefix_file is not None)
    if given != (0 if interactive else 1):
        raise CharlmError("-i reads its prefixes from stdin: give no PREFIX or --prefix-file" if interactive else
                          "give a PREFIX or --prefix-file FILE, not both" if given else
                          "give a PREFIX to continue, or --prefix-file FILE (- for stdin)")
    text = read_prefix(prefix_file, sys.stdin.buffer) if prefix_file is not None else prefix
    lm = api.load(run_dir, runs_dir, gpu)
    live = sys.stdout.isatty() if live is None else live
    options = {"length": length, "temperature": temperature, "top_k": top_k, "seed": seed, "top_p": top_p,
               "stop": stop, "num_samples": num_samples}
    if interactive:
        _continue_lines(lm, options, live)
    else:
        echo_samples(lm.stream(text, **options), live)


def _continue_lines(lm, options, live):
    """Continue each line of stdin as generate continues its PREFIX, until an empty line or EOF."""
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if not line:
            return
        try:
            echo_samples(lm.stream(line, **options), live)
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
@user_errors
def evaluate(data_path, task, as_json, run_dir, runs_dir, gpu):
    """Perplexity (per word at word level, with bits per character at char level) of the run's best
    model, or its accuracy on addition lines."""
    from . import api

    if task == "addition" and not data_path:
        raise CharlmError("--task addition needs --data FILE of lines a+b=c (see `charlm data addition`)")
    lm = api.load(run_dir, runs_dir, gpu)
    result = lm.addition_accuracy(data_path) if task == "addition" else lm.score_file(data_path)
    if as_json:
        click.echo(json.dumps(result))
    elif task == "addition":
        click.echo(f"accuracy {result['accuracy']:.4f} | {result['count']:,} lines | by answer position (as "
                   f"written): " + " ".join(f"{p:.2f}" for p in result["position_accuracy"]))
    else:
        per = "per word" if lm.config.data.level == "word" else f"| bpc {result['bpc']:.3f}"
        click.echo(f"loss {result['loss']:.4f} | ppl {ppl(result['ppl'])} {per} | {result['tokens']:,} tokens")


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
@user_errors
def data_addition(digits, count, seed, base, msd_first, pad, mixed, output):
    """Write lines a+b=c: the memory task of the binary-adder tutorial, in decimal by default."""
    from .addition import make_lines
    from .run import write_text

    write_text(output, "\n".join(make_lines(digits, count, seed, base, msd_first, pad, mixed)) + "\n")
    click.echo(f"wrote {count:,} lines to {output}")


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(), help="directory to write the export into")
@click.option("--format", "fmt", required=True, type=click.Choice(["mxnet", "onnx", "web"]),
              help="mxnet: HybridBlock.export's symbol and params files; onnx: model.onnx (needs charlm[onnx]); "
                   "web: index.html, a page that runs the model in the browser, offline")
@click.option("--force", is_flag=True, help="replace --output if it exists")
@RUN
@RUNS_DIR
@user_errors
def export(output, fmt, force, run_dir, runs_dir):
    """Export the run's best model (one generation step, its states in and out) for runtimes without charlm."""
    from .export import export as write_export

    written = write_export(output, fmt, run_dir, runs_dir, force)
    click.echo(f"wrote {written}")


@main.command()
@click.option("--data", "data_path", type=click.Path(), default=None, help="text file to read (the run's encoding)")
@click.option("--text", default=None, help="text to read, given on the command line")
@click.option("--max-tokens", type=click.IntRange(2), default=None,
              help="read at most this many tokens of the text  [default: 1000]")
@click.option("--skip-unknown", is_flag=True, help="drop characters outside the model's vocabulary instead of "
                                                   "stopping at them")
@click.option("-o", "--output", required=True, type=click.Path(), help="HTML file to write")
@RUN
@RUNS_DIR
@user_errors
def viz(data_path, text, max_tokens, skip_unknown, output, run_dir, runs_dir):
    """Write one self-contained HTML page of the run's model reading a text: surprisal, top guesses, units."""
    from . import api, viz as report
    from .trace import MAX_TOKENS

    lm = api.load(run_dir, runs_dir)
    written = report.write_report(lm, output, text, max_tokens or MAX_TOKENS, skip_unknown, data_path)
    click.echo(f"wrote {written}")
