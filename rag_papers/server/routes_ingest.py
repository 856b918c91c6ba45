"""Ingest over HTTP: ``POST /v1/ingest`` (an upload, or a path inside the server's
ingest_roots) and ``GET /v1/ingest/{job}``. Both always need the API key.

Each ingest is a job on the engine's ingest queue (its own thread, ``ingest_jobs``). The POST
waits for it up to ``wait`` seconds (default 30): done in time, 200 with the report; else
202 with the job's status URL, which takes the same ``wait``. A full queue is 429 with
Retry-After. Uploads are deleted once ingested. With several worker processes a status
request may land on a worker that did not run the job: it reads the job board instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from rag_papers.server.deps import Engine, EngineDep
from rag_papers.server.errors import ApiError, as_validation_error
from rag_papers.server.guard import INGEST_PATH
from rag_papers.server.ingest_files import (
    IngestFile,
    resolve_ingest_path,
    safe_loader_message,
    save_upload,
    scrub_report,
)
from rag_papers.server.ingest_jobs import IngestJob, QueueFull
from rag_papers.server.schemas import (
    INGEST_REQUEST_BODY,
    ErrorBody,
    IngestJobBody,
    IngestPathBody,
    IngestReportBody,
    errors,
)

__all__ = ["ingest", "ingest_status", "router"]

router = APIRouter(tags=["ingest"])

_RETRY_AFTER_S = 10
_WAIT_DEFAULT = 30.0
_WAIT_MAX = 300.0
_POLL_S = 0.25  # how often a status request polls another worker's job

Wait = Annotated[
    float,
    Query(
        ge=0,
        le=_WAIT_MAX,
        description="Seconds to wait for the job to finish before answering 202 with its status.",
    ),
]


@router.post(
    INGEST_PATH,
    responses={
        202: {"model": IngestJobBody, "description": "Still queued or running."},
        **errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
    },
    openapi_extra={"requestBody": INGEST_REQUEST_BODY},
)
async def ingest(request: Request, engine: EngineDep, wait: Wait = _WAIT_DEFAULT) -> IngestJobBody:
    """Add papers: JSON {path, format?, fields?} naming a file inside the server's
    ingest_roots, or a multipart upload (file, format?)."""
    if engine.ingests.full():  # before reading (and storing) an upload
        raise _busy()
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        file, fmt, fields = await _receive_upload(request, engine)
    elif content_type.startswith("application/json") or not content_type:
        try:
            spec = IngestPathBody.model_validate_json(await request.body())
        except ValueError as exc:
            raise as_validation_error(exc) from None
        file = resolve_ingest_path(spec.path, engine.settings)
        fmt, fields = spec.format, spec.fields
    else:
        raise ApiError(
            415,
            f"unsupported content type {content_type!r}: send "
            "application/json or multipart/form-data",
            code="unsupported_media_type",
        )
    job = IngestJob(work=lambda: _run(engine, file, fmt, fields), cleanup=file.cleanup)
    try:
        engine.ingests.submit(job)
    except QueueFull:
        file.cleanup()
        raise _busy() from None
    return await _answer(job, wait, engine)


@router.get(f"{INGEST_PATH}/{{job_id}}", responses=errors(400, 401, 403, 404))
async def ingest_status(job_id: str, engine: EngineDep, wait: Wait = 0.0) -> IngestJobBody:
    """A job's status; with ``wait``, once it is done or ``wait`` seconds have passed."""
    job = engine.ingests.get(job_id)
    if job is not None:
        await _wait(job, wait)
    else:  # another worker process's job (serve --workers N), or none
        job = await _wait_shared(engine, job_id, wait)
    if job is None:
        raise ApiError(
            404, f"no ingest job {job_id!r} (finished jobs are kept for a while)", "not_found_error"
        )
    return _body(job, engine)


def _busy() -> ApiError:
    return ApiError(
        429,
        "the ingest queue is full (ingest_queue_size): retry later",
        "rate_limit_error",
        code="ingest_queue_full",
        headers={"Retry-After": str(_RETRY_AFTER_S)},
    )


async def _wait(job: IngestJob, seconds: float) -> None:
    if seconds <= 0 or job.done.done():
        return
    # shield: a timeout (or a client that hangs up) must not cancel the job itself
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.done)), seconds)


async def _wait_shared(engine: Engine, job_id: str, seconds: float) -> IngestJob | None:
    """The job as the job board shows it, polled until it is finished or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        job = await asyncio.to_thread(engine.ingests.shared, job_id)
        left = deadline - time.monotonic()
        if job is None or job.done.done() or left <= 0:
            return job
        await asyncio.sleep(min(_POLL_S, left))


async def _answer(job: IngestJob, wait: float, engine: Engine) -> Any:
    await _wait(job, wait)
    if job.status == "failed" and job.error is not None:
        raise job.error  # the same error a synchronous ingest would have given
    body = _body(job, engine)
    if job.status == "done":
        return body
    return JSONResponse(body.model_dump(mode="json"), 202, headers={"Location": body.status_url})


def _body(job: IngestJob, engine: Engine) -> IngestJobBody:
    error = None
    if job.error is not None:
        e = job.error
        message = engine.scrub(e.message)
        error = ErrorBody(message=message, type=e.type, param=e.param, code=e.code)
    report = IngestReportBody(**job.report) if job.report is not None else None
    return IngestJobBody(
        job=job.id,
        status=job.status,
        status_url=f"{INGEST_PATH}/{job.id}",
        report=report,
        error=error,
    )


def _run(
    engine: Engine, file: IngestFile, fmt: str | None, fields: dict[str, str] | None
) -> dict[str, Any]:
    """The job itself, on the ingest thread."""
    from rag_papers import LoaderError

    qa = engine.ready()
    try:
        report = qa.ingest([file.path], format=fmt, fields=fields)
    except LoaderError as exc:
        message = engine.scrub(safe_loader_message(str(exc), file))
        raise ApiError(400, message, "loader_error", code="loader_error") from None
    except ValueError as exc:  # a field mapping that cannot apply to this format
        message = engine.scrub(safe_loader_message(str(exc), file))
        raise ApiError(400, message, param="fields") from None
    data = scrub_report(report.to_dict(), file)
    return {**data, "papers": qa.count()}


async def _receive_upload(
    request: Request, engine: Engine
) -> tuple[IngestFile, str | None, dict[str, str] | None]:
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                400,
                "multipart ingest needs a 'file' part (the papers file)",
                param="file",
                code="missing",
            )
        fmt = form.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise ApiError(400, "'format' must be a text field", param="format")
        if fmt:
            try:
                IngestPathBody(path="-", format=fmt)
            except ValueError as exc:
                raise as_validation_error(exc) from None
        file = await asyncio.to_thread(save_upload, upload, engine.settings)
        return file, (fmt or None), None
    finally:
        await form.close()
