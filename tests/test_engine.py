import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from charlm import engine
from charlm.engine import gluon, mx, nd
from charlm.errors import CharlmError


@pytest.mark.parametrize("kwargs, expected", [
    ({}, mx.cpu()),
    ({"ctx": "cpu:0"}, mx.cpu(0)),
    ({"ctx": "cpu:0, cpu:1"}, [mx.cpu(0), mx.cpu(1)]),
    ({"ctx": "cpu:1,cpu:0,cpu:2"}, [mx.cpu(1), mx.cpu(0), mx.cpu(2)]),
])
def test_contexts_one_device_is_a_context_several_a_list(kwargs, expected):
    assert engine.contexts(**kwargs) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"ctx": "cpu0"}, r"--ctx 'cpu0': expected a comma-separated device list like cpu:0,cpu:1"),
    ({"ctx": ""}, "expected a comma-separated device list"),
    ({"ctx": "cpu:0,"}, "expected a comma-separated device list"),
    ({"ctx": "tpu:0"}, "expected a comma-separated device list"),
    ({"ctx": "cpu:0,cpu:0"}, "names cpu:0 more than once"),
    ({"gpus": "0,x"}, r"--gpus '0,x': expected a comma-separated device list like 0,1"),
    ({"gpus": "0,1"}, "--gpus: MXNet sees no GPU"),
    ({"ctx": "cpu:0,gpu:0"}, "--ctx: MXNet sees no GPU"),
    ({"gpu": True}, "--gpu: MXNet sees no GPU"),
    ({"gpu": True, "ctx": "cpu:0"}, "give only one of them"),
    ({"gpus": "0", "ctx": "cpu:0"}, "give only one of them"),
])
def test_contexts_bad_device_choices_are_clear_errors(kwargs, message):
    with pytest.raises(CharlmError, match=message):
        engine.contexts(**kwargs)


def test_keep_up_waits_every_ahead_steps_for_the_step_ahead_back(monkeypatch):
    """The host never gets more than 2 x AHEAD steps ahead of the device, and waits only every AHEAD steps."""
    from charlm import engine

    monkeypatch.setattr(engine, "AHEAD", 3)
    waited = []

    class Step:
        def __init__(self, i):
            self.i = i

        def wait_to_read(self):
            waited.append(self.i)

    results = []
    for i in range(10):
        results.append(Step(i))
        engine.keep_up(results)
    assert waited == [2, 5]  # at 6 and 9 steps queued, the steps 3 back from the last


def test_on_device_yields_every_batch_as_it_is_in_blocks_of_mixed_shapes(monkeypatch):
    """Batches of one shape in a block travel as one array each for X and Y; each comes back whole."""

    monkeypatch.setattr(engine, "PREFETCH", 4)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 9, size=(t, 3)), rng.integers(-1, 9, size=(t, 3))) for t in [5, 8, 5, 5, 8, 2, 5, 8, 8]]
    got = list(engine.on_device(batches, 1, 9, mx.cpu()))
    assert len(got) == 8
    for (x, y, X, Y), (bx, by) in zip(got, batches[1:]):
        assert x is bx and y is by
        np.testing.assert_array_equal(X.asnumpy(), bx)
        np.testing.assert_array_equal(Y.asnumpy(), by)


SUBNORMALS = """
import numpy as np
from charlm import engine
from charlm.engine import nd
x = nd.array(np.full(1 << 20, 0x000AE398, dtype=np.uint32).view(np.float32))  # 1e-39, a subnormal, as raw bits
print(engine.FLUSH_DENORMALS, int(((x * 2).asnumpy().view(np.uint32) != 0).sum()))
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64", reason="set on x86-64 Linux only")
@pytest.mark.parametrize("setting, expected", [(None, "True 0"), ("0", f"False {1 << 20}")])
def test_subnormals_are_flushed_in_mxnets_threads_unless_turned_off(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "CHARLM_FLUSH_DENORMALS"}
    if setting is not None:
        env["CHARLM_FLUSH_DENORMALS"] = setting
    # A million elements: MXNet multiplies them on its engine thread with OpenMP's threads, not this one.
    out = subprocess.run([sys.executable, "-c", SUBNORMALS], env=env, check=True, stdout=subprocess.PIPE, text=True)
    assert out.stdout.split() == expected.split()


def test_a_bad_flush_setting_is_a_one_line_error(corpus):
    env = {**os.environ, "CHARLM_FLUSH_DENORMALS": "false"}
    out = subprocess.run([sys.executable, "-m", "charlm", "train", "--data", str(corpus), "--runs-dir", "runs"],
                         env=env, cwd=corpus.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert out.returncode == 1 and not (corpus.parent / "runs").exists()
    assert out.stderr == ("Error: CHARLM_FLUSH_DENORMALS must be 0 (keep subnormal floats) or 1 (flush them), "
                          "got 'false'\n")


ENV_DEFAULTS = "import os, charlm.engine; print(os.environ['OMP_NUM_THREADS'], os.environ['MXNET_USE_OPERATOR_TUNING'])"


@pytest.mark.parametrize("given, expected", [({}, f"{len(os.sched_getaffinity(0))} 0"),
                                             ({"OMP_NUM_THREADS": "1", "MXNET_USE_OPERATOR_TUNING": "1"}, "1 1")])
def test_thread_defaults_are_set_before_mxnet_unless_given(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_USE_OPERATOR_TUNING")}
    out = subprocess.run([sys.executable, "-c", ENV_DEFAULTS], env={**env, **given}, check=True,
                         stdout=subprocess.PIPE, text=True)
    assert out.stdout.split()[-2:] == expected.split()
