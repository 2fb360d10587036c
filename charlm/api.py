"""The Python API: `config`, `train` and `load`, and the LM that generates and scores with a run's best
parameters. MXNet is imported on first use, not by `import charlm`."""
import contextlib
import copy
import functools
import logging
import shutil
from pathlib import Path

from . import configs
from .errors import CharlmError

log = logging.getLogger(__name__)


def config(*files, data=None, model=None, train=None, sets=()):
    """A Config: the defaults < YAML files in order < the data, model and train dicts < `section.key=value`s."""
    given = {(section, key): value for section, values in (("data", data), ("model", model), ("train", train))
             for key, value in _mapping(section, values).items()}
    return configs.resolve(files, given, sets)


def _mapping(section, values):
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CharlmError(f"{section}= must be a dict of {section} settings, got {type(values).__name__}")
    return values


def train(cfg=None, *, resume=None, runs_dir="runs", name=None, epochs=None, time_limit=None, callbacks=(),
          gpu=False, gpus=None, ctx=None, kvstore="local", stop=None):
    """Train a new run of cfg (default: the embedded default config), or resume the run directory `resume`
    (True: the latest run in runs_dir; epochs= raises its target, time_limit= sets its budget, e.g. "30m", of
    training time earlier sessions included); return its Run (None on a worker other than rank 0, which writes
    nothing). With train.tensorboard set, a TensorBoard callback is added.

    callbacks: objects with any of on_start(info), on_batch(done, total, tokens, mean_loss) and
    on_epoch(record, samples); stop: a function, once true training saves a checkpoint and raises Interrupted."""
    from . import data, engine, parallel
    from .run import find

    devices = engine.contexts(gpu, gpus, ctx)
    if resume is None:
        if cfg is not None and not isinstance(cfg, configs.Config):
            raise CharlmError(f"cfg must be a Config (see charlm.config), got {type(cfg).__name__}")
        cfg = copy.deepcopy(cfg) if cfg is not None else configs.resolve()
        _extend(cfg, epochs, time_limit)
        _absolute(cfg)
        source, corpus = _read_corpus(cfg)
        chosen = choose(cfg, kvstore, devices, corpus)
        if cfg.data.level == "word" and source is None:  # the recipe's vocabulary, chosen from the words read
            corpus = data.capped(*corpus, cfg.data.max_vocab)
        workers = parallel.connect(cfg, devices, kvstore)
        return _guarded(workers, _train_new, cfg, workers, devices, runs_dir, name, callbacks, stop, chosen, source,
                        corpus)
    if cfg is not None or name is not None:
        raise CharlmError("resume= continues a run with its own config.yaml: give only epochs= and time_limit=")
    if kvstore.startswith("dist"):
        raise CharlmError(f"--resume continues a run in one process: drop --kvstore {kvstore}")
    run = find(None if resume is True else resume, runs_dir)
    with run.lock():
        return _resume(run, epochs, time_limit, devices, kvstore, callbacks, stop)


def _source(cfg):
    """The run directory of cfg.train.init_from."""
    from .run import find

    try:
        return find(cfg.train.init_from)
    except CharlmError as e:
        raise CharlmError(f"--init-from: {e}") from None


def _read_corpus(cfg):
    """(--init-from's run or None, (vocab, ids) of the training text, read once): a fine-tuning run takes its
    source's model where unset, is checked to fit it, and reads its text with the source's vocabulary and case.
    data.lowercase is resolved, so that config.yaml records it."""
    from . import data
    from .run import init_source
    from .text import lowercases

    source, vocab = None, None
    if cfg.train.init_from:
        source = _source(cfg)
        theirs = source.config()
        _take_model(cfg, theirs.model)
        vocab = init_source(cfg, source, theirs)
    if cfg.data.lowercase is None:
        cfg.data.lowercase = theirs.data.lowercase if source else lowercases(cfg.data)
    return source, data.corpus_of(cfg.data, vocab=vocab)


def _take_model(cfg, theirs):
    """Set cfg's unset model shape to theirs, the source run's ModelConfig (fine-tuning keeps the source's model)."""
    from .run import SHAPE_KEYS

    unset = set(configs.unset(cfg))
    for key in SHAPE_KEYS:
        if f"model.{key}" in unset:
            setattr(cfg.model, key, getattr(theirs, key))


def resume_settings(flags, files=(), sets=(), name=None):
    """(epochs, time_limit) of a resume from the config flags typed ({(section, key): value}); a resumed run keeps
    its own config.yaml, so anything else given is an error."""
    if files or sets or name or set(flags) - {("train", "epochs"), ("train", "time_limit")}:
        raise CharlmError("--resume continues a run with its own config.yaml: only --epochs and --time-limit "
                          "may be given")
    return flags.get(("train", "epochs")), flags.get(("train", "time_limit"))


def choose(cfg, kvstore="local", devices=None, corpus=None):
    """Fill cfg's unset settings: the model of --init-from's run, the rest the recipe's, for this machine's speed
    on the first of the devices (a Context or a list; None: the CPU) and the size of the text (corpus: its
    (vocab, ids) as read; None: counted from the file); what and why, or None."""
    from . import recipe
    from .run import SHAPE_KEYS

    unset = set(configs.unset(cfg))
    if cfg.train.init_from and {f"model.{key}" for key in SHAPE_KEYS} & unset:
        _take_model(cfg, _source(cfg).config().model)
    if cfg.train.init_from and "data.max_vocab" in unset:  # the vocabulary is the source's
        recipe.set_fixed(cfg, "data.max_vocab")
    if kvstore == "dist_async":  # its servers update with a constant rate and no decay
        if "train.lr_schedule" in unset:
            cfg.train.lr_schedule = "constant"
        for key in {"train.warmup", "train.weight_decay"} & unset:
            recipe.set_fixed(cfg, key)
    devices = devices if isinstance(devices, list) else [devices]
    # a cluster's workers must choose alike: they take the speed table's machine rather than each its own
    measure = None if kvstore.startswith("dist") else functools.partial(_tokens_per_second, ctx=devices[0])
    if corpus is None and cfg.train.init_from and cfg.data.level == "word":  # read with the source's vocabulary
        corpus = _read_corpus(cfg)[1]
    return recipe.fill(cfg, len(devices), measure, corpus)


def _tokens_per_second(cfg, vocab_size, ctx=None):
    """This machine's training tokens/s of a whole config on ctx (None: the CPU)."""
    from . import engine, speed

    return speed.tokens_per_second(cfg, vocab_size, ctx or engine.mx.cpu())


def _extend(cfg, epochs, time_limit):
    """Set the epochs and the time limit given (None: as they are) and check the config."""
    if epochs is not None:
        cfg.train.epochs = epochs
    if time_limit is not None:
        cfg.train.time_limit = time_limit
    configs.validate(cfg)
    if cfg.train.tensorboard:
        from .tensorboard import writer_class

        writer_class()  # before anything is written: a missing tensorboardX is a one-line error


def _absolute(cfg):
    """Make the config's file paths absolute, so that the run reproduces from any directory."""
    for part, key in ((cfg.data, "path"), (cfg.data, "valid_path"), (cfg.data, "test_path"),
                      (cfg.train, "init_from"), (cfg.train, "tensorboard")):
        if getattr(part, key):
            setattr(part, key, str(Path(getattr(part, key)).expanduser().resolve()))


def _guarded(workers, work, *args):
    """work(*args), a worker of a cluster that fails ending at exit instead of waiting for its peers."""
    try:
        return work(*args)
    except CharlmError:
        workers.fail_fast()
        raise


def _train_new(cfg, workers, devices, runs_dir, name, callbacks, stop, chosen, source, corpus):
    """Split the corpus, build the model, create the run directory (rank 0 only) and train."""
    from . import checkpoint, training
    from .run import Run

    s = training.setup(cfg, devices, workers, corpus=corpus)
    if source:
        checkpoint.load_params(s.model, source.best_params(), devices)
    run = None if workers.rank else Run.create(runs_dir, name)  # workers other than rank 0 write nothing
    try:
        if run:
            run.start(cfg, s.vocab)
    except CharlmError:
        shutil.rmtree(run.path, ignore_errors=True)  # brand new and ours: leave no half-made run behind
        raise
    with run.lock() if run else contextlib.nullcontext():
        _fit(s, run, None, callbacks, stop, chosen)
    return run


def _resume(run, epochs, time_limit, devices, kvstore, callbacks, stop):
    """Rebuild a run from its directory, load its last checkpoint and train on."""
    from . import parallel, training

    cfg = run.config()
    _extend(cfg, epochs, time_limit)
    done = run.resume_state().get("epoch", 0)  # first: a run it refuses keeps its files as they were
    if done >= cfg.train.epochs:
        log.info("%s has trained %d of %d epochs: give --epochs to extend it", run.path, done, cfg.train.epochs)
        return run
    saved = run.vocab()
    # a run started from another keeps that run's vocabulary, which its own text need not fill
    s = training.setup(cfg, devices, parallel.connect(cfg, devices, kvstore), saved if cfg.train.init_from else None)
    if s.vocab.tokens != saved.tokens:
        raise CharlmError(f"the text of {run.path} has changed since the run started (another vocabulary)")
    progress = training.restore(s, run)  # first: a run it refuses keeps its files as they were
    t = cfg.train
    if t.time_limit and progress.elapsed >= configs.duration(t.time_limit):
        log.info("%s has trained for %.0f s of its time limit %s: give a longer --time-limit to extend it",
                 run.path, progress.elapsed, t.time_limit)
        return run
    run.start(cfg, s.vocab, fresh=False)
    _fit(s, run, progress, callbacks, stop)
    return run


def _fit(s, run, progress, callbacks, stop, chosen=None):
    """Announce the run to the callbacks (rank 0's only), train, then mark it finished and score the test text."""
    from . import training

    w, board = s.workers, None
    callbacks = [] if w.rank else list(callbacks)
    if s.cfg.train.tensorboard and not w.rank:
        from .tensorboard import TensorBoard

        board = TensorBoard(s.cfg.train.tensorboard)
        callbacks.append(board)
    info = {"run": run.path if run else None, "cell": s.cfg.model.cell, "level": s.cfg.data.level,
            "parameters": sum(p.data(s.device).size for p in s.model.collect_params().values()),
            "vocab_size": len(s.vocab), "lowercase": s.cfg.data.lowercase, "train_tokens": len(s.train_ids),
            "val_tokens": len(s.val_ids),
            "workers": (w.num_workers, len(w.ctxs), w.kvstore) if w.spread else None, "split_lines": s.split_lines,
            "resumed": (progress.epoch, progress.step) if progress else None, "recipe": chosen}
    training.Callbacks(callbacks)("on_start", info)
    try:
        training.fit(s, run, progress, callbacks, stop)
    finally:
        if board:
            board.close()
    if run:
        run.finish()
        if s.cfg.data.test_path:
            _test(s, run)


def _test(s, run):
    """Score the test file with the run's best parameters; the scores are kept in state.json."""
    from . import checkpoint, training
    from .run import scores

    nll, tokens = training.evaluate(checkpoint.load_model(run, s.device), s.test_ids, s.cfg, s.vocab, s.device)
    run.write_state({**run.read_state(), "test": {**scores("test_", nll / tokens, s.cfg.data.level),
                                                  "test_tokens": tokens}})


def load(run=None, runs_dir="runs", gpu=False):
    """The LM of a run directory's best parameters (default: the latest run in runs_dir)."""
    from .run import find

    return LM(find(run, runs_dir), gpu)


class LM:
    """A trained model: the best parameters of a run, with its vocabulary and config."""

    def __init__(self, run, gpu=False):
        from . import checkpoint, engine

        self.run, self.config, self.vocab = run, run.config(), run.vocab()
        self.ctx = engine.context(gpu)
        self.model = checkpoint.load_model(run, self.ctx)

    def generate(self, prefix, length=100, temperature=None, top_k=None, seed=None, *, top_p=None, stop=(),
                 num_samples=None):
        """The prefix (normalised as the training text was) and up to `length` generated tokens, as text: greedy,
        or sampled at a temperature and/or from the top_k likeliest and/or the nucleus of mass top_p, ending
        before the first stop sequence; with num_samples, a list of that many such texts, made as one batch."""
        pieces = self.stream(prefix, length, temperature, top_k, seed, top_p=top_p, stop=stop, num_samples=num_samples)
        return "".join(pieces) if num_samples is None else ["".join(texts) for texts in zip(*pieces)]

    def stream(self, prefix, length=100, temperature=None, top_k=None, seed=None, *, top_p=None, stop=(),
               num_samples=None):
        """generate's text in pieces as produced (with num_samples, lists of one piece per sample)."""
        from . import generate

        n = 1 if num_samples is None else num_samples
        stop = generate.check(length, temperature, top_k, top_p, stop, n, len(self.vocab))
        if self.config.data.mode == "lines":
            stop.append("\n")  # trained one line at a time: past its end the model has learnt nothing
        ids = generate.encode_prefix(prefix, self.vocab, self.config.data)
        pieces = generate.stream(self.model, self.vocab, ids, length, self.ctx, temperature, top_k, seed, top_p=top_p,
                                 stop=stop, num_samples=n)
        return pieces if num_samples is not None else (texts[0] for texts in pieces)

    def trace(self, text, top_k=5, max_tokens=None, skip_unknown=False):
        """The model's numbers on text read as one stream from a zero state, as NumPy arrays (a charlm.trace.Trace):
        each token's log-probability, the top_k guesses at each position and every unit's activations, of its
        first max_tokens tokens; characters outside the vocabulary are an error, or with skip_unknown dropped."""
        from . import trace

        ids, skipped = trace.encode(text, self.vocab, self.config.data, skip_unknown)
        result = trace.trace(trace.weights(self.model), self.vocab, ids, top_k, max_tokens)
        result.skipped = skipped
        return result

    def score(self, text):
        """Loss (nats per token), ppl, bpc (char level) and token count of text, read as the training text was."""
        from .text import normalise

        return self._scores(self.vocab.encode(normalise(text.replace("\r\n", "\n"), self.config.data)))

    def score_file(self, path=None):
        """score of a text file, or without one of the run's validation text."""
        from . import data

        d = self.config.data
        if path or d.valid_path:
            return self._scores(data.corpus_of(d, path or d.valid_path, self.vocab)[1])
        if not d.val_frac:
            raise CharlmError(f"{self.run.path} has no validation split (val_frac 0): pass --data FILE")
        ids = data.corpus_of(d, vocab=self.vocab)[1]
        return self._scores(data.split_corpus(self.config, self.vocab, ids)[1])

    def addition_accuracy(self, path):
        """{accuracy, count, position_accuracy}: exact-match accuracy of greedy answers after `=` on the lines
        a+b=c of a file, and the accuracy by answer position (as written)."""
        from . import addition
        from .text import read_text

        lines = [line for line in read_text(Path(path)).splitlines() if line.strip()]
        start = self.vocab.bos if self.config.data.mode == "lines" else self.vocab.eos
        if self.vocab.level != "char" or start is None:
            raise CharlmError(f"{self.run.path} is not a character model trained on lines: it cannot answer a+b=")
        exact, positions = addition.accuracy(self.model, self.vocab, start, lines, self.ctx)
        return {"accuracy": exact, "count": len(lines), "position_accuracy": positions}

    def _scores(self, ids):
        from . import training
        from .run import scores

        nll, tokens = training.evaluate(self.model, ids, self.config, self.vocab, self.ctx)
        return {**scores("", nll / tokens, self.config.data.level), "tokens": tokens}
