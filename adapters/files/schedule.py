"""The outbound schedule (issue 6: "a schedule runs the outbound files at their frequencies"): REFERENCE.md
§6 frequencies, at or after ``files_daily_at`` local time:

- daily: the authorization reconciliation file of each HN (once per HN and day);
- weekly, on ``files_weekly_day``: the ECM activity log of each HN for the week that ended the day before;
- monthly, from the first of the month: the POF eligibility list of each HN and ECM provider.

Each run asks the ledger what exists already, so a late start catches up once and a second instance (or
a rerun) produces nothing twice; the service runs it under a lease (one scheduler among N processes).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from adapters.files import ledger
from adapters.files.exports import (
    ACTIVITY,
    ELIGIBILITY,
    RECONCILIATION,
    Exporter,
    Written,
    ecm_providers,
    health_networks,
)
from gateway.calaim.policy import Policy


def week_ending(now: datetime, weekly_day: int) -> datetime:
    """The last day of the latest week whose log is due: the day before the latest ``weekly_day``."""
    back = (now.weekday() - weekly_day) % 7
    return now - timedelta(days=back + 1)


def run_due(exporter: Exporter, policy: Policy, now: datetime, *, daily_at: time, weekly_day: int) -> list[Written]:
    """Produce every outbound file that is due at ``now`` (local time) and not produced yet."""
    if now.time() < daily_at:
        return []
    engine = exporter.engine
    today = now.date()
    networks = health_networks(policy)
    written: list[Written] = []
    due = [n for n in networks if ledger.outbound_for(engine, RECONCILIATION, n, today.isoformat()) is None]
    if due:
        written += exporter.reconciliation(today, networks=due)
    week = week_ending(now, weekly_day).date()
    for network in networks:
        if ledger.outbound_for(engine, ACTIVITY, network, week.isoformat()) is None:
            written.append(exporter.activity(network, week))
    month = today.replace(day=1)
    for party in sorted(set(networks) | set(ecm_providers(policy))):
        if ledger.outbound_for(engine, ELIGIBILITY, party, f"{month:%Y-%m}") is None:
            written.append(exporter.eligibility(party, month))
    return written


def parse_time(text: str) -> time:
    """``HH:MM`` as a time."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
