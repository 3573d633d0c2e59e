"""A smoke run of the read-side benchmark at tiny sizes, so that it never rots."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_projections", ROOT / "benchmarks" / "projections.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_read_side_benchmark_catches_up_on_every_event_and_times_live_delivery(
    tmp_path: Path,
) -> None:
    results = await _load().run(events=2_000, live=20, directory=tmp_path, progress=False)

    assert results["events"] == 2_000
    assert results["catch_up_events_per_s"] > 0
    assert results["exactly_once_catch_up_events_per_s"] > 0
    assert results["live_deliveries"] == 20
    assert 0 <= results["live_latency_ms"]["p50"] <= results["live_latency_ms"]["p99.9"]
