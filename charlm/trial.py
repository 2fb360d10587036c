"""A sweep's trainer and its trial of the study: each epoch's metric reported, the pruner's word obeyed at the epoch's
end, and the trial's end told (complete, pruned, or stopped and enqueued to resume)."""
import json
import os

from .errors import CharlmError
from .study import TRIAL_ENV, best_value, optuna_module, pruner, retry, shown, storage, tell


class Reporter:
    """A sweep's trainer's link to its trial: a callback that reports each epoch's metric and asks the pruner,
    stop() once it said prune, and the trial's end."""

    def __init__(self, spec):
        optuna = optuna_module()
        self.metric, self.trial_id, self.pruned, self.lost = spec["metric"], spec["trial_id"], False, False
        self.store = storage(spec["storage"], False)
        try:
            self.study = optuna.load_study(study_name=spec["study"], storage=self.store,
                                           pruner=pruner(spec["early_terminate"]))
        except KeyError:  # Optuna's word for a study the storage lacks
            raise CharlmError(f"the sweep's study {spec['study']!r} is not in {shown(spec['storage'])}") from None
        minimize = self.study.direction == optuna.study.StudyDirection.MINIMIZE
        self.goal = "minimize" if minimize else "maximize"
        self.number = self.store.get_trial_number_from_id(self.trial_id)

    @classmethod
    def from_env(cls):
        """The reporter of the trial a sweep started this process for, or None."""
        spec = os.environ.pop(TRIAL_ENV, None)  # popped: a process this one starts is no trial of its own
        return cls(json.loads(spec)) if spec else None

    def on_epoch(self, record, samples):
        if self.metric not in record or "step" in record:  # a time limit's mid-epoch score is no epoch's
            return
        try:
            self.store.set_trial_intermediate_value(self.trial_id, record["epoch"], record[self.metric])
            self.pruned = self.study.pruner.prune(self.study, self.store.get_trial(self.trial_id))
        except (optuna_module().exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            self.lost = True  # another worker took the trial for dead: it resumes the run from this checkpoint

    def stop(self):
        """Whether the pruner stopped the trial (or it is no longer this process's)."""
        return self.pruned or self.lost

    def interrupted(self):
        """Tell the trial pruned, or (a stop by signal) failed with its point enqueued to resume."""
        optuna = optuna_module()
        if self.lost:
            return
        if self.pruned:
            tell(self.study, self.number, state=optuna.trial.TrialState.PRUNED)
            return
        self.store.set_trial_user_attr(self.trial_id, "error", "stopped")
        if tell(self.study, self.number, state=optuna.trial.TrialState.FAIL):
            retry(self.study, self.store.get_trial(self.trial_id), crashed=False)

    def finished(self, run):
        """Tell the trial complete with the run's best value (left running without one: the sweep fails it)."""
        best = best_value(run, self.metric, self.goal)
        if best is not None and not self.lost:
            tell(self.study, self.number, values=best)
