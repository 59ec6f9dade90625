"""What the studio refuses, in one place: strangers, other sites, paths out of the runs folder, big bodies.

Why each check exists:
- token: a studio bound to anything but loopback is reachable by the network; only holders of the
  printed token may use it (query ``?token=``, header ``X-Genforge-Token`` or the cookie set from either).
- Host: without a token, a page on another site could reach a loopback studio by DNS rebinding
  (its own name resolving to 127.0.0.1); refusing a foreign Host header stops that.
- Origin: a page on another site may POST to us (start trainings); browsers name the page's origin.
- run ids: they come from the URL; they may name only folders under the runs folder.
- body size: uploads are decoded in memory, so they are capped before they are read.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from genforge.errors import shorten
from genforge.runs import PROCESS_FILE

UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes: an upload above this is refused before it is read
LOOPBACK_NAMES = {"localhost", "[::1]"}
MAX_ID = 512  # characters of a run id or file name: far past any real one, short of the OS's name limits
COOKIE = "genforge_token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Refused(Exception):
    """A request the studio will not serve: the HTTP status and one line saying why and what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """Whether a Host name is this machine's loopback: 'localhost', '[::1]' or a 127.x.y.z address
    (an address, not a name that starts with '127.': '127.0.0.1.attacker.example' is a rebinding name)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1'; '[::1]:8765' -> '[::1]'."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


class Guard:
    """ASGI middleware that refuses, before any route runs, what ``check`` names (see the module doc)."""

    def __init__(self, app, token: str | None, upload_limit: int = UPLOAD_LIMIT):
        self.app = app
        self.token = token
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        try:
            from_query = self.check(scope, headers)
        except Refused as refusal:
            response = JSONResponse({"error": refusal.message}, status_code=refusal.status)
            return await response(scope, receive, send)
        if not from_query:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            # The token came in the URL (the printed link): keep it in a cookie so the page's
            # own requests, images and event streams carry it without putting it in every URL.
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    def check(self, scope, headers: Headers) -> bool:
        """Raises Refused; returns whether the token came in the query string (so a cookie is set)."""
        from_query = self._check_token(scope, headers)
        if self.token is None and not is_loopback(_host_name(headers.get("host", ""))):
            raise Refused(403, f"host '{headers.get('host', '')}' refused: this studio answers only as "
                               "127.0.0.1/localhost (start it with --token to serve other names)")
        if scope["method"] in UNSAFE_METHODS:
            self._check_origin(headers)
            self._check_length(headers)
        return from_query

    def _check_token(self, scope, headers: Headers) -> bool:
        if self.token is None:
            return False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookie = Request(scope).cookies.get(COOKIE, "")
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        for place, given in enumerate((query, headers.get("x-genforge-token", ""), bearer, cookie)):
            if given and secrets.compare_digest(given.encode(), self.token.encode()):
                return place == 0
        raise Refused(401, "this studio needs its token: open the URL it printed (…/?token=…) "
                           "or send the header X-Genforge-Token")

    def _check_origin(self, headers: Headers) -> None:
        origin = headers.get("origin")
        host = headers.get("host", "")
        if headers.get("sec-fetch-site") == "cross-site":
            raise Refused(403, "cross-site request refused: the studio takes changes only from its own page")
        if origin is not None and urlsplit(origin).netloc != host:
            raise Refused(403, f"origin '{origin}' refused: the studio takes changes only from its own page "
                               f"(http://{host})")

    def _check_length(self, headers: Headers) -> None:
        length = headers.get("content-length")
        if length is None:
            if headers.get("transfer-encoding"):
                raise Refused(411, "a request body needs a Content-Length (uploads are capped at "
                                   f"{self.upload_limit // 2**20} MB)")
            return
        if not length.isdigit() or int(length) > self.upload_limit:
            raise Refused(413, f"request body of {length} bytes refused: uploads are capped at "
                               f"{self.upload_limit // 2**20} MB")


async def read_capped(request: Request, limit: int = UPLOAD_LIMIT) -> bytes:
    """The request body, refused (413) past ``limit`` bytes even if Content-Length understated it."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"upload refused: more than {limit // 2**20} MB")
        chunks.append(chunk)
    if size == 0:
        raise Refused(400, "empty upload: send the file's bytes as the request body")
    return b"".join(chunks)


def new_token() -> str:
    return secrets.token_urlsafe(18)


def resolve_run(root: Path, run_id: str) -> Path:
    """The real folder that ``run_id`` (a posix path relative to ``root``) names, or Refused.

    Refuses empty ids, absolute paths, drive letters, backslashes, '.'/'..' parts and any id whose
    real path (symlinks followed) leaves ``root``; 404 when no run is there: a run is a folder with
    config.json, or with the process.json of a training the studio started that has not written it yet.
    """
    if len(run_id) > MAX_ID:
        raise Refused(400, f"run id of {len(run_id)} characters refused: give a folder under the runs folder, "
                           "like 'mnist-vae-1'")
    if not run_id or "\x00" in run_id or "\\" in run_id or re.match(r"^[A-Za-z]:", run_id):
        raise Refused(400, f"run id {run_id!r} refused: give a folder under the runs folder, like 'mnist-vae-1'")
    parts = run_id.split("/")
    if PurePosixPath(run_id).is_absolute() or any(part in ("", ".", "..") for part in parts):
        raise Refused(400, f"run id {run_id!r} refused: absolute paths and '.'/'..' may not name a run")
    try:
        root_real = root.resolve()
        real = (root_real / run_id).resolve()
        if real == root_real or not real.is_relative_to(root_real):
            raise Refused(403, f"run id {run_id!r} refused: it leads outside the runs folder {root}")
        config, child = real / "config.json", real / PROCESS_FILE
        found = config.is_file() if config.exists() else (child.is_file() and not child.is_symlink())
        inside = config.resolve().is_relative_to(root_real)
    except OSError as error:  # a name too long for the file system, a loop of links
        raise Refused(400, f"run id {shorten(run_id)!r} refused: {error.strerror or error}") from None
    if not found or not inside:
        raise Refused(404, f"no run '{run_id}' under {root} (a run is a folder with config.json)")
    return real


def run_file(run_dir: Path, name: str, folders: tuple[str, ...] = ("samples", "plots")) -> Path:
    """A picture inside the run: ``name`` must be FOLDER/FILE.png|jpg|gif in one of ``folders`` and stay inside."""
    parts = name.split("/")
    if len(name) > MAX_ID or len(parts) != 2 or parts[0] not in folders or not re.fullmatch(r"[\w.-]+\.(png|jpg|jpeg|gif)", parts[1]) \
            or parts[1].startswith("."):
        raise Refused(400, f"file {name!r} refused: only pictures in {', '.join(folders)}/ of a run are served")
    try:
        path = (run_dir / name).resolve()
        if not path.is_relative_to(run_dir.resolve()):
            raise Refused(403, f"file {name!r} refused: it leads outside the run folder")
        found = path.is_file()
    except OSError as error:
        raise Refused(400, f"file {shorten(name)!r} refused: {error.strerror or error}") from None
    if not found:
        raise Refused(404, f"no file {name} in this run")
    return path


def check_run_name(name: str) -> str:
    """A name for a new run folder, typed in the browser: one plain folder name, nothing else."""
    if not RUN_NAME.fullmatch(name):
        raise Refused(400, f"run name {name!r} refused: use letters, digits, '.', '_' or '-' (at most 64), "
                           "starting with a letter or digit")
    return name
