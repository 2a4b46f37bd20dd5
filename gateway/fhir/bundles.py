"""batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction runs every entry in one database transaction: all or nothing. Entries are processed
in the order the spec prescribes (DELETE, POST, PUT/PATCH, GET/HEAD), ``urn:uuid`` fullUrls of
created resources get their ids before any entry is written, so references between new resources
(even circular ones) are rewritten to ``Type/id``, and conditional references (``Patient?identifier=``)
are resolved by search to exactly one resource. A batch runs each entry on its own and answers each.
Entries go through the same routing table and interactions as REST calls.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway import jsonutil, runtime
from gateway.errors import BadRequest, FhirError, Issue, PayloadTooLarge, PreconditionFailed
from gateway.fhir import conditional, model_pool
from gateway.fhir.bundle_json import bundle_bytes, entry_bytes
from gateway.fhir.context import Context
from gateway.fhir.model_pool import Judgements
from gateway.fhir.request import FhirRequest, FhirResponse
from gateway.fhir.responses import prefer_return
from gateway.search.dates import instant_text
from gateway.store.ids import new_id
from gateway.store.repository import WriteTransaction
from gateway.types import JSONObject

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
"""Processing order of transaction entries (http.html#trules)."""

REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}

PAUSE_COLLECTOR_BYTES = 16 * 1024
"""Bundles of this many bytes or more run with the cyclic collector paused (``gateway.runtime``): about
ten entries (a family of the ingest benchmark is ~6 KB)."""


@dataclass
class Entry:
    """One Bundle entry turned into a core request."""

    index: int
    method: str
    path: str
    query: list[tuple[str, str]]
    full_url: str | None
    resource: JSONObject | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def batch_or_transaction(ctx: Context, request: FhirRequest, params: dict[str, str]) -> FhirResponse:
    """``POST [base]`` with a batch or transaction Bundle; one of ``PAUSE_COLLECTOR_BYTES`` or more runs with
    the cyclic collector paused (``gateway.runtime.collector_paused``: its parsed entries, requests, index
    rows and responses stay alive until it ends, so the collections they would set off find nothing to free)."""
    large = request.body is not None and len(request.body) >= PAUSE_COLLECTOR_BYTES
    with runtime.collector_paused() if large else nullcontext():
        return _batch_or_transaction(ctx, request)


def _batch_or_transaction(ctx: Context, request: FhirRequest) -> FhirResponse:
    bundle = _bundle_body(ctx, request)
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"POST to the base takes a batch or transaction Bundle, not type {str(kind)[:40]!r}")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest(
            "Bundle.entry must be an array",
            issues=[Issue("structure", "Bundle.entry must be an array", expression=("Bundle.entry",))],
        )
    if len(raw_entries) > ctx.settings.max_bundle_entries:
        raise PayloadTooLarge(f"A Bundle may hold at most {ctx.settings.max_bundle_entries} entries")
    if kind == "batch":
        return _batch(ctx, request, raw_entries)
    parsed = [_parse_entry(i, raw, request) for i, raw in enumerate(raw_entries)]
    first_attempt = iter([parsed])

    def unit() -> FhirResponse:
        # A retried transaction starts from a fresh parse: the last attempt rewrote references in place.
        entries = next(first_attempt, None)
        if entries is None:
            fresh = _bundle_body(ctx, request).get("entry") or []
            entries = [_parse_entry(i, raw, request) for i, raw in enumerate(fresh)]
        return _transaction(ctx, request, entries)

    return ctx.run_write(unit)


def _bundle_body(ctx: Context, request: FhirRequest) -> JSONObject:
    if not request.body:
        raise BadRequest("POST to the base needs a Bundle body")
    bundle = jsonutil.loads_resource(request.body, max_depth=ctx.settings.max_json_depth)
    if bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base takes a Bundle")
    return bundle


def _parse_entry(index: int, raw: Any, outer: FhirRequest) -> Entry:
    where = f"Bundle.entry[{index}]"

    def bad(message: str, path: str) -> BadRequest:
        return BadRequest(
            f"{where}: {message}",
            issues=[Issue("required", f"{where}: {message}", expression=(f"{where}.{path}",))],
        )

    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise bad("every entry needs a request", "request")
    req = raw["request"]
    method = str(req.get("method") or "").upper()
    if method not in METHOD_ORDER:
        raise bad(f"unsupported request.method {method[:10]!r}", "request.method")
    url = req.get("url")
    if not isinstance(url, str) or not url:
        raise bad("request.url is required", "request.url")
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme and outer.base_url and url.startswith(outer.base_url):
        path = url[len(outer.base_url) :].split("?", 1)[0]
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise bad(f"a {method} entry needs a resource", "resource")
    if method == "PATCH":
        raise bad(
            "PATCH entries (a Binary holding a JSON Patch) are not supported; send PATCH directly",
            "request.method",
        )
    headers = {"prefer": outer.header("prefer") or ""}
    for field_name, header in (
        ("ifMatch", "if-match"),
        ("ifNoneExist", "if-none-exist"),
        ("ifNoneMatch", "if-none-match"),
    ):
        if isinstance(req.get(field_name), str):
            headers[header] = req[field_name]
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    return Entry(
        index,
        method,
        path.strip("/"),
        parse_qsl(parts.query, keep_blank_values=True),
        full_url,
        resource,
        headers,
    )


def _core_request(entry: Entry, outer: FhirRequest) -> FhirRequest:
    return FhirRequest(
        method=entry.method,
        path=entry.path,
        query=entry.query,
        headers=entry.headers,
        resource=entry.resource,
        base_url=outer.base_url,
        grant=outer.grant,
        client_address=outer.client_address,
    )


def _dispatch(ctx: Context, request: FhirRequest) -> FhirResponse:
    from gateway.fhir.core import dispatch  # the core's table includes this module's route

    if request.method == "POST" and request.path == "":
        raise BadRequest("Bundles may not be nested in a batch or transaction")
    return dispatch(ctx, request)


# --- batch ------------------------------------------------------------------------------------


def _batch(ctx: Context, request: FhirRequest, raw_entries: list[Any]) -> FhirResponse:
    out: list[bytes] = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw, request)
            response = _dispatch(ctx, _core_request(entry, request))
            out.append(_response_entry(request, response))
        except FhirError as error:
            out.append(_error_entry(error))
    return FhirResponse(200, bundle_bytes("batch-response", out))


def _error_entry(error: FhirError) -> bytes:
    return entry_bytes(
        {"response": {"status": f"{error.status}", "outcome": error.outcome()}},
        None,
    )


# --- transaction ------------------------------------------------------------------------------


def _transaction(ctx: Context, request: FhirRequest, entries: list[Entry]) -> FhirResponse:
    prefer_return(request)  # reject a bad Prefer before doing any work
    responses: dict[int, FhirResponse] = {}
    current: int | None = None
    order = sorted(entries, key=lambda e: (METHOD_ORDER[e.method], e.index))
    early = _prepare_unlocked(ctx, request, entries, order)
    with ctx.repo.write() as tx:
        tx_ctx = ctx.in_transaction(tx)
        try:
            if early is None:
                requests = _prepare(_as_caller(tx_ctx, request), tx, request, entries)
                judged = EntryJudgements.start(ctx, order, requests)
            else:
                requests, judged = early
            tx.expect_creates(sum(1 for entry in entries if entry.method == "POST"))
            for entry in order:
                current = entry.index
                core = requests[entry.index]
                if judged is not None:
                    judged.attach(core, entry.index, idle=tx.flush)
                responses[entry.index] = _dispatch(tx_ctx, core)
            current = None
        except FhirError as error:
            raise _located(error, entry_index=current) from None
    out = [_response_entry(request, responses[e.index]) for e in entries]
    return FhirResponse(200, bundle_bytes("transaction-response", out))


@dataclass
class EntryJudgements:
    """Validation and index rows of a transaction's POST and PUT resources, computed in ``model_pool``
    workers while the transaction's thread works through the entries before them."""

    pending: Judgements
    positions: dict[int, int]
    """The position sent of each judged entry (by entry index)."""

    @classmethod
    def start(cls, ctx: Context, order: list[Entry], requests: dict[int, FhirRequest]) -> EntryJudgements | None:
        """Send the resources the entries will write, in processing order and as their interactions will
        validate them (references rewritten; a create drops the client's id), or None when the
        transaction judges them itself."""
        positions: dict[int, int] = {}
        resources: list[tuple[str, bytes]] = []
        for entry in order:
            core = requests[entry.index]
            resource = core.resource
            if resource is None or core.method not in ("POST", "PUT"):
                continue  # a conditional create that found its match writes nothing
            if not isinstance(resource.get("resourceType"), str):
                continue  # the interaction reports it
            if core.method == "POST":
                resource = {k: v for k, v in resource.items() if k != "id"}
            positions[entry.index] = len(resources)
            resources.append((entry.path.split("/", 1)[0], jsonutil.dumps(resource)))
        workers = model_pool.configured_workers(ctx.settings.validation_workers)
        pending = model_pool.pool().submit(resources, workers=workers)
        return cls(pending, positions) if pending is not None else None

    def attach(self, core: FhirRequest, index: int, *, idle: Callable[[], None]) -> None:
        """Give the entry its judgement before it is dispatched. When it is not back yet, ``idle`` runs
        first (the transaction writes the rows it has buffered: work the wait would otherwise leave undone)."""
        position = self.positions.get(index)
        if position is not None:
            if not self.pending.ready(position):
                idle()
            core.judgement = self.pending.get(position)


def _as_caller(ctx: Context, request: FhirRequest) -> Context:
    """``ctx`` narrowed to what the caller may see (for the searches of conditional creates and references)."""
    if request.grant is None:
        return ctx
    from gateway.fhir.guard import access_for  # the guard dispatches through this module's route

    return ctx.with_access(access_for(ctx, request.grant))


def _prepare_unlocked(
    ctx: Context, outer: FhirRequest, entries: list[Entry], order: list[Entry]
) -> tuple[dict[int, FhirRequest], EntryJudgements | None] | None:
    """Prepare the entries and start their judgements before the transaction takes the store's write lock,
    when preparing needs no look-up in the store (no ``If-None-Exist``, no conditional reference): the
    model-check workers then judge this transaction while another one holds the lock (SQLite has one
    writer at a time), and the lock is held for the writes alone. None when the store is needed: the
    transaction prepares under the lock, as the spec's conditional semantics require (nothing was changed)."""
    if any(entry.method == "POST" and entry.headers.get("if-none-exist") for entry in entries):
        return None
    holders = [reference_holders(entry.resource) if entry.resource is not None else [] for entry in entries]
    if any(_is_conditional_reference(node["reference"]) for found in holders for node in found):
        return None
    requests, id_map = _assign_ids(entries, outer)
    for entry, found in zip(entries, holders, strict=True):
        for node in found:
            _rewrite_reference(entry, node, id_map)
    return requests, EntryJudgements.start(ctx, order, requests)


def _is_conditional_reference(ref: str) -> bool:
    """``Patient?identifier=...``: a search to resolve (http.html#trules), not a literal reference."""
    return "?" in ref and "/" not in ref.split("?", 1)[0]


def _assign_ids(
    entries: list[Entry],
    outer: FhirRequest,
    existing_for: Callable[[Entry, FhirRequest], str | None] | None = None,
) -> tuple[dict[int, FhirRequest], dict[str, str]]:
    """The core request of each entry with a new id for each create, and each fullUrl's ``Type/id``.
    ``existing_for`` answers a conditional create's match (its id, or None): the entry then reads it."""
    id_map: dict[str, str] = {}
    requests: dict[int, FhirRequest] = {}
    seen: set[str] = set()
    for entry in entries:
        core = _core_request(entry, outer)
        requests[entry.index] = core
        _check_unique_target(entry, seen)
        if entry.method == "POST" and entry.resource is not None:
            existing = existing_for(entry, core) if existing_for is not None else None
            if existing is not None:
                core.method, core.path, core.resource = "GET", f"{entry.path}/{existing}", None
                target = existing
            else:
                core.assigned_id = target = new_id()
            if entry.full_url:
                id_map[entry.full_url] = f"{entry.path}/{target}"
        elif entry.method == "PUT" and entry.full_url and entry.path.count("/") == 1:
            id_map[entry.full_url] = entry.path
    return requests, id_map


def _check_unique_target(entry: Entry, seen: set[str]) -> None:
    """A PUT or DELETE of ``Type/id`` may name a resource only once per transaction."""
    if entry.method in ("PUT", "DELETE") and entry.path.count("/") == 1:
        if entry.path in seen:
            raise BadRequest(f"{entry.where}: {entry.path} appears twice in the transaction")
        seen.add(entry.path)


def _prepare(ctx: Context, tx: WriteTransaction, outer: FhirRequest, entries: list[Entry]) -> dict[int, FhirRequest]:
    """Assign ids to new resources, map fullUrls, resolve conditional creates and references."""

    def existing_for(entry: Entry, core: FhirRequest) -> str | None:
        condition = entry.headers.get("if-none-exist")
        if not condition:
            return None
        core.condition_resolved = True
        found = conditional.existing_for_create(ctx, tx, entry.path, conditional.parse_condition(condition))
        return found.res_id if found is not None else None

    requests, id_map = _assign_ids(entries, outer, existing_for)
    for entry in entries:
        if entry.resource is not None:
            _rewrite_references(ctx, tx, entry, id_map)
    return requests


def _rewrite_references(ctx: Context, tx: WriteTransaction, entry: Entry, id_map: dict[str, str]) -> None:
    """Replace fullUrl references with ``Type/id`` and resolve conditional references in place."""
    for node in reference_holders(entry.resource):
        if _is_conditional_reference(node["reference"]):
            node["reference"] = _resolve_conditional_reference(ctx, tx, entry, node["reference"])
        else:
            _rewrite_reference(entry, node, id_map)


def _rewrite_reference(entry: Entry, node: dict[str, Any], id_map: dict[str, str]) -> None:
    """Replace a fullUrl reference with the ``Type/id`` of its entry (in place)."""
    ref = node["reference"]
    if ref in id_map:
        node["reference"] = id_map[ref]
    elif ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        raise BadRequest(f"{entry.where}: reference {ref[:80]} names no entry of this transaction")


_CONTAINERS = (dict, list)


def reference_holders(root: Any) -> list[dict[str, Any]]:
    """Every object under ``root`` with a string ``reference`` (a Reference), visited level by level
    (one comprehension per level: a transaction visits every node of every entry). Also the HL7 v2
    adapter's way to point mapped resources at each other (``adapters.hl7v2.apply``, ``batch``)."""
    found: list[dict[str, Any]] = []
    level = [root]
    while level:
        found.extend([n for n in level if type(n) is dict and type(n.get("reference")) is str])
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) in _CONTAINERS
        ]
    return found


def _resolve_conditional_reference(ctx: Context, tx: WriteTransaction, entry: Entry, ref: str) -> str:
    res_type, query = ref.split("?", 1)
    tx.flush()
    params = conditional.parse_condition(query)
    narrowing = ctx.narrowing((res_type,), "rs")
    matches = ctx.search.find(tx.conn, resource_type=res_type, params=params, limit=2, narrowing=narrowing)
    if len(matches) != 1:
        found = "no" if not matches else "several"
        raise PreconditionFailed(f"{entry.where}: conditional reference {ref[:100]} matched {found} resources")
    return f"{res_type}/{matches[0].res_id}"


def _located(error: FhirError, *, entry_index: int | None) -> FhirError:
    """Prefix the failing entry's location so the client knows which entry broke the transaction."""
    if entry_index is None:
        return error
    prefix = f"Bundle.entry[{entry_index}]"
    error.issues = [
        Issue(
            issue.code,
            issue.diagnostics if issue.diagnostics.startswith("Bundle.entry[") else f"{prefix}: {issue.diagnostics}",
            issue.severity,
            tuple(f"{prefix}.resource.{e}" if not e.startswith("Bundle") else e for e in issue.expression),
        )
        for issue in error.issues
    ]
    return error


def _response_entry(outer: FhirRequest, response: FhirResponse) -> bytes:
    status = response.status
    fields: dict[str, Any] = {"response": {"status": f"{status} {REASONS.get(status, '')}".strip()}}
    stored = response.stored
    if stored is not None:
        fields["fullUrl"] = f"{outer.base_url}/{stored.res_type}/{stored.res_id}"
        if "Location" in response.headers:
            fields["response"]["location"] = response.headers["Location"]
        fields["response"]["etag"] = stored.etag
        fields["response"]["lastModified"] = instant_text(stored.last_updated)
    body = response.body if response.body and stored is not None and not stored.deleted else None
    if response.body and stored is None:
        body = response.body  # GET searches, $operations: their Bundle/outcome is the entry's resource
    return entry_bytes(fields, body)
