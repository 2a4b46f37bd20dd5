"""Synthetic HL7 v2 messages and a real MLLP listener for the county interface tests (no real member data:
CINs 9xxxxxxxA, names Testmember)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select

from adapters.hl7v2.config import mapping_config
from adapters.hl7v2.mllp import FrameDecoder, frame
from adapters.hl7v2.processor import InboundProcessor
from adapters.hl7v2.server import MllpServer
from gateway.calaim.policy import Policy
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.schema import resource

COUNTY_NPI = "1999999133"
MSH_TAIL = "||||||UNICODE UTF-8"


def ref_i12(
    control_id: str,
    *,
    cin: str = "91000001A",
    mrn: str | None = None,
    service: str = "ecm",
    pof: str = "3",
    referral_id: str | None = None,
    family: str = "Testmember",
    version: str = "2.5.1",
    msh_tail: str = MSH_TAIL,
    extra: tuple[str, ...] = (),
    pid: str | None = None,
) -> str:
    """A REF^I12 from the county (segments joined by CR, ending with CR)."""
    ids = f"{cin}^^^MEDI-CAL^MA" + (f"~{mrn}^^^OCHCA^MR" if mrn else "")
    segments = [
        f"MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|20250301101500||REF^I12^REF_I12|{control_id}|P|{version}{msh_tail}",
        f"RF1|P^Pending^HL70283|R^Routine^HL70280|{service}^Service^CALAIMSVC||O^Outpatient^HL70284|"
        f"{referral_id or 'CR-' + control_id}^^OCHCA|20250301|||{pof}^Population of focus^CALAIMPOF",
        "AUT||||20250301|20260228|||24",
        f"PRD|RP|Clinician^Casey|||||{COUNTY_NPI}^NPI",
        pid or f"PID|1||{ids}||{family}^Alex^Q||19900401|F|||1 Main St^^Santa Ana^CA^92701||^PRN^PH^^^714^5550100",
        "IN1|1|MC^Medi-Cal|calop|CalOptima Health",
        "DG1|1||F20.9^Schizophrenia, unspecified^I10||20241201|W",
        "NTE|1||Referred after crisis stabilization",
        *extra,
    ]
    return "\r".join(segments) + "\r"


def adt(
    control_id: str,
    event: str = "A01",
    *,
    cin: str | None = "91000001A",
    mrn: str | None = "MRN-1",
    visit: str = "V-1",
    patient_class: str = "I",
    admit: str = "20250310081500",
    discharge: str = "",
) -> str:
    """An ADT message (A01/A03/A04/A08) from the county."""
    ids = "~".join(part for part in (f"{cin}^^^MEDI-CAL^MA" if cin else "", f"{mrn}^^^OCHCA^MR" if mrn else "") if part)
    structure = "ADT_A03" if event == "A03" else "ADT_A01"
    segments = [
        f"MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|20250310090000||ADT^{event}^{structure}|{control_id}|P|2.5.1{MSH_TAIL}",
        f"EVN|{event}|20250310090000",
        f"PID|1||{ids}||Testmember^Alex||19900401|F",
        pv1(patient_class=patient_class, visit=visit, admit=admit, discharge=discharge),
        "DG1|1||F31.9^Bipolar disorder, unspecified^I10||20250310|A",
    ]
    return "\r".join(segments) + "\r"


def pv1(*, patient_class: str, visit: str, admit: str, discharge: str) -> str:
    """A PV1 with class (2), location (3), admit source (14), visit number (19), admit/discharge (44/45)."""
    fields = [""] * 46
    fields[1], fields[2], fields[3], fields[14], fields[19] = "1", patient_class, "BHU^201^A^OCHCA-CSU", "7", visit
    fields[44], fields[45] = admit, discharge
    return "PV1|" + "|".join(fields[1:]).rstrip("|")


def segments_of(ack: bytes) -> dict[str, list[list[str]]]:
    """An ACK's segments by name, each as its fields (``fields[1]`` is field 1)."""
    out: dict[str, list[list[str]]] = {}
    for line in ack.decode("latin-1").split("\r"):
        if line:
            out.setdefault(line[:3], []).append(line.split("|"))
    return out


def msa(ack: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of an ACK."""
    fields = [*segments_of(ack)["MSA"][0], "", ""]
    return fields[1], fields[2]


def processor_for(ctx: Context, settings: Settings) -> InboundProcessor:
    """The inbound processor of ``ctx`` with the default plan."""
    policy = Policy.load(settings.calaim_plan_dir)
    return InboundProcessor(ctx, settings, policy, mapping_config(settings, policy))


def count(ctx: Context, res_type: str) -> int:
    """How many current resources of a type the store holds."""
    with ctx.repo.connect() as conn:
        query = select(func.count()).where(resource.c.res_type == res_type, resource.c.deleted.is_(False))
        return int(conn.execute(query).scalar_one())


def search(ctx: Context, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Search the store in-process; the matching resources as JSON."""
    import orjson

    out = []
    with ctx.repo.connect() as conn:
        for match in ctx.search.find(conn, resource_type=res_type, params=params, limit=100):
            stored = ctx.repo.read(res_type, match.res_id)
            assert stored is not None and stored.body is not None
            out.append(orjson.loads(stored.body))
    return out


class ServerThread:
    """An ``MllpServer`` on 127.0.0.1 in its own event loop thread (a real TCP listener)."""

    def __init__(
        self, processor: InboundProcessor, *, max_message_bytes: int = 1024 * 1024, parse_workers: int | None = None
    ) -> None:
        self.server = MllpServer(processor, max_message_bytes=max_message_bytes, parse_workers=parse_workers)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(120)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class CountyListener:
    """The county's side of the RRI: a real MLLP listener (threads) that records every message and answers
    with the ACK code ``answer`` (changeable while running)."""

    def __init__(self, answer: str = "AA") -> None:
        import socket

        self.answer = answer
        self.received: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Any) -> None:
        decoder = FrameDecoder(1024 * 1024)
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for received in decoder.feed(data):
                    self.received.append(received.data)
                    control_id = received.data.split(b"\r")[0].split(b"|")[9].decode()
                    code = self.answer
                    err = "\rERR||PID^1^3|204^Unknown key identifier^HL70357|E" if code != "AA" else ""
                    ack = (
                        f"MSH|^~\\&|HCA-BHS|OCHCA|CALAIM-GATEWAY|CALOPTIMA|20250301||ACK^I12^ACK|A{control_id}|P|2.5.1\r"
                        f"MSA|{code}|{control_id}{err}\r"
                    )
                    conn.sendall(frame(ack.encode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@contextmanager
def county_listener(answer: str = "AA") -> Iterator[CountyListener]:
    """A running ``CountyListener``."""
    listener = CountyListener(answer)
    try:
        yield listener
    finally:
        listener.close()
