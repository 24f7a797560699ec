"""The web application (Starlette): the page, its static files and a small JSON API.

    GET  /                                 the page (zipa/web/static/index.html)
    GET  /static/...                       its script, style sheet and recorder worklet
    GET  /api/info                         the model's name, the upload limit, the window
    POST /api/jobs                         multipart: ``file`` (one audio file), optional
                                           ``transcript`` (IPA, or orthography with ``lang``)
                                           -> 202 {"id", ...}; 400 {"error"} for an empty or
                                           unreadable file, 413 {"error"} above the limit;
                                           503 (too many files waiting) or 507 (the uploads
                                           held would pass the disk cap), with Retry-After
    GET  /api/jobs/{id}                    state (queued, running, done, error), queue position,
                                           seconds decoded of the duration, the result when done
    GET  /api/jobs/{id}/spectrogram/{k}    tile k of the spectrogram (PNG)
    GET  /api/jobs/{id}/download/{format}  textgrid, ctm, jsonl or tsv: `zipa align -f FORMAT`'s bytes

Nothing is fetched from elsewhere: the page works offline. Errors are JSON objects with an
``error`` message naming the file, and never stop the server.

Only the server's own page may use it. A request whose ``Host`` is not one of
``allowed_hosts`` gets 400 (Starlette's TrustedHostMiddleware): a page elsewhere that gets a
browser to send requests here by DNS rebinding (its own name made to resolve to this address)
names its own host, so it can neither read the results nor upload. A request that changes
something (POST) and comes from a page of another origin gets 403 (`SameOriginOnly`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import Headers, UploadFile
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(f"zipa.web needs the web extra: pip install 'zipa-phones[web]' ({e})") from e

from zipa.decoding.options import DecodingOptions
from zipa.web.jobs import DEFAULT_MAX_QUEUE, DONE, MB, JobQueue, Refused, UploadError, downloads
from zipa.web.server import LOOPBACK_HOSTS

if TYPE_CHECKING:
    from zipa.inference.transcriber import Transcriber

STATIC = Path(__file__).resolve().parent / "static"
STOP_WAIT = 5.0  # seconds that stopping the server waits for the file being decoded
DEFAULT_MAX_UPLOAD_MB = 200.0
DEFAULT_MAX_DISK_MB = 2048.0
RETRY_AFTER = 3  # seconds a refused upload (503, 507) is told to wait
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class UploadTooLarge(Exception):
    """The request body went past the upload limit."""


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class SameOriginOnly:
    """ASGI middleware: 403 for a request that changes something (any method but GET, HEAD,
    OPTIONS) sent by a page of another origin, which a browser says with ``Sec-Fetch-Site``
    (anything but ``same-origin`` or ``none``) or ``Origin`` (another host and port than
    ``Host``'s, or ``null``). Browsers send ``Origin`` with every POST; a request with neither
    header does not come from a web page (curl, a script) and goes through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = cross_origin(Headers(scope=scope))
            if refusal:
                await _error(403, refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_origin(headers: Headers) -> str | None:
    """Why a request with these headers comes from a page of another origin; None when not."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: a request from another site (Sec-Fetch-Site: {site}); only this server's own page may upload"
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return f"refused: a request from the page {origin}; only this server's own page may upload"
    return None


def _limited(request: Request, limit: int) -> Request:
    """``request`` whose body may not exceed ``limit`` bytes: reading past it raises
    UploadTooLarge (for bodies sent without a Content-Length, or with a wrong one)."""
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise UploadTooLarge()
        return message

    return Request(request.scope, receive)


def check_limits(max_upload_mb: float, max_disk_mb: float) -> None:
    """ValueError when the disk cap is below the upload limit: the largest uploads would never fit."""
    if max_disk_mb < max_upload_mb:
        raise ValueError(
            f"the disk cap (--max-disk-mb {max_disk_mb:g}) is below the upload limit "
            f"(--max-upload-mb {max_upload_mb:g}): the largest uploads could never be taken"
        )


def create_app(
    transcriber: Transcriber,
    *,
    model_name: str = "",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    tmp_dir: None | str | Path = None,
    options: DecodingOptions | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_disk_mb: float = DEFAULT_MAX_DISK_MB,
) -> Starlette:
    """The application serving ``transcriber`` (a `zipa.inference.transcriber.Transcriber`).

    ``model_name``: shown on the page. ``max_upload_mb``: larger uploads are refused (413).
    ``tmp_dir``: where uploads are kept while their job runs (default: the system's temporary
    folder). ``options``: how files are decoded (`zipa.decoding.options.DecodingOptions`, as
    `zipa align`'s options; default: the defaults). ``allowed_hosts``: the
    ``Host`` names answered (`zipa.web.server.allowed_hosts`; default this machine's loopback
    names). ``max_queue``: files waiting at most (503 beyond); ``max_disk_mb``: the uploads held
    at most (507 beyond; not below ``max_upload_mb``: `check_limits`). The job queue is
    ``app.state.jobs`` (`zipa.web.jobs.JobQueue`); its worker stops when the application shuts down.
    """
    check_limits(max_upload_mb, max_disk_mb)
    options = options if options is not None else DecodingOptions()
    jobs = JobQueue(transcriber, tmp_dir, options, max_queue=max_queue, max_bytes=int(max_disk_mb * MB))
    limit = int(max_upload_mb * MB)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "model": model_name,
                "max_upload_mb": max_upload_mb,
                "max_queue": max_queue,
                "max_disk_mb": max_disk_mb,
                "window": options.window,
                "overlap": options.overlap,
                "ctc": bool(transcriber.uses_ctc),
                "waiting": jobs.waiting,
                "held_mb": jobs.held / MB,
            }
        )

    async def submit(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else limit  # the body is cut at the limit
        if size > limit:
            return _too_large(size)
        try:
            with jobs.admit(size) as ticket:  # before the body is read
                async with _limited(request, limit).form(max_files=1, max_fields=4) as form:
                    upload = form.get("file")
                    if not isinstance(upload, UploadFile):
                        return _error(400, "no audio file in the upload (a multipart form with a 'file' field)")
                    transcript, lang = _text(form.get("transcript")), _text(form.get("lang"))
                    job = await run_in_threadpool(
                        jobs.submit, ticket, upload.filename or "audio", upload.file, transcript, lang
                    )
        except Refused as e:
            return _error(e.status, str(e), headers={"Retry-After": str(RETRY_AFTER)})
        except UploadTooLarge:
            return _too_large(None)
        except UploadError as e:
            return _error(400, str(e))
        return JSONResponse(job.to_json(jobs.position(job)), status_code=202)

    def _too_large(size: int | None) -> JSONResponse:
        what = f"the upload ({size / MB:.1f} MB)" if size is not None else "the upload"
        return _error(
            413, f"{what} is larger than this server's limit of {max_upload_mb:g} MB (zipa serve --max-upload-mb)"
        )

    def _job(request: Request):
        job = jobs.get(request.path_params["job_id"])
        if job is None:
            return None, _error(
                404, f"no job {request.path_params['job_id']} (jobs are kept while the server runs, the last ones only)"
            )
        return job, None

    async def status(request: Request) -> Response:
        job, missing = _job(request)
        return missing or JSONResponse(job.to_json(jobs.position(job)))

    async def tile(request: Request) -> Response:
        job, missing = _job(request)
        if missing:
            return missing
        k = request.path_params["tile"]
        if job.state != DONE or not 0 <= k < len(job.tiles):
            return _error(404, f"{job.name}: no spectrogram tile {k}")
        return Response(job.tiles[k].png, media_type="image/png")

    async def download(request: Request) -> Response:
        job, missing = _job(request)
        if missing:
            return missing
        fmt = request.path_params["fmt"]
        if fmt not in downloads():
            return _error(404, f"no format {fmt!r} (there are {', '.join(downloads())})")
        if job.state != DONE:
            return _error(409, f"{job.name}: not transcribed ({job.state})")
        filename, media_type, text = job.download(fmt)
        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        return Response(
            text.encode("utf-8"),
            media_type=f"{media_type}; charset=utf-8",
            headers={"Content-Disposition": disposition},
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await run_in_threadpool(jobs.close, STOP_WAIT)

    app = Starlette(
        routes=[
            Route("/", index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/api/info", info),
            Route("/api/jobs", submit, methods=["POST"]),
            Route("/api/jobs/{job_id}", status),
            Route("/api/jobs/{job_id}/spectrogram/{tile:int}", tile),
            Route("/api/jobs/{job_id}/download/{fmt}", download),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False),
            Middleware(SameOriginOnly),
        ],
        lifespan=lifespan,
    )
    app.state.jobs = jobs
    return app


def _text(value) -> str | None:
    """A form field's text, None when absent or blank."""
    return value.strip() or None if isinstance(value, str) else None
