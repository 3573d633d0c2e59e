"""Health checks of a runtime: its store, the store's writer and growth, its projections."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio
import attrs

from ._projection_context import ProjectionStatus
from .stores._base import EventStore, StorageGrowth


@attrs.frozen(slots=True)
class HealthCheck:
    """One check of :meth:`Runtime.health`."""

    #: what was checked: ``store``, ``writer``, ``storage`` or ``projection <name>``
    name: str
    #: whether it passed
    ok: bool
    #: what was found (a number, or the error)
    detail: str


@attrs.frozen(slots=True)
class Health:
    """The outcome of :meth:`Runtime.health`: healthy when every check passed."""

    #: whether every check passed
    healthy: bool
    #: each check, in order
    checks: tuple[HealthCheck, ...]


async def check_health(
    store: EventStore,
    writer_lag: Callable[[], float] | None,
    statuses: Iterable[ProjectionStatus],
    *,
    max_writer_lag: float,
    max_projection_lag: float,
    timeout: float,  # noqa: ASYNC109  # a limit per check, as in health endpoints
    storage_growth: Callable[[], StorageGrowth] | None = None,
    max_bytes_per_day: float | None = None,
) -> Health:
    """Run the checks :meth:`Runtime.health` describes."""
    checks: list[HealthCheck] = []
    try:
        with anyio.fail_after(timeout):
            head = await store.head_position()
        checks.append(HealthCheck("store", True, f"reachable, head position {head}"))
    except TimeoutError:
        checks.append(HealthCheck("store", False, f"no answer within {timeout} s"))
    except Exception as exc:
        checks.append(HealthCheck("store", False, f"{type(exc).__name__}: {exc}"))
    lag_of = writer_lag
    if lag_of is not None:
        try:
            lag = float(lag_of())
            checks.append(
                HealthCheck(
                    "writer",
                    lag <= max_writer_lag,
                    f"oldest pending write waited {lag:.3f} s (limit {max_writer_lag} s)",
                )
            )
        except Exception as exc:
            checks.append(HealthCheck("writer", False, f"{type(exc).__name__}: {exc}"))
    if storage_growth is not None:
        checks.append(_storage_check(storage_growth, max_bytes_per_day))
    for status in statuses:
        if status.state == "standby":
            checks.append(
                HealthCheck(
                    f"projection {status.name}",
                    True,
                    f"standby: runs on another member (stored checkpoint {status.position})",
                )
            )
            continue
        if status.state == "failing":
            checks.append(
                HealthCheck(f"projection {status.name}", False, f"failing: {status.last_error}")
            )
            continue
        checks.append(
            HealthCheck(
                f"projection {status.name}",
                status.lag_seconds <= max_projection_lag,
                f"{status.state}, lag {status.lag_events} events, "
                f"{status.lag_seconds:.3f} s (limit {max_projection_lag} s)",
            )
        )
    return Health(all(check.ok for check in checks), tuple(checks))


def _storage_check(
    storage_growth: Callable[[], StorageGrowth], max_bytes_per_day: float | None
) -> HealthCheck:
    try:
        growth = storage_growth()
    except Exception as exc:
        return HealthCheck("storage", False, f"{type(exc).__name__}: {exc}")
    limit = "no limit" if max_bytes_per_day is None else f"limit {max_bytes_per_day:,.0f}"
    detail = (
        f"{growth.events_per_second:.1f} events/s, {growth.bytes_per_day:,.0f} bytes/day "
        f"over the last {growth.window:.0f} s ({limit})"
    )
    ok = max_bytes_per_day is None or growth.bytes_per_day <= max_bytes_per_day
    return HealthCheck("storage", ok, detail)
