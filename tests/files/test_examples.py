"""The example files of docs/examples/files: each one is a clean file of its layout (header, every record,
trailer count and control totals), and the inbound ones import into the demo's store as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.files.importer import Importer
from adapters.files.reader import records
from gateway.calaim.demo import load_demo
from gateway.fhir.context import Context
from mappings.files.layout import DETAIL, TRAILER, Totals, layout, parse_detail, parse_header, parse_trailer
from tests.files.conftest import POLICY

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "files"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.txt")), ids=lambda p: p.name)
def test_every_example_is_a_clean_file_of_its_layout(path: Path) -> None:
    stream = records(path)
    header = parse_header(next(stream)[1])
    spec = layout(header.layout)
    assert path.name == f"{spec.id}.txt" and header.version == spec.version
    totals = Totals(spec)
    trailer = None
    for line, fields in stream:
        if fields[0] == DETAIL:
            values, errors = parse_detail(spec, fields[1:], line)
            assert errors == []
            totals.add(values)
        else:
            assert fields[0] == TRAILER and trailer is None
            trailer = parse_trailer(spec, fields)
            assert totals.check(trailer, line) == []
    assert trailer is not None and trailer.count > 0


def test_the_inbound_examples_import_into_the_demo(importer: Importer, plan_ctx: Context, tmp_path: Path) -> None:
    load_demo(plan_ctx, policy=POLICY)
    hn = importer.run(EXAMPLES / "hn-authorization.txt", report_dir=tmp_path)
    assert (hn.status, hn.counts.applied, hn.errors) == ("done", 4, 0), hn.report and hn.report.read_text()
    otf = importer.run(EXAMPLES / "outreach-tracker.txt", report_dir=tmp_path)
    assert (otf.status, otf.counts.applied, otf.errors) == ("done", 2, 0), otf.report and otf.report.read_text()
    rtf = importer.run(EXAMPLES / "return-transmission.txt", report_dir=tmp_path)
    assert (rtf.status, rtf.counts.read, rtf.errors) == ("done", 1, 0), rtf.report and rtf.report.read_text()
