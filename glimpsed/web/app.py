"""The Starlette application: pages, the JSON API (the CLI's `--json` shapes, from `glimpsed.report`), the
outputs' downloads and /metrics.

Every request opens its own store connection (SQLite in WAL mode: readers never wait for the daemon).
Nothing is fetched from elsewhere: the 3D viewers are served from ``static/vendor`` (`make web-assets`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from glimpsed import __version__, report
from glimpsed.config import DaemonConfig, web_token
from glimpsed.errors import InvalidTransition, JobNotFound
from glimpsed.store import STATES, JobStore
from glimpsed.web.metrics import StoreCollector
from glimpsed.web.security import COOKIE, TokenGuard, session_value

HERE = Path(__file__).parent
PAGE_SIZE = 50
VIEWERS = ("model-viewer/model-viewer.min.js", "spark/spark.module.min.js", "three/three.module.min.js")


def viewers_installed() -> bool:
    """Whether `make web-assets` put the 3D viewers into ``static/vendor``."""
    return all((HERE / "static" / "vendor" / v).is_file() for v in VIEWERS)


def create_app(config: DaemonConfig, pipeline_version: str) -> Starlette:
    """The web application for `config` (its store, outbox and `web.*` settings)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["clock"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""
    token = web_token(config)
    registry = CollectorRegistry(auto_describe=False)       # no store read at registration: only when scraped
    registry.register(StoreCollector(lambda: JobStore(config.path("db"), migrate=False), pipeline_version))

    def store() -> JobStore:
        return JobStore(config.path("db"), migrate=False)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"version": __version__, "login": token is not None,
                                                          **context}, status_code=status_code)

    def with_store(func: Callable[..., Any]) -> Callable[[Request], Any]:
        def endpoint(request: Request) -> Any:
            s = store()
            try:
                return func(request, s)
            except JobNotFound as exc:
                return JSONResponse({"error": "not found", "detail": str(exc)}, status_code=404)
            except InvalidTransition as exc:
                return JSONResponse({"error": "conflict", "detail": str(exc)}, status_code=409)
            finally:
                s.close()
        return endpoint

    # -- pages ---------------------------------------------------------------------------------

    def dashboard(request: Request, s: JobStore) -> Response:
        return page(request, "dashboard.html", status=report.status(s), inbox=str(config.path("inbox")),
                    outbox=str(config.path("outbox")))

    def job_list(request: Request, s: JobStore) -> Response:
        state = request.query_params.get("state") or None
        state = state if state in STATES else None
        number = max(1, int(request.query_params.get("page", "1") or 1))
        rows = report.jobs(s, state, PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE)
        return page(request, "jobs.html", jobs=rows[:PAGE_SIZE], state=state, states=STATES, page=number,
                    more=len(rows) > PAGE_SIZE, counts=s.counts())

    def job_page(request: Request, s: JobStore) -> Response:
        detail = report.job_detail(s, request.path_params["job_id"])
        job = detail["job"]
        files = outputs(job)
        splats = [f for f in files if f.endswith(".splat")] + [f for f in files if f.endswith(".ply")]
        return page(request, "job.html", job=job, events=detail["events"], files=files,
                    stages=(job.get("result") or {}).get("stages", []),
                    advice=hint(job) if job["state"] == "failed" else "",
                    glb=next((f for f in files if f.endswith(".glb")), None), splat=(splats or [None])[0],
                    viewers=viewers_installed())

    def download(request: Request, s: JobStore) -> Response:
        job = report.job_dict(s.get(request.path_params["job_id"]))
        name = request.path_params["name"]
        if name not in outputs(job):
            return JSONResponse({"error": "not found", "detail": f"{name} is not an output of {job['id']}"},
                                status_code=404)
        return FileResponse(Path(job["output_dir"]) / name, filename=name,
                            content_disposition_type="inline" if request.query_params.get("inline") else "attachment")

    def login_form(request: Request) -> Response:
        return page(request, "login.html", status_code=401 if request.method == "GET" and request.url.path != "/login"
                    else 200, next=_local_path(request.query_params.get("next") or request.url.path), error="")

    async def login(request: Request) -> Response:
        form = await request.form()
        target = _local_path(str(form.get("next") or "/"))
        if token is None or str(form.get("token", "")) != token:
            return page(request, "login.html", status_code=401, next=target, error="That is not the web token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict", path="/")
        return response

    def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- the API: the CLI's --json shapes -------------------------------------------------------

    def api_status(request: Request, s: JobStore) -> Response:
        return JSONResponse(report.status(s))

    def api_jobs(request: Request, s: JobStore) -> Response:
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            return JSONResponse({"error": "bad request", "detail": f"state must be one of {', '.join(STATES)}"},
                                status_code=400)
        limit = min(1000, int(request.query_params.get("limit", PAGE_SIZE)))
        return JSONResponse(report.jobs(s, state, limit, offset=int(request.query_params.get("offset", 0))))

    def api_job(request: Request, s: JobStore) -> Response:
        detail = report.job_detail(s, request.path_params["job_id"])
        return JSONResponse({**detail, "files": outputs(detail["job"])})

    def api_retry(request: Request, s: JobStore) -> Response:
        return JSONResponse(report.job_dict(s.retry(request.path_params["job_id"])))

    def api_cancel(request: Request, s: JobStore) -> Response:
        return JSONResponse(report.job_dict(s.cancel(request.path_params["job_id"])))

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", with_store(dashboard)),
        Route("/jobs", with_store(job_list)),
        Route("/jobs/{job_id}", with_store(job_page)),
        Route("/jobs/{job_id}/files/{name}", with_store(download)),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/status", with_store(api_status)),
        Route("/api/jobs", with_store(api_jobs)),
        Route("/api/jobs/{job_id}", with_store(api_job)),
        Route("/api/jobs/{job_id}/retry", with_store(api_retry), methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", with_store(api_cancel), methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(TokenGuard, token=token, metrics_public=config.web.metrics_public, login_page=login_form)
    return app


def outputs(job: dict[str, Any]) -> list[str]:
    """The files of a job's published folder (what the page offers for download)."""
    folder = job.get("output_dir")
    if job.get("state") != "done" or not folder or not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


def hint(job: dict[str, Any]) -> str:
    """What the user can do about a failed job: the hint its error.json in failed/ carries, else the advice the
    worker gives for its error type."""
    from glimpsed.outbox import error_file
    from glimpsed.worker import advice

    if job.get("aside_path"):
        try:
            return json.loads(error_file(Path(job["aside_path"])).read_text())["hint"]
        except (OSError, ValueError, KeyError):
            pass
    return advice(job["id"], job["error_type"] or "")


def _local_path(target: str) -> str:
    """`target` when it is a path of this site, else "/" (no redirect elsewhere after a login)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
