"""``genforge studio``: a FastAPI app over ``genforge.api`` and ``genforge.lab``, served by uvicorn.

``create_app`` builds the app (tests use it with FastAPI's TestClient); ``serve`` starts it. The
routes live in ``routes_*.py``; what is refused lives in ``safety.py``; work off the event loop in
``jobs.py``. Nothing here trains, samples or scores by itself.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from genforge.errors import GenforgeError
from genforge.web.common import StudioJSON, validation_line
from genforge.web.jobs import EvalJobs, ModelCache, Workers
from genforge.web.safety import UPLOAD_LIMIT, Guard, Refused, is_loopback, new_token

STATIC = Path(__file__).parent / "static"
# The page may load and call only this server (pictures also as data: URLs); no other site may frame it.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass
class Studio:
    """What every route shares: the runs folder, the limits and the worker pools."""

    root: Path
    data_root: str | None
    max_trainings: int
    models: ModelCache
    model_workers: Workers
    lab_workers: Workers
    evals: EvalJobs


def _load(run_dir: Path):
    from genforge import api

    return api.load(run_dir, device="cpu")


def _evaluate(run_dir: Path, **options) -> dict:
    from genforge import api

    return api.evaluate(run_dir, device="cpu", **options)


def create_app(runs: str | Path = "runs", token: str | None = None, data_root: str | None = None,
               max_trainings: int | None = None, model_waiting: int = 8,
               upload_limit: int = UPLOAD_LIMIT) -> FastAPI:
    """The studio app over the runs folder ``runs`` (created if missing).

    token: required on every request when given; max_trainings: live trainings allowed at once
    (default one per CPU core); model_waiting: sampling jobs in hand before the studio answers busy.
    """
    from genforge.web import routes_eval, routes_explore, routes_lab, routes_runs, routes_train

    root = Path(runs)
    root.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="genforge studio", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=StudioJSON)
    app.state.studio = Studio(
        root=root, data_root=data_root, max_trainings=max_trainings or os.cpu_count() or 1,
        models=ModelCache(_load), model_workers=Workers("sampling", threads=1, max_waiting=model_waiting),
        lab_workers=Workers("toy lab", threads=1, max_waiting=4), evals=EvalJobs(_evaluate))
    app.state.labs = routes_lab.LabSessions()
    app.state.runs = routes_runs.RunsSnapshot(root)
    for module in (routes_runs, routes_train, routes_explore, routes_eval, routes_lab):
        app.include_router(module.router)

    @app.exception_handler(Refused)
    async def refused(_, error: Refused):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(GenforgeError)
    async def bad_input(_, error: GenforgeError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):  # an unknown route: the studio's one line
        message = (f"no such page or API route: {request.url.path} (the studio's pages are under /)"
                   if error.status_code == 404 else str(error.detail))
        return JSONResponse({"error": message}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def refused_fields(_, error: RequestValidationError):  # one line, not pydantic's error list
        return JSONResponse({"error": validation_line(error.errors())}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, token=token, upload_limit=upload_limit)
    return app


def check_address(runs: str | Path, host: str, port: int) -> None:
    """Refuse, before the URL is printed, a runs folder that is a file and a port that is out of range or
    taken (another studio, another server): uvicorn would fail after the URL pointed at someone else."""
    import socket

    if Path(runs).exists() and not Path(runs).is_dir():
        raise GenforgeError(f"--runs {runs} is a file, not a folder of runs")
    if not 0 < port < 65536:
        raise GenforgeError(f"--port takes 1-65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise GenforgeError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            raise GenforgeError(f"cannot serve on {host}:{port} ({e.strerror}): another program holds the port, "
                                f"perhaps another studio; choose another --port") from None


def serve(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          data_root: str | None = None, max_trainings: int | None = None) -> None:
    """Start the studio and print its URL. Any host but loopback gets a token (generated if not given)."""
    import uvicorn

    from genforge.threads import apply_threads

    check_address(runs, host, port)
    apply_threads(0)  # the server's own sampling: the cores the trainings beside it leave free, not all of them
    if token is None and not is_loopback(host):
        token = new_token()
    app = create_app(runs, token=token, data_root=data_root, max_trainings=max_trainings)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"genforge studio: runs in {Path(runs).resolve()}; open {url}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
