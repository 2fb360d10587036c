"""Training and validation perplexity per epoch of one or more runs, as a PNG (matplotlib is optional)."""
from pathlib import Path

from .configs import differing, flat
from .errors import CharlmError
from .run import CONFIG, Run, atomic_write, epoch_records, find


def runs_in(paths):
    """Run directories named by paths: a run directory itself, or the runs inside a sweep directory."""
    found = []
    for path in map(Path, paths):
        if (path / CONFIG).exists():
            found.append(find(path))
        elif path.is_dir():
            found += [Run(p) for p in sorted(path.iterdir()) if (p / CONFIG).exists() and not p.is_symlink()]
        else:
            raise CharlmError(f"{path} is not a run directory or a directory of runs")
    if not found:
        raise CharlmError(f"no run directories in {', '.join(map(str, paths))}")
    return found


def labels(runs):
    """A label per run from the settings that differ between them (the directory name if none do)."""
    flats = [flat(r.config()) for r in runs]
    differ = differing(flats)
    return [", ".join(f"{k.split('.')[-1]}={f[k]}" for k in differ) or r.path.name for r, f in zip(runs, flats)]


def plot(paths, output):
    """Write a log-scale plot of train (dashed) and validation (solid) perplexity per epoch; return its path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        raise CharlmError("charlm plot needs matplotlib: pip install 'charlm[plot]' "
                          "(or pip install matplotlib)") from None
    runs = runs_in(paths)
    metrics = [epoch_records(run.metrics()) for run in runs]
    if not any(metrics):
        raise CharlmError(f"no epoch has finished in {', '.join(map(str, paths))} yet: nothing to plot")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (records, label) in enumerate(zip(metrics, labels(runs))):
        color, dots = f"C{i % 10}", {"marker": "o", "markersize": 3}  # one epoch is one point: a line draws nothing
        for key, part, style in (("val_ppl", "val", {}), ("train_ppl", "train", {"linestyle": "--", "alpha": 0.6})):
            scored = [r for r in records if key in r]  # a record may lack either (no validation, a hand-made line)
            if scored:
                ax.plot([r["epoch"] for r in scored], [r[key] for r in scored], color=color,
                        label=f"{label} ({part})", **style, **dots)
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(ScalarFormatter())  # 4, 5, 6 rather than 4x10^0
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(runs) > 4 else 1)
    fig.tight_layout()
    atomic_write(output, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(output)


def plot_study(study, output_dir):
    """Draw an Optuna study's optimisation history and (with two complete trials) its parameter importances (PED-
    ANOVA's: fANOVA needs scikit-learn) as PNGs in output_dir; return their paths."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as views

    def importances(study):
        return views.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    drawn = []
    for name, view, needs in (("history", views.plot_optimization_history, 1), ("importance", importances, 2)):
        if len(complete) < needs:
            continue
        fig = view(study).figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        path = Path(output_dir) / f"{name}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        drawn.append(path)
    return drawn
