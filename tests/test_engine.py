import pytest

from charlm import engine
from charlm.engine import mx
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
