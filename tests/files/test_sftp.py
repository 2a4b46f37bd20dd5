"""SFTP transport against real SFTP servers on loopback ports (asyncssh, generated host and user keys):
the gateway's endpoint (uploads land whole in the party's inbox, reports are fetched from its outbox,
nothing outside its folder is reachable) and the client that exchanges with a party's own server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from adapters.files.dropdir import DropDir
from adapters.files.service import FileExchange
from adapters.files.sftp import Exchanged, Remote, exchange_with, serve
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.files.support import add_members, auth_row, write_file


def _keys(folder: Path, *users: str) -> tuple[Path, dict[str, Path]]:
    """A host key and one user key per user (private key files; ``<user>.pub`` in ``folder/authorized``)."""
    folder.mkdir(parents=True, exist_ok=True)
    host = folder / "host_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(host))
    authorized = folder / "authorized"
    authorized.mkdir(exist_ok=True)
    private: dict[str, Path] = {}
    for user in users:
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(folder / user))
        key.write_public_key(str(authorized / f"{user}.pub"))
        private[user] = folder / user
    return host, private


def test_the_gateway_endpoint(plan_ctx: Context, settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "exchange"
    exchange = FileExchange(plan_ctx, settings.model_copy(update={"files_root": root, "files_settle_s": 0.0}))
    add_members(plan_ctx, [1, 2])
    host_key, users = _keys(tmp_path / "keys", "hn-altamed", "hn-ccn")
    upload = write_file(tmp_path / "auth-1.txt", "hn-authorization", [auth_row(1).values(), auth_row(9).values()])
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 5000)

    async def scenario() -> dict[str, object]:
        acceptor = await serve(
            host="127.0.0.1",
            port=0,
            host_key=host_key,
            keys_dir=tmp_path / "keys" / "authorized",
            drop=exchange.drop,
            max_bytes=4096,
        )
        port = acceptor.get_port()
        seen: dict[str, object] = {}
        try:
            async with (
                asyncssh.connect(
                    "127.0.0.1", port, username="hn-altamed", client_keys=[str(users["hn-altamed"])], known_hosts=None
                ) as conn,
                conn.start_sftp_client() as sftp,
            ):
                seen["root"] = sorted(await sftp.listdir("/"))
                await sftp.put(str(upload), "/inbox/auth-1.txt")
                seen["escape"] = await _refused(sftp.put(str(upload), "/../hn-ccn/inbox/x.txt"))
                seen["outbox write"] = await _refused(sftp.put(str(upload), "/outbox/x.txt"))
                seen["symlink"] = await _refused(sftp.symlink("/etc/passwd", "/inbox/p.txt"))
                seen["mkdir"] = await _refused(sftp.mkdir("/inbox/sub"))
                seen["too big"] = await _refused(sftp.put(str(big), "/inbox/big.txt"))
                await asyncio.to_thread(exchange.run_once, schedule=False)
                seen["outbox"] = sorted(n for n in await sftp.listdir("/outbox") if not n.startswith("."))
                cut = await sftp.open("/inbox/cut.txt", "wb")
                await cut.write(upload.read_bytes()[:150])  # the connection is cut before the file is closed
                await sftp.get("/outbox/auth-1.txt.errors.txt", str(tmp_path / "report.txt"))
                await sftp.remove("/outbox/auth-1.txt.errors.txt")
                archived = [n for n in await sftp.listdir("/archive") if not n.startswith(".")]
                seen["archive remove"] = await _refused(sftp.remove(f"/archive/{archived[0]}"))
                conn.abort()
            seen["wrong key"] = await _refused(
                asyncssh.connect(
                    "127.0.0.1", port, username="hn-altamed", client_keys=[str(users["hn-ccn"])], known_hosts=None
                )
            )
            seen["password"] = await _refused(
                asyncssh.connect(
                    "127.0.0.1", port, username="hn-altamed", password="x", client_keys=None, known_hosts=None
                )
            )
        finally:
            acceptor.close()
            await acceptor.wait_closed()
        return seen

    seen = asyncio.run(scenario())
    assert [n for n in seen["root"] if not n.startswith(".")] == ["archive", "inbox", "outbox", "rejected"]  # type: ignore[attr-defined]
    for refusal in ("escape", "outbox write", "symlink", "mkdir", "too big", "archive remove", "wrong key", "password"):
        assert seen[refusal] is True, refusal
    assert seen["outbox"] == ["auth-1.txt.errors.txt"]
    report = (tmp_path / "report.txt").read_text().splitlines()
    assert report[1].split("|")[2:5] == ["3", "MEMBER_CIN", "unknown"]
    assert not list((root / "hn-ccn" / "inbox").iterdir())
    assert [p.name for p in (root / "hn-altamed" / "inbox").iterdir()] == []
    assert len(list((root / "hn-altamed" / "archive").iterdir())) == 1
    (cut,) = (root / "hn-altamed" / "rejected").iterdir()
    assert cut.name.endswith("-cut.txt") and cut.stat().st_size == 150
    assert "without a trailer" in (root / "hn-altamed" / "outbox" / "cut.txt.errors.txt").read_text()


async def _refused(action: object) -> bool:
    try:
        await action  # type: ignore[misc]
    except (asyncssh.SFTPError, asyncssh.Error, OSError):
        return True
    return False


@pytest.mark.parametrize("rounds", [1])
def test_the_client_exchanges_with_a_partys_server(tmp_path: Path, rounds: int) -> None:
    """The plan logs in to an HN's server (user calop): fetches the HN's files, delivers the HN's outbox."""
    theirs = DropDir(tmp_path / "hn-server", ["calop"])
    ours = DropDir(tmp_path / "gateway", ["hn-altamed"])
    ours.ensure()
    host_key, users = _keys(tmp_path / "keys", "calop")
    (theirs.folder("calop", "outbox") / "auth-20250106.txt").write_text("HDR|x\n")
    (ours.outbox("hn-altamed") / "authorization-reconciliation_hn-altamed_20250106_000001.txt").write_text("HDR|y\n")
    known_hosts = tmp_path / "known_hosts"

    async def scenario() -> list[Exchanged]:
        acceptor = await serve(
            host="127.0.0.1",
            port=0,
            host_key=host_key,
            keys_dir=tmp_path / "keys" / "authorized",
            drop=theirs,
            max_bytes=10_000,
        )
        port = acceptor.get_port()
        public = asyncssh.read_private_key(str(host_key)).export_public_key().decode().strip()
        known_hosts.write_text(f"[127.0.0.1]:{port} {public}\n")
        remote = Remote("127.0.0.1", port, "calop", users["calop"], known_hosts)
        try:
            return [await exchange_with(remote, ours, "hn-altamed", max_bytes=10_000) for _ in range(rounds + 1)]
        finally:
            acceptor.close()
            await acceptor.wait_closed()

    first, second = asyncio.run(scenario())
    assert first.downloaded == ["auth-20250106.txt"] and first.uploaded == [
        "authorization-reconciliation_hn-altamed_20250106_000001.txt"
    ]
    assert second.downloaded == [] and second.uploaded == []
    assert (ours.folder("hn-altamed", "inbox") / "auth-20250106.txt").read_text() == "HDR|x\n"
    assert (theirs.folder("calop", "inbox") / "authorization-reconciliation_hn-altamed_20250106_000001.txt").exists()
    assert list(theirs.folder("calop", "outbox").iterdir()) == []
