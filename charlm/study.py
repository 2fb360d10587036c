"""Sweeps on an Optuna study: TPE sampling (bayes), successive-halving early termination, and the study in a SQL
database that several sweep processes share, each running trials as `charlm train` processes (trial.py)."""
import contextlib
import json
import os
import stat
import time
import warnings
from pathlib import Path

from . import configs, summary as summaries, sweep as sweeps, trainers
from .errors import CharlmError
from .run import Run, read_json, write_text

DB = "study.db"  # the default storage, in the sweep directory
POINTER = "study.json"  # which study a sweep directory's trials live in, and whether in its study.db, for `charlm plot`
TRIAL_ENV = "CHARLM_TRIAL"  # how a sweep tells its trainer which trial it is (trial.py)
HEARTBEAT, GRACE = 5, 60  # seconds: a running trial whose sweep has written nothing for GRACE s is taken as dead
RETRIES = 1  # a point whose trainer died is run again this many times (resumed from its checkpoint)
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def optuna_module():
    """Optuna, quietened; without it a one-line error that names the extra."""
    try:
        import optuna
    except ImportError:
        raise CharlmError(f"sweeps with method bayes, early_terminate or --storage need Optuna: {sweeps.EXTRA}"
                          ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, PED-ANOVA
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # charlm's sweep records them, not optimize()
    return optuna


def default_storage(sweep_dir):
    """The SQLite file in the sweep directory, as a URL; one that is a link, a FIFO or a device is refused before
    SQLite opens it (a received sweep directory's study.db could link to any file of the user's)."""
    db = Path(sweep_dir) / DB
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(db.lstat().st_mode):
            raise CharlmError(f"{db} is not a regular file (a symbolic link?): charlm opens only a real study.db in "
                              f"a sweep directory (remove it, or give --storage)")
    return _db_url(sweep_dir)


def _db_url(sweep_dir):
    return f"sqlite:///{(Path(sweep_dir) / DB).resolve()}"


def shown(url):
    """The URL without its password, for messages."""
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url


def reason(error):
    """The first line of the innermost cause of an error: the driver's own words (a missing module, a refused
    connection, a file that is no database), not Optuna's or SQLAlchemy's wrapping of them."""
    while error.__cause__ is not None:
        error = error.__cause__
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def storage(url, create=True):
    """The database at url (any SQLAlchemy URL), with heartbeats; an unreachable or non-database one is one line."""
    optuna = optuna_module()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):  # workers starting together race to create the tables: a second try finds them made
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT,
                                              grace_period=GRACE, heartbeat_stale_trial_callback=_retry_dead,
                                              skip_table_creation=not create)
        except Exception as e:  # SQLAlchemy's errors, a missing driver, a file that is no database
            if isinstance(e, ImportError) or attempt == 2:
                raise CharlmError(f"cannot open the study storage {shown(url)}: {reason(e)}") from None
            time.sleep(0.5)


def pruner(early_terminate):
    """W&B's hyperband as Optuna's asynchronous successive halving: at epochs min_iter * eta**k a run goes on only
    if it is in the best 1/eta of the runs that reached that epoch."""
    optuna = optuna_module()
    if early_terminate is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=early_terminate["min_iter"],
                                                  reduction_factor=early_terminate["eta"])


def _sampler(sweep, number):
    """TPE seeded by the sweep's seed and the trial's number: reproducible, and workers drawing at once differ."""
    optuna = optuna_module()
    startup = max(2, min(10, (sweep.run_cap or 0) // 3))  # random draws before TPE models; a third of a small cap
    return optuna.samplers.TPESampler(seed=(sweep.seed * 1_000_003 + number) % 2**32, n_startup_trials=startup)


def signature(sweep):
    """What makes a study this sweep's: everything but a bayes sweep's run_cap, which a re-run may raise (a grid's
    or random sweep's points are all enqueued when the study is made)."""
    return json.dumps({"base": sweep.base, "method": sweep.method, "metric": sweep.metric, "goal": sweep.goal,
                       "seed": sweep.seed, "parameters": sweep.parameters, "early_terminate": sweep.early_terminate,
                       "run_cap": None if sweep.method == "bayes" else sweep.run_cap}, sort_keys=True, default=str)


def _check_values(sweep):
    for key, spec in sweep.parameters.items():
        if any(v is not None and not isinstance(v, (bool, int, float, str)) for v in spec.get("values", [])):
            raise CharlmError(f"parameters.{key}: a sweep on a study takes values that are numbers, strings, "
                              f"booleans or null")


def open_study(sweep, sweep_dir, url, store=None):
    """Create the sweep's study at url (its grid or random points, or the recipe's choice, enqueued first) or load
    it, through store (storage(url) by default); a study of another sweep file under the same name is an error
    that changes nothing."""
    optuna = optuna_module()
    _check_values(sweep)
    store = store or storage(url)
    try:
        study = optuna.create_study(study_name=sweep.name, storage=store, direction=sweep.goal,
                                    pruner=pruner(sweep.early_terminate))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.name, storage=store, pruner=pruner(sweep.early_terminate))
        _check_same(study, sweep, url)
    else:
        for name, point, attrs in _first_points(sweep):
            study.enqueue_trial(point, user_attrs={**attrs, **({"run": name} if name else {})})
        study.set_user_attr("sweep", signature(sweep))  # last: a second worker waits for it
    stored = DB if url == _db_url(sweep_dir) else shown(url)  # relative: the directory may move; no password
    write_text(Path(sweep_dir) / POINTER, json.dumps({"storage": stored, "study": sweep.name}) + "\n")
    return study


def _check_same(study, sweep, url):
    """Wait for the creator to finish setting the study up, then refuse another sweep file's study."""
    deadline = time.monotonic() + GRACE
    while "sweep" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise CharlmError(f"the study {sweep.name} in {shown(url)} was left half-made (no sweep recorded): "
                              f"delete it or give another --storage")
        time.sleep(0.5)
    if study.user_attrs["sweep"] != signature(sweep):
        raise CharlmError(f"the study {sweep.name} in {shown(url)} belongs to another sweep file under the same "
                          f"name (its base, method, metric, seed, parameters, early_terminate or run_cap differ): "
                          f"rename this file or give another --storage")
    if study.direction.name.lower() != sweep.goal:
        raise CharlmError(f"the study {sweep.name} in {shown(url)} goes the other way ({study.direction.name})")


def _first_points(sweep):
    """[(run name or None, point, user attrs)] to enqueue: a grid's or random sweep's plan, a bayes sweep's recipe."""
    if sweep.method != "bayes":
        return [(name, point, {}) for name, point in sweeps.plan(sweep)]
    point = recipe_point(sweep)
    return [(None, point, {"recipe": True})] if point else []


def recipe_point(sweep):
    """The recipe's choice of the swept keys the base config leaves unset, where it fits their ranges; or {}."""
    from . import recipe

    cfg = configs.resolve(sweep.base)
    unset = [k for k in configs.unset(cfg) if k in sweep.parameters]
    if not unset:
        return {}
    recipe.fill(cfg)  # at the reference machine's speed: the parent does not measure this one
    point = {}
    for key in unset:
        value, spec = getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]), sweep.parameters[key]
        if value in spec.get("values", []) or ("min" in spec and spec["min"] <= value <= spec["max"]):
            point[key] = value
    return point


def _suggest(trial, key, spec):
    if "values" in spec:
        return trial.suggest_categorical(key, spec["values"])
    if spec["distribution"] == "int_uniform":
        return trial.suggest_int(key, spec["min"], spec["max"])
    return trial.suggest_float(key, spec["min"], spec["max"], log=spec["distribution"] == "log_uniform_values")


def _originals(trials):
    return [t for t in trials if "continues" not in t.user_attrs]


def bad_name(name):
    """Why a run name read from the study may not be joined into a path, or None: it must be one plain file name."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        return f"run name {name!r} is not a plain directory name"
    if sweeps.CONTROL.search(name) or len(name.encode()) > sweeps.MAX_NAME:
        return f"run name {name!r} holds a control character or is over {sweeps.MAX_NAME} bytes"
    return None


def id_of(store, study, number):
    """The storage's id of the study's trial `number`: heartbeats and a trainer's reports go by it."""
    return store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(study.study_name), number)


def ask(study, sweep, store):
    """The next trial for this worker as (trial, run name, point), or None: a waiting one first, then (bayes) a new
    draw while fewer than run_cap points exist. A draw another worker's raced past run_cap is marked surplus."""
    optuna = optuna_module()
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
    fresh = [t for t in _originals(trials) if not t.user_attrs.get("surplus")]
    if not waiting and (sweep.method != "bayes" or len(fresh) >= sweep.run_cap):
        return None
    trial = study.ask()
    attrs = trial.user_attrs
    if "run" not in attrs:  # a new point: the number of points before it decides whether it is within run_cap
        before = [t for t in _originals(study.get_trials(deepcopy=False)) if t.number < trial.number]
        if sweep.method != "bayes" or len(before) >= sweep.run_cap:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return ask(study, sweep, store)
        study.sampler = _sampler(sweep, trial.number)
    point = {key: _suggest(trial, key, spec) for key, spec in sweep.parameters.items()}
    name = attrs["run"] if "run" in attrs else sweeps.run_name(sweep, trial.number, point)
    if bad_name(name):  # the study may come from elsewhere: its names reach no path unchecked
        trial.set_user_attr("error", bad_name(name))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return ask(study, sweep, store)
    trial.set_user_attr("run", name)
    store.record_heartbeat(id_of(store, study, trial.number))  # from now a dead sweep's trial goes stale
    return trial, name, point


def retry(study, frozen, crashed):
    """Enqueue the point of a failed trial again (its run resumes), once after a crash and always after a stop."""
    failures = frozen.user_attrs.get("failures", 0) + bool(crashed)
    if failures <= RETRIES and not frozen.user_attrs.get("surplus"):
        study.enqueue_trial(frozen.params, user_attrs={"run": frozen.user_attrs["run"], "failures": failures,
                                                       "continues": frozen.number})


def _retry_dead(study, frozen):
    if "run" in frozen.user_attrs and not bad_name(frozen.user_attrs["run"]):
        retry(study, frozen, crashed=True)


def tell(study, number, **kwargs):
    """Tell the end of the trial `number`; False when it already has one (another worker found it dead first)."""
    optuna = optuna_module()
    try:
        study.tell(number, **kwargs)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        return False
    return True


def best_value(run, metric, goal):
    """The run's best value of metric toward goal over its whole epochs, or None."""
    best = run.best([r for r in run.metrics() if "step" not in r], metric, goal)  # a time limit's record: no epoch's
    return best[metric] if best else None


def settle(study, store, sweep, sweep_dir, trial_id, log, stopped=False):
    """After a trainer exits: a trial it left running is complete (its run finished), or failed and retried."""
    optuna = optuna_module()
    frozen = store.get_trial(trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING or bad_name(frozen.user_attrs.get("run")):
        return
    run_dir = Path(sweep_dir) / frozen.user_attrs["run"]
    value = best_value(Run(run_dir), sweep.metric, sweep.goal) if sweeps.status(run_dir, {}) == "finished" else None
    if value is not None:
        tell(study, frozen.number, values=value)
        return
    error = "stopped with the sweep" if stopped else trainers.last_error(log) if os.path.lexists(log) else "never started"
    store.set_trial_user_attr(trial_id, "error", error)
    if tell(study, frozen.number, state=optuna.trial.TrialState.FAIL):
        retry(study, store.get_trial(trial_id), crashed=not stopped)


def _done(study, sweep):
    """Whether no trial is waiting or running and, for bayes, run_cap points exist."""
    optuna = optuna_module()
    trials = study.get_trials(deepcopy=False)
    busy = any(t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING) for t in trials)
    points = [t for t in _originals(trials) if not t.user_attrs.get("surplus")]
    return not busy and (sweep.method != "bayes" or len(points) >= sweep.run_cap)


def execute(sweep, sweep_dir, url=None, jobs=1, on_done=None):
    """Run trials of the sweep's study, `jobs` at a time, until it is done (run_cap points, none waiting or running
    in any worker); after each, on_done(its row). Return the summary rows."""
    optuna = optuna_module()
    trainers.check_jobs(jobs)
    sweeps.prepare(sweep_dir)
    url = url or default_storage(sweep_dir)
    store = storage(url)
    study = open_study(sweep, sweep_dir, url, store)
    running, beat = {}, 0.0  # trial id -> (process, log)
    try:
        while True:
            if time.monotonic() - beat > HEARTBEAT:
                for trial_id in running:
                    store.record_heartbeat(trial_id)
                optuna.storages.fail_stale_trials(study)  # a dead worker's trials: failed, their points retried
                beat = time.monotonic()
            while len(running) < jobs and (asked := ask(study, sweep, store)):
                trial, name, point = asked
                tid = id_of(store, study, trial.number)
                running[tid] = _start(sweep, sweep_dir, url, tid, name, point, jobs)
            for trial_id, (proc, log) in list(running.items()):
                if proc is None or proc.poll() is not None:
                    del running[trial_id]
                    settle(study, store, sweep, sweep_dir, trial_id, log)
                    if on_done:
                        on_done(_row(sweep, sweep_dir, store.get_trial(trial_id)))
            if not running and _done(study, sweep):
                break
            time.sleep(0.2 if running else 1.0)
    finally:  # interrupted: stop the trainers (each saves a checkpoint); their points wait for a re-run
        trainers.stop([proc for proc, _ in running.values() if proc])
        for trial_id, (_, log) in running.items():
            settle(study, store, sweep, sweep_dir, trial_id, log, stopped=True)
    rows = summary(sweep, sweep_dir, study)
    summaries.write(rows, sweep_dir)
    return rows


def _start(sweep, sweep_dir, url, trial_id, name, point, jobs):
    """Start the trainer of a trial, or (None, log) when its run has already finished."""
    run_dir, log = Path(sweep_dir) / name, Path(sweep_dir) / "logs" / f"{name}.log"
    state = sweeps.status(run_dir, {})
    if state == "finished":  # trained by an attempt that died before telling: nothing runs twice
        return None, log
    if state == "new" and run_dir.is_dir():
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # made by a trainer that died before it wrote anything
    spec = {"storage": url, "study": sweep.name, "trial_id": trial_id, "metric": sweep.metric,
            "early_terminate": sweep.early_terminate}
    cmd = sweeps.command(sweep, Path(sweep_dir), name, point, state)
    return trainers.launch(cmd, log, jobs, {TRIAL_ENV: json.dumps(spec)}), log


def _row(sweep, sweep_dir, frozen):
    point = frozen.params or frozen.system_attrs.get("fixed_params", {})
    name, error = frozen.user_attrs["run"], frozen.user_attrs.get("error", "")
    state = STATES[frozen.state.name]
    row = sweeps.row(sweep, Path(sweep_dir), name, {k: point.get(k) for k in sweep.parameters},
                     {name: error} if state == "failed" else {}, state)
    reported = frozen.intermediate_values  # {epoch: metric}, as the trainer reported them
    if not (Path(sweep_dir) / name).exists() and reported:  # trained by a worker elsewhere: the study's word
        epoch = (min if sweep.goal == "minimize" else max)(reported, key=reported.get)
        row.update({f"best_{sweep.metric}": reported[epoch], "best_epoch": epoch})
    return row


def summary(sweep, sweep_dir, study):
    """One row per point of the study (its latest trial), best first."""
    latest = {}
    for t in study.get_trials(deepcopy=False):
        if "run" in t.user_attrs and not t.user_attrs.get("surplus") and not bad_name(t.user_attrs["run"]):
            latest[t.user_attrs["run"]] = t  # in number order: a point's retry replaces its failed trial
    return summaries.ordered(sweep, [_row(sweep, sweep_dir, t) for t in latest.values()])


def load(name, url):
    """The study `name` at url, or None; nothing is created."""
    optuna = optuna_module()
    store = storage(url, create=False)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        return None
    except Exception as e:  # a database without Optuna's tables, a server gone
        raise CharlmError(f"cannot read the study {name} in {shown(url)}: {reason(e)}") from None


def dry_run(sweep, sweep_dir, url=None):
    """[(state, run directory or what is left to draw)] of the sweep's study as it stands; nothing is written."""
    sweeps.check_writable(sweep_dir)
    _check_values(sweep)
    exists = url is not None or os.path.lexists(Path(sweep_dir) / DB)
    study = load(sweep.name, url or default_storage(sweep_dir)) if exists else None
    if study is not None:
        _check_same(study, sweep, url or default_storage(sweep_dir))
        rows = summary(sweep, sweep_dir, study)
    else:
        rows = [{"state": "new", "run": name} for name, _, _ in _first_points(sweep) if name]
    listed = [(r["state"], Path(sweep_dir) / r["run"]) for r in rows]
    points = len(_originals(study.get_trials(deepcopy=False))) if study is not None else len(rows)
    if sweep.method == "bayes" and points < sweep.run_cap:
        listed.append(("to draw", f"{sweep.run_cap - points} more trial(s) by TPE"))
    return listed


def recorded(sweep_dir, url=None):
    """The study a sweep directory records in study.json, or None without one: in the directory's study.db, or at
    url (the user's --storage); a URL read from study.json is never connected to."""
    pointer = Path(sweep_dir) / POINTER
    if not pointer.is_file():
        return None
    where = read_json(pointer)
    if not isinstance(where, dict) or not isinstance(where.get("storage"), str):
        raise CharlmError(f"{pointer} is damaged (no storage)")
    if url is None and where["storage"] != DB:
        raise CharlmError(f"{pointer} says the study is in {shown(where['storage'])}: give that database with "
                          f"--storage URL (charlm connects to no URL read from a file)")
    url = url or default_storage(sweep_dir)
    study = load(str(where.get("study")), url)
    if study is None:
        raise CharlmError(f"{pointer} names the study {where.get('study')!r}, which {shown(url)} lacks")
    return study
