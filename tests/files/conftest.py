"""Fixtures of the file exchange tests: the plan's Organizations stored, an importer and an exporter."""

from __future__ import annotations

import pytest

from adapters.files.handlers import INBOUND
from adapters.files.importer import Importer
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest

POLICY = Policy.load()


@pytest.fixture
def plan_ctx(ctx: Context) -> Context:
    """``ctx`` with the plan's Organizations stored."""
    with ctx.writing() as tx:
        inner = ctx.in_transaction(tx)
        for org in POLICY.organizations.values():
            dispatch(inner, FhirRequest("PUT", f"Organization/{org['id']}", resource=dict(org)))
    return ctx


@pytest.fixture
def importer(plan_ctx: Context) -> Importer:
    """An importer with small chunks (several transactions per test file)."""
    return Importer(plan_ctx, POLICY, INBOUND, chunk_rows=4)
