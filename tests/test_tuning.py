"""tune_gc and tune_switch_interval: the opt-in tuning of process-wide CPython settings."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator

import pytest

from actorsource import tune_gc, tune_switch_interval


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_tune_gc_raises_the_first_threshold_freezes_startup_objects_and_returns_the_old_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = gc.get_threshold()
    with caplog.at_level(logging.INFO, logger="actorsource.tuning"):
        previous = tune_gc(gen0_threshold=12_345)

    assert previous == before
    assert gc.get_threshold() == (12_345, before[1], before[2])
    assert gc.get_freeze_count() > 0
    (record,) = [r for r in caplog.records if r.name == "actorsource.tuning"]
    assert record.getMessage() == "garbage collector tuned"
    assert record.gen0_threshold == 12_345  # type: ignore[attr-defined]


@pytest.mark.usefixtures("restored_collector")
def test_tune_gc_without_freeze_leaves_every_object_collectable() -> None:
    tune_gc(freeze=False)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 20_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "700"])
@pytest.mark.usefixtures("restored_collector")
def test_tune_gc_refuses_a_threshold_that_is_not_a_positive_int(bad: object) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match=f"gen0_threshold must be a positive int, got {bad!r}"):
        tune_gc(gen0_threshold=bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.fixture
def restored_switch_interval() -> Iterator[None]:
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored_switch_interval")
def test_tune_switch_interval_sets_it_and_returns_the_old_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sys.setswitchinterval(0.005)
    with caplog.at_level(logging.INFO, logger="actorsource.tuning"):
        previous = tune_switch_interval()

    assert previous == pytest.approx(0.005)
    assert sys.getswitchinterval() == pytest.approx(0.001)
    (record,) = [r for r in caplog.records if r.name == "actorsource.tuning"]
    assert record.getMessage() == "switch interval tuned"
    assert record.switch_interval == 0.001  # type: ignore[attr-defined]
    assert tune_switch_interval(0.0005) == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


@pytest.mark.parametrize("bad", [0, -0.001, float("inf"), float("nan"), True, "0.001"])
@pytest.mark.usefixtures("restored_switch_interval")
def test_tune_switch_interval_refuses_what_is_not_a_positive_number(bad: object) -> None:
    before = sys.getswitchinterval()
    with pytest.raises(ValueError, match="seconds must be a positive number, got"):
        tune_switch_interval(bad)  # type: ignore[arg-type]
    assert sys.getswitchinterval() == before
