"""The explicit API: Limiter, Ticket, exceptions, async admission, routing, stats."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import warnings

import pytest

import shmlimit
from conftest import BUILD, config, pool


def test_acquire_settle_counts(segment):
    lim = shmlimit.Limiter(segment())
    with lim.acquire("claude-sonnet-4-5", input_tokens=100, max_tokens=50) as t:
        assert t.open and t.model == "claude-sonnet-4-5"
        t.settle({"input_tokens": 90, "output_tokens": 12, "cache_read_input_tokens": 4,
                  "cache_creation_input_tokens": 30,
                  "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}})
        assert not t.open
    p = pool(lim.stats())
    assert p["counters"]["admitted"] == 1 and p["counters"]["settled"] == 1
    assert p["tokens"] == {"input": 90, "output": 12, "cache_read": 4, "cache_write": 30}
    # spend: 90*3 + 12*15 + 10*3.75 + 20*6 + 4*0.3 USD per million
    assert p["spend_usd"] == pytest.approx((90 * 3 + 12 * 15 + 10 * 3.75 + 20 * 6 + 4 * 0.3) / 1e6)


def test_settle_sdk_object_and_keywords(segment):
    class Usage:  # the SDK's pydantic Usage has these attributes
        input_tokens = 7
        output_tokens = 3
        cache_creation_input_tokens = None
        cache_read_input_tokens = None

    lim = shmlimit.Limiter(segment())
    with lim.acquire("claude-sonnet-4-5", input_tokens=7, max_tokens=5) as t:
        t.settle(Usage())
    with lim.acquire("claude-sonnet-4-5", input_tokens=7, max_tokens=5) as t:
        t.settle(input_tokens=1, output_tokens=2)
    assert pool(lim.stats())["tokens"]["input"] == 8
    assert pool(lim.stats())["tokens"]["output"] == 5
    with pytest.raises(shmlimit.ShmlimitError):
        t.settle(input_tokens=1)  # second settle of one ticket: -EALREADY


def test_exception_before_send_cancels(segment):
    lim = shmlimit.Limiter(segment())
    with pytest.raises(KeyError):
        with lim.acquire("claude-sonnet-4-5", input_tokens=100, max_tokens=50):
            raise KeyError("x")
    c = pool(lim.stats())["counters"]
    assert c["cancelled"] == 1 and c["settled"] == 0
    assert lim.stats()["spend"]["spent_usd"] == 0


def test_exception_after_send_settles_estimate(segment):
    lim = shmlimit.Limiter(segment())
    with pytest.raises(KeyError):
        with lim.acquire("claude-sonnet-4-5", input_tokens=100, max_tokens=50) as t:
            t.mark_sent()
            raise KeyError("x")
    p = pool(lim.stats())
    assert p["counters"]["settled"] == 1 and p["counters"]["cancelled"] == 0
    assert p["tokens"]["input"] == 100 and p["tokens"]["output"] == 0


def test_unsettled_normal_exit_settles_worst_case(segment):
    lim = shmlimit.Limiter(segment())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with lim.acquire("claude-sonnet-4-5", input_tokens=100, max_tokens=50):
            pass
    assert any(issubclass(x.category, RuntimeWarning) for x in w)
    p = pool(lim.stats())
    assert p["tokens"]["input"] == 100 and p["tokens"]["output"] == 50


def test_refused_has_wait_and_dimension(segment):
    lim = shmlimit.Limiter(segment(config(rpm=60, burst={"rpm": 1})))
    lim.try_acquire("claude-sonnet-4-5", input_tokens=1).cancel()  # cancel refunds: still one
    t = lim.try_acquire("claude-sonnet-4-5", input_tokens=1)
    with pytest.raises(shmlimit.Refused) as e:
        lim.try_acquire("claude-sonnet-4-5", input_tokens=1)
    assert e.value.dimension == "rpm" and e.value.retryable
    assert 0.5 < e.value.wait <= 1.01  # 60 RPM: one a second (plus the pool's jitter margin)
    # a wait past the deadline: Timeout (a Refused), at once
    with pytest.raises(shmlimit.Timeout) as e2:
        lim.acquire("claude-sonnet-4-5", input_tokens=1, timeout=0.2)
    assert isinstance(e2.value, shmlimit.Refused) and e2.value.dimension == "rpm"
    t.settle(input_tokens=1)
    # and waiting long enough admits
    lim.acquire("claude-sonnet-4-5", input_tokens=1, timeout=5).settle(input_tokens=1)


def test_too_large_and_unknown_model(segment):
    lim = shmlimit.Limiter(segment(config(itpm=600)))
    with pytest.raises(shmlimit.TooLarge) as e:
        lim.acquire("claude-sonnet-4-5", input_tokens=601, max_tokens=1)
    assert e.value.dimension == "itpm" and e.value.need == 601 and e.value.capacity == 600
    assert not e.value.retryable
    with pytest.raises(shmlimit.UnknownModel):
        lim.acquire("gpt-4", input_tokens=1)


def test_spend_cap_not_retryable(segment):
    lim = shmlimit.Limiter(segment(config(cap=1)))
    # 1 USD cap; 100k output tokens at 15 USD/MTok is 1.5 USD worst case
    with pytest.raises(shmlimit.SpendCapReached) as e:
        lim.acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=100_000)
    assert e.value.dimension == "spend" and not e.value.retryable
    lim.acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=100).cancel()
    lim.spend_exhaust()  # the server said so: everything refused
    with pytest.raises(shmlimit.SpendCapReached):
        lim.acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=100)


def test_segment_errors(segment):
    with pytest.raises(shmlimit.SegmentError):
        shmlimit.Limiter(f"pytest-shl-missing-{os.getpid()}")
    old = os.environ.pop("SHMLIMIT_SEGMENT", None)
    try:
        with pytest.raises(shmlimit.SegmentError):
            shmlimit.Limiter()
        os.environ["SHMLIMIT_SEGMENT"] = name = segment()
        assert shmlimit.Limiter().name == name
    finally:
        os.environ.pop("SHMLIMIT_SEGMENT", None)
        if old is not None:
            os.environ["SHMLIMIT_SEGMENT"] = old


def test_hold_refuses_pool(segment):
    lim = shmlimit.Limiter(segment())
    lim.hold("sonnet", 30)
    with pytest.raises(shmlimit.Refused) as e:
        lim.try_acquire("claude-sonnet-4-5", input_tokens=1)
    assert e.value.dimension == "hold" and e.value.wait > 25
    assert pool(lim.stats())["hold_seconds"] > 25


def test_route_goes_down_the_list(segment):
    cfg = config(pools=[
        {"name": "opus", "rpm": 60, "itpm": 100000, "otpm": 100000, "burst": {"rpm": 1}, "prices": {
            "input": 5, "output": 25, "cache_write_5m": 6.25, "cache_write_1h": 10, "cache_read": 0.5}},
        {"name": "sonnet", "rpm": 60, "itpm": 100000, "otpm": 100000, "burst": {"rpm": 1}, "prices": {
            "input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.3}}],
        models=[{"match": "claude-opus-4*", "pool": "opus"}, {"match": "claude-sonnet-4*", "pool": "sonnet"}])
    lim = shmlimit.Limiter(segment(cfg))
    models = ["claude-opus-4-5", "claude-sonnet-4-5"]
    a = lim.route(models, input_tokens=10, max_tokens=10, timeout=0)
    b = lim.route(models, input_tokens=10, max_tokens=10, timeout=0)
    assert (a.model, b.model) == ("claude-opus-4-5", "claude-sonnet-4-5")
    with pytest.raises(shmlimit.Refused):
        lim.route(models, input_tokens=10, max_tokens=10, timeout=0)
    a.settle(input_tokens=10, output_tokens=1)
    b.settle(input_tokens=10, output_tokens=1)
    s = lim.stats()
    assert pool(s, "opus")["counters"]["settled"] == 1 and pool(s, "sonnet")["counters"]["settled"] == 1

    async def main():
        return await lim.route_async(models, input_tokens=10, max_tokens=10, timeout=5)

    c = asyncio.run(main())  # waits (without blocking) for the first pool to refill
    assert c.model in models  # both pools were full: only waiting could admit it
    c.cancel()


def test_acquire_async_and_cancellation(segment):
    lim = shmlimit.Limiter(segment(config(rpm=60, burst={"rpm": 1})))

    async def main():
        async with lim.acquire_async("claude-sonnet-4-5", input_tokens=5, max_tokens=5) as t:
            t.settle(input_tokens=5, output_tokens=1)
        # the next one waits about a second: cancel it while it waits
        task = asyncio.create_task(_get(lim))
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def _get(lim):
        return await lim.acquire_async("claude-sonnet-4-5", input_tokens=5, max_tokens=5, timeout=10)

    asyncio.run(main())
    c = pool(lim.stats())["counters"]
    assert c["settled"] == 1 and c["cancelled"] == 1  # the cancelled task gave its place back


def test_stats_is_shmlimit_stat_json(segment):
    name = segment(config(cap=50))
    lim = shmlimit.Limiter(name)
    lim.acquire("claude-sonnet-4-5", input_tokens=10, max_tokens=10).settle(input_tokens=9, output_tokens=3)
    mine = lim.stats()
    tool = json.loads(subprocess.run([str(BUILD / "shmlimit-stat"), "--json", name], check=True,
                                     capture_output=True, text=True).stdout)
    # available refills between the two snapshots; everything else is equal
    for doc in (mine, tool):
        for p in doc["pools"]:
            p.pop("available")
    assert mine == tool
    assert mine["spend"]["cap_usd"] == 50 and mine["segment"] == name


def test_pickle_and_fork(segment):
    lim = shmlimit.Limiter(segment())
    lim2 = pickle.loads(pickle.dumps(lim))
    assert lim2.name == lim.name
    pid = os.fork()
    if pid == 0:  # the inherited handle works in the child
        try:
            lim.acquire("claude-sonnet-4-5", input_tokens=3, max_tokens=3).settle(input_tokens=3)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, st = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(st) == 0
    assert pool(lim2.stats())["tokens"]["input"] == 3


def test_timeout_zero_admits_when_there_is_room(segment):
    """timeout=0 means "only now": admitted at once when the pool has room (sync: shl_try;
    async: shl_reserve with no wait allowed), refused when it has none."""
    lim = shmlimit.Limiter(segment(config(rpm=60, burst={"rpm": 1})))

    async def main():
        t = await lim.acquire_async("claude-sonnet-4-5", input_tokens=1, timeout=0)
        with pytest.raises(shmlimit.Refused):
            await lim.acquire_async("claude-sonnet-4-5", input_tokens=1, timeout=0)
        return t

    asyncio.run(main()).cancel()
    t = lim.acquire("claude-sonnet-4-5", input_tokens=1, timeout=0)
    with pytest.raises(shmlimit.Refused):
        lim.acquire("claude-sonnet-4-5", input_tokens=1, timeout=0)
    t.cancel()
