"""PostgreSQL 15 from Debian, with its own data directory, port and socket directory.

initdb and postgres refuse to run as root, so when we are root they run as the ``postgres`` system
user through ``setpriv`` (which execs, so the recorded PID is the postmaster's). Every connection,
local or TCP, needs the admin password (scram-sha-256): nothing is trusted.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .base import Context
from .config import BIND, NODE_IP, POD_SUBNET, PORTS, VERSIONS
from .proc import StackError, recorded_pid, start_daemon, stop, tcp_open, wait_until

ADMIN_USER = "admin"


def pg_bindir() -> Path:
    return Path(f"/usr/lib/postgresql/{VERSIONS['postgresql']}/bin")


def _as_postgres(argv: list[str]) -> list[str]:
    """Prefix argv so it runs as the postgres system user when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


class Postgres:
    name = "postgres"
    title = "PostgreSQL 15"
    wanted_secrets = {"postgres_admin_password": "password"}

    def _dirs(self, ctx: Context) -> tuple[Path, Path, Path]:
        base = ctx.paths.component_dir(self.name)
        return base, base / "data", base / "run"

    def prepare(self, ctx: Context) -> None:
        if not (pg_bindir() / "postgres").exists():
            raise StackError(
                f"PostgreSQL {VERSIONS['postgresql']} server binaries not found in {pg_bindir()}; "
                f"install them with: apt-get install -y postgresql-{VERSIONS['postgresql']}"
            )
        base, data, run = self._dirs(ctx)
        if (data / "PG_VERSION").exists():
            return
        for directory in (base, data, run):
            directory.mkdir(parents=True, exist_ok=True)
            _chown_to_postgres(directory)
        data.chmod(0o700)
        # The state dir's parents must be traversable by the postgres user.
        for parent in base.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        with tempfile.NamedTemporaryFile("w", dir=base, delete=False) as pwfile:
            pwfile.write(ctx.secrets["postgres_admin_password"] + "\n")
        pwpath = Path(pwfile.name)
        try:
            pwpath.chmod(0o600)
            _chown_to_postgres(pwpath)
            subprocess.run(  # noqa: S603
                _as_postgres(
                    [
                        str(pg_bindir() / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        ADMIN_USER,
                        f"--pwfile={pwpath}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as err:
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(f"initdb failed:\n{err.stdout}\n{err.stderr}") from err
        finally:
            pwpath.unlink(missing_ok=True)

    def _hba(self, ctx: Context) -> Path:
        """Password (scram-sha-256) for every connection: the local socket, loopback and the pod subnet."""
        base, _, _ = self._dirs(ctx)
        hba = base / "pg_hba.conf"
        hba.write_text(
            "local all all scram-sha-256\n"
            f"host all all {BIND}/32 scram-sha-256\n"
            f"host all all {NODE_IP}/32 scram-sha-256\n"
            f"host all all {POD_SUBNET} scram-sha-256\n"
        )
        _chown_to_postgres(hba)
        return hba

    def is_up(self, ctx: Context) -> bool:
        return recorded_pid(ctx.paths, self.name) is not None and tcp_open(BIND, PORTS["postgres"])

    def start(self, ctx: Context) -> None:
        _, data, run = self._dirs(ctx)
        argv = _as_postgres(
            [
                str(pg_bindir() / "postgres"),
                "-D",
                str(data),
                "-p",
                str(PORTS["postgres"]),
                "-c",
                # The node IP too: pods connect through the Service postgresql-official.postgres.
                f"listen_addresses={BIND},{NODE_IP}",
                "-c",
                f"hba_file={self._hba(ctx)}",
                "-c",
                f"unix_socket_directories={run}",
                "-c",
                "max_connections=200",
            ]
        )
        start_daemon(ctx.paths, self.name, argv)
        wait_until(
            "PostgreSQL to accept connections",
            lambda: tcp_open(BIND, PORTS["postgres"]),
            timeout=60,
            paths=ctx.paths,
            name=self.name,
        )

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, self.name)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "PGHOST": BIND,
            "PGPORT": str(PORTS["postgres"]),
            "PGUSER": ADMIN_USER,
            "PGPASSWORD": ctx.secrets["postgres_admin_password"],
            "PGDATABASE": "postgres",
        }
