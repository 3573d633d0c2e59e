"""Where the PostgreSQL tests find a server: the one ``ACTORSOURCE_TEST_POSTGRES_DSN`` names, or
a throwaway one this run starts from the installed PostgreSQL (``initdb`` and ``pg_ctl`` in a
temporary directory, listening on a unix socket there only, stopped and deleted at the end).

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (the one
PostgreSQL's packages make), or ``nobody``, and owns the temporary directory.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

#: set to a postgresql:// URI: the PostgreSQL tests use that database (CI does)
DSN_VARIABLE = "ACTORSOURCE_TEST_POSTGRES_DSN"
#: set to 0: the PostgreSQL tests are skipped even where PostgreSQL is installed
SWITCH_VARIABLE = "ACTORSOURCE_TEST_POSTGRES"

#: the skip reason when no server can be had (one line in pytest's summary)
NO_POSTGRES = (
    f"PostgreSQL tests need PostgreSQL installed (its initdb and pg_ctl are not found), or "
    f"{DSN_VARIABLE} set to a postgresql:// URI of a test database"
)
POSTGRES_OFF = f"PostgreSQL tests are off ({SWITCH_VARIABLE}=0)"


class Choice(NamedTuple):
    """Where the PostgreSQL tests run: ``dsn`` (a server given), ``throwaway`` (one started
    from the binaries in ``value``) or ``skip`` (``value`` says why)."""

    kind: Literal["dsn", "throwaway", "skip"]
    value: str


def choose(env: Mapping[str, str], find_bindir: Callable[[], Path | None]) -> Choice:
    """Decide where the PostgreSQL tests run; ``find_bindir`` is asked only when it matters."""
    dsn = env.get(DSN_VARIABLE, "")
    if dsn:
        return Choice("dsn", dsn)
    if env.get(SWITCH_VARIABLE, "") == "0":
        return Choice("skip", POSTGRES_OFF)
    bindir = find_bindir()
    if bindir is None:
        return Choice("skip", NO_POSTGRES)
    return Choice("throwaway", str(bindir))


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The directory of the installed PostgreSQL server's ``initdb`` and ``pg_ctl``, or None.

    Looks where ``pg_config --bindir`` says, then in Debian's and Ubuntu's
    ``/usr/lib/postgresql/<version>/bin`` (the newest), then on ``PATH``.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


class ThrowawayServer:
    """A PostgreSQL server of this test run, in a temporary directory (see the module)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="actorsource-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        #: superuser ``actorsource``, database ``postgres``, reached on the socket in ``root``
        self.dsn = f"postgresql://actorsource@/postgres?host={self.root}&port=5432"
        self.started = False
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *command: str) -> None:
        user = self._user
        done = subprocess.run(
            [str(self.bindir / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            timeout=120,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            msg = (
                f"{command[0]} failed (exit status {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]} {log}".strip()
            )
            raise RuntimeError(msg)

    def start(self) -> None:
        """Make the cluster and start the server; return once it accepts connections."""
        self._run(
            "initdb", "-D", str(self.data), "-U", "actorsource", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        # a test server: no TCP port (nothing to collide with), no fsync (nothing to keep)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{self.root}'\n"
                "port = 5432\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.started = True

    def stop(self) -> None:
        """Stop the server (if it runs) and delete its directory."""
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    msg = "PostgreSQL cannot run as root, and there is no 'postgres' or 'nobody' user to run it as"
    raise RuntimeError(msg)
