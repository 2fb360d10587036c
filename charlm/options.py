"""The command line's options and the click plumbing shared by its commands: one flag per config key, --help by
section, one-line errors. It parses; cli.py's commands print."""
import functools
import typing

import click
from click.core import ParameterSource

from . import configs
from .errors import CharlmError, mxnet_cause
from .launch import KVSTORES

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


def user_errors(command):
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
            if isinstance(e, MemoryError):  # numpy's names the allocation: "Unable to allocate 8 GiB for an array..."
                raise click.ClickException(f"out of memory: {str(e) or 'an allocation failed'}; the text, the model "
                                           f"or a batch is too large for this machine (`charlm --debug ...` shows "
                                           f"which)") from None
            if type(e).__name__ != "MXNetError":  # matched by name: MXNet is imported only by commands that need it
                raise
            # What no check of charlm's foresaw (a resource MXNet cannot get, say): its cause, not its C++ stack.
            raise click.ClickException(f"MXNet failed: {mxnet_cause(e)} (`charlm --debug ...` shows the traceback)"
                                       ) from None
    return wrapper


def config_options(command):
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


def typed_flags(kwargs):
    """The config flags the user actually typed, as {(section, name): value}."""
    ctx = click.get_current_context()
    return {tuple(k.split("__")): v for k, v in kwargs.items()
            if "__" in k and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}


SECTIONS = {"data": "Data", "model": "Model", "train": "Training", "devices": "Devices", "run": "Run",
            "other": "Other"}
SECTION_OF = {"config_files": "run", "sets": "run", "runs_dir": "run", "name": "run", "resume": "run", "gpu": "devices",
              "gpus": "devices", "ctx": "devices", "kvstore": "devices"}


class Grouped(click.Command):
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


class Group(click.Group):
    """A click group whose usage errors are one line too, like every other charlm error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else ctx.command_path
            raise click.ClickException(f"{e.format_message()} (see `{where} --help`)") from None

