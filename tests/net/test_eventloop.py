import asyncio

import pytest

from otpfast.net import eventloop


def test_default_is_uvloop_when_installed(monkeypatch):
    monkeypatch.delenv(eventloop.EVENT_LOOP_ENV, raising=False)
    assert eventloop.chosen() == ("uvloop" if eventloop.available("uvloop") else "asyncio")


def test_environment_forces_asyncio(monkeypatch):
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, "asyncio")
    assert eventloop.chosen() == "asyncio"

    async def loop_class():
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(loop_class()).startswith("asyncio")


def test_unknown_loop_is_refused(monkeypatch):
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, "twisted")
    with pytest.raises(ValueError):
        eventloop.chosen()
    with pytest.raises(ValueError):
        eventloop.available("twisted")


def test_run_on_each_loop(event_loop_name):
    async def which():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = eventloop.run(which(), name=event_loop_name)
    assert module.startswith(event_loop_name)


def test_tune_allocator_is_idempotent():
    first = eventloop.tune_allocator()
    assert isinstance(first, bool)
    assert eventloop.tune_allocator() is first
