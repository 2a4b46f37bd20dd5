"""The search mix at scale: pools of realistic queries per kind, drawn from the stored data, and a check
that the gateway and the bare limit answer each kind with the same first page."""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx

from bench.data import CIN_SYSTEM, DAYS, EPOCH, FAMILIES, cin_of

KINDS = ("identifier", "subject", "date", "family", "chain", "include")
"""Search kinds: token, reference, date range, string prefix, chained, _include."""

DESCRIPTIONS = {
    "identifier": "Patient?identifier=system|value",
    "subject": "ServiceRequest?subject=Patient/id",
    "date": "Encounter?date=geD&date=ltD+7",
    "family": "Patient?family=prefix",
    "chain": "ServiceRequest?subject:Patient.identifier=system|value",
    "include": "Task?patient=Patient/id&_include=Task:focus",
}


def _cin(number: int) -> str:
    return quote(f"{CIN_SYSTEM}|{cin_of(number)}", safe=":")


def query_pool(db_path: Path, *, families: int, per_kind: int, seed: int) -> dict[str, list[str]]:
    """``per_kind`` query paths of each kind; values come from what ``db_path`` holds."""
    rng = random.Random(seed)
    with sqlite3.connect(db_path) as conn:
        patients = [row[0] for row in conn.execute("SELECT res_id FROM resource WHERE res_type = 'Patient'")]
    return draw_queries(rng, patients, families=families, per_kind=per_kind)


def draw_queries(rng: random.Random, patients: list[str], *, families: int, per_kind: int) -> dict[str, list[str]]:
    """``per_kind`` query paths of each kind, drawn with ``rng`` from the stored Patient ids and families
    (the one definition of the query mix, for SQLite and PostgreSQL runs alike)."""
    pool: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for _ in range(per_kind):
        day = EPOCH + timedelta(days=rng.randrange(DAYS - 7))
        surname = rng.choice(FAMILIES)
        pool["identifier"].append(f"/fhir/Patient?identifier={_cin(rng.randrange(families))}")
        pool["subject"].append(f"/fhir/ServiceRequest?subject=Patient/{rng.choice(patients)}")
        pool["date"].append(f"/fhir/Encounter?date=ge{day.isoformat()}&date=lt{(day + timedelta(days=7)).isoformat()}")
        pool["family"].append(f"/fhir/Patient?family={surname[: rng.randint(min(3, len(surname)), len(surname))]}")
        pool["chain"].append(f"/fhir/ServiceRequest?subject:Patient.identifier={_cin(rng.randrange(families))}")
        pool["include"].append(f"/fhir/Task?patient=Patient/{rng.choice(patients)}&_include=Task:focus")
    return pool


def read_pool(db_path: Path, *, count: int, seed: int) -> list[str]:
    """``count`` read paths ``/fhir/Type/id`` sampled from every stored resource."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT res_type, res_id FROM resource WHERE deleted = 0").fetchall()
    picked = random.Random(seed).sample(rows, min(count, len(rows)))
    return [f"/fhir/{res_type}/{res_id}" for res_type, res_id in picked]


def _page(origin: str, path: str) -> tuple[list[tuple[str, str]], int]:
    answer = httpx.get(origin + path, headers={"Accept": "application/fhir+json"}, timeout=60)
    answer.raise_for_status()
    entries = answer.json().get("entry", [])
    found = sorted((e["fullUrl"].split("/fhir/", 1)[1], e["search"]["mode"]) for e in entries)
    return found, len(answer.content)


def compare(gateway: str, bare: str, pool: dict[str, list[str]], *, samples: int = 5) -> dict[str, dict[str, float]]:
    """For each kind, the mean entries and bytes per page, and how many sampled queries the gateway and
    the bare route answered differently (0 expected: the limit must do the same work)."""
    stats: dict[str, dict[str, float]] = {}
    for kind, paths in pool.items():
        entries = size = mismatches = 0
        for path in paths[:samples]:
            mine, mine_size = _page(gateway, path)
            theirs, _ = _page(bare, path)
            entries += len(mine)
            size += mine_size
            mismatches += mine != theirs
        n = max(1, min(samples, len(paths)))
        stats[kind] = {"entries_per_page": entries / n, "bytes_per_page": size / n, "mismatches": mismatches}
    return stats
