"""SFTP transport (issue 6): the gateway's own SFTP endpoint over the drop directory, and a client that
exchanges files with a party's SFTP server (asyncssh, https://asyncssh.readthedocs.io/en/latest/api.html#sftp-server).

The endpoint: each party logs in with its Organization id as user name and its key (``<keys>/<org>.pub``,
no passwords); its root is its own drop folder, so it sees ``/inbox``, ``/outbox``, ``/archive`` and
``/rejected`` and nothing else. It may write only into ``/inbox``: an upload goes to a hidden ``.name.part``
file that becomes ``name`` when the client closes it (the watcher never takes a half-written file), and
stops at ``files_max_bytes``. It may read everything of its own and remove what it fetched from
``/outbox``. Links, folders and attribute changes are refused (``setstat`` is accepted and ignored, since
common clients set times after an upload).

The client (``exchange_with``): downloads the files of a remote folder into a party's inbox (hidden name,
then rename) and removes them remotely once stored; uploads the party's outbox files to a remote folder
(``.part``, then rename) and archives them locally once the rename succeeded.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from adapters.files.dropdir import FOLDERS, SAFE_NAME, DropDir, stamp
from adapters.files.importer import write_report
from adapters.files.writer import fsync_dir
from mappings.files.layout import TRAILER, FieldError

log = logging.getLogger("adapters.files")

WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND


def ends_with_trailer(path: Path) -> bool:
    """Whether the file's last record is a trailer (``TRL``): the file arrived whole."""
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 4096))
        lines = [line for line in stream.read().splitlines() if line.strip()]
    return bool(lines) and lines[-1].startswith(TRAILER.encode() + b"|")


def _denied(what: str) -> asyncssh.SFTPPermissionDenied:
    return asyncssh.SFTPPermissionDenied(what)


class ExchangeSFTPServer(asyncssh.SFTPServer):
    """The SFTP subsystem of one party's session (module docstring)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], *, root: Path, max_bytes: int, plan: str) -> None:
        self.party = str(chan.get_extra_info("username"))
        self.plan = plan
        self.max_bytes = max_bytes
        home = root / self.party
        for folder in FOLDERS:
            (home / folder).mkdir(parents=True, exist_ok=True)
        super().__init__(chan, chroot=os.fsencode(home))
        self._uploads: dict[int, tuple[bytes, bytes]] = {}
        self._failed: set[int] = set()
        self._home = home

    @staticmethod
    def _virtual(path: bytes) -> str:
        return posixpath.normpath(posixpath.join("/", os.fsdecode(path)))

    def _inbox_name(self, path: bytes, *, upload: bool = False) -> str | None:
        """The plain name of a file of ``/inbox`` (``upload``: a client's hidden ``.name.part`` too)."""
        folder, _, name = self._virtual(path).rpartition("/")
        plain = name[1:-5] if upload and name.startswith(".") and name.endswith(".part") else name
        return name if folder == "/inbox" and SAFE_NAME.match(plain) and ".." not in name else None

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        """Reads anywhere in the party's folder; writes only as an upload into ``/inbox``."""
        if not pflags & WRITE_FLAGS:
            return super().open(path, pflags, attrs)
        name = self._inbox_name(path, upload=True)
        if name is None:
            raise _denied("uploads go to /inbox, with a plain file name")
        part = os.fsencode(f"/inbox/.{name}.part")
        file_obj = super().open(part, pflags | asyncssh.FXF_TRUNC, attrs)
        self._uploads[id(file_obj)] = (self.map_path(part), self.map_path(os.fsencode(f"/inbox/{name}")))
        return file_obj

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        """Write an upload's bytes, up to the size limit."""
        if offset + len(data) > self.max_bytes:
            self._failed.add(id(file_obj))
            raise asyncssh.SFTPFailure(f"files over {self.max_bytes} bytes are refused")
        written: int = super().write(file_obj, offset, data)  # type: ignore[assignment]
        return written

    def close(self, file_obj: object) -> None:
        """Close; a complete upload becomes visible under its name only now (fsynced first).

        Complete means it ends with a trailer record (``TRL``): asyncssh also closes the files a cut
        connection left open, and a cut upload must not be taken for a file. An upload without a trailer
        goes to ``rejected`` with an error report in ``/outbox``; one over the size limit is dropped."""
        upload = self._uploads.pop(id(file_obj), None)
        failed = id(file_obj) in self._failed
        self._failed.discard(id(file_obj))
        if upload is not None:
            os.fsync(file_obj.fileno())  # type: ignore[attr-defined]
        super().close(file_obj)
        if upload is None:
            return
        part, final = Path(os.fsdecode(upload[0])), Path(os.fsdecode(upload[1]))
        if failed:
            part.unlink(missing_ok=True)
        elif final.name.startswith(".") or ends_with_trailer(part):
            part.replace(final)
            fsync_dir(final.parent)
            log.info("upload received from %s", self.party)
        else:
            rejected = self._home / "rejected" / f"{stamp()}-{final.name}"
            part.replace(rejected)
            reason = "the upload ended without a trailer record (TRL): the connection may have been cut; send it again"
            write_report(
                self.plan, final.name, self.party, [FieldError(0, "", "trailer", reason)], self._home / "outbox"
            )
            log.warning("incomplete upload from %s moved to rejected", self.party)

    def remove(self, path: bytes) -> None:
        """Only files of ``/outbox`` may be removed (the party fetched them)."""
        if posixpath.dirname(self._virtual(path)) != "/outbox":
            raise _denied("only files of /outbox may be removed")
        super().remove(path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """A rename inside ``/inbox`` (upload to a temporary name, then rename) to a plain name."""
        old_dir = posixpath.dirname(self._virtual(oldpath))
        if old_dir != "/inbox" or self._inbox_name(newpath) is None:
            raise _denied("renames are allowed inside /inbox only, to a plain file name")
        super().rename(oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        """As ``rename``."""
        self.rename(oldpath, newpath)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """Accepted and ignored (clients set times after an upload)."""

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        """Accepted and ignored."""

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """Accepted and ignored."""

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        """Refused."""
        raise _denied("links are refused")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        """Refused."""
        raise _denied("links are refused")

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """Refused."""
        raise _denied("folders are fixed")

    def rmdir(self, path: bytes) -> None:
        """Refused."""
        raise _denied("folders are fixed")


class _Auth(asyncssh.SSHServer):
    """Public-key login only: user ``org`` with the key in ``<keys>/<org>.pub``."""

    def __init__(self, keys_dir: Path, parties: set[str]) -> None:
        self.keys_dir = keys_dir
        self.parties = parties
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        keys = self.keys_dir / f"{username}.pub"
        if self._conn is not None and username in self.parties and keys.is_file():
            self._conn.set_authorized_keys(str(keys))
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


async def serve(
    *, host: str, port: int, host_key: Path, keys_dir: Path, drop: DropDir, max_bytes: int, plan: str = "calop"
) -> asyncssh.SSHAcceptor:
    """Start the SFTP endpoint (returns the acceptor: ``close()`` stops it; ``get_port()`` the bound port)."""
    drop.ensure()
    parties = set(drop.parties)

    def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> ExchangeSFTPServer:
        return ExchangeSFTPServer(chan, root=drop.root, max_bytes=max_bytes, plan=plan)

    return await asyncssh.listen(
        host,
        port,
        server_host_keys=[str(host_key)],
        server_factory=lambda: _Auth(keys_dir, parties),
        sftp_factory=sftp_factory,
        allow_scp=False,
    )


# ----------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Remote:
    """A party's SFTP server and the folders to exchange with."""

    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path | None
    pull_from: str = "outbox"
    """Remote folder whose files are the party's files for the plan."""
    push_to: str = "inbox"
    """Remote folder the plan's files for the party go to."""


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What one exchange moved."""

    downloaded: list[str]
    uploaded: list[str]


async def exchange_with(remote: Remote, drop: DropDir, party: str, *, max_bytes: int) -> Exchanged:
    """Fetch the party's files into its inbox and deliver its outbox files (module docstring)."""
    known: Any = str(remote.known_hosts) if remote.known_hosts else None
    async with (
        asyncssh.connect(
            remote.host,
            remote.port,
            username=remote.username,
            client_keys=[str(remote.client_key)],
            known_hosts=known,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        downloaded = await _download(sftp, remote.pull_from, drop.folder(party, "inbox"), max_bytes)
        uploaded = await _upload(sftp, drop.outbox(party), remote.push_to, drop.folder(party, "archive"))
    return Exchanged(downloaded, uploaded)


async def _download(sftp: asyncssh.SFTPClient, remote_dir: str, inbox: Path, max_bytes: int) -> list[str]:
    done: list[str] = []
    for entry in await sftp.readdir(remote_dir):
        name = str(entry.filename)
        attrs = entry.attrs
        regular = attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
        if not regular or not SAFE_NAME.match(name) or (attrs.size or 0) > max_bytes:
            continue
        temp = inbox / f".{name}.part"
        await sftp.get(f"{remote_dir}/{name}", str(temp))
        with temp.open("rb") as stored:
            os.fsync(stored.fileno())
        temp.replace(inbox / name)
        fsync_dir(inbox)
        await sftp.remove(f"{remote_dir}/{name}")  # only once the file is ours durably
        done.append(name)
    return done


async def _upload(sftp: asyncssh.SFTPClient, outbox: Path, remote_dir: str, archive: Path) -> list[str]:
    done: list[str] = []
    for path in sorted(outbox.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.is_symlink():
            continue
        part = f"{remote_dir}/.{path.name}.part"
        await sftp.put(str(path), part)
        await sftp.rename(part, f"{remote_dir}/{path.name}")
        path.replace(archive / f"sent-{path.name}")
        done.append(path.name)
    return done
