"""MLflow's own tracking server app, as mlops.mlflow_stack runs it (`mlflow server --app-name
mlflow-stack`). Installed by the mlflow_server role; do not edit on the host.

MLflow runs its Flask handlers in the ASGI worker's thread pool, which anyio caps at 40 threads,
while each handler may hold two database connections at once (runs/log-batch keeps the run's
session open while the params and metrics get their own). With a smaller SQLAlchemy pool,
concurrent requests each take one connection and wait for a second one that never comes, until
the pool times out. This wrapper sets the worker's thread pool to MLFLOW_STACK_SERVER_THREADS,
which the role sizes together with the pool (pool_size + max_overflow >= 2 x threads): requests
beyond it wait in the event loop for a thread instead of starving the pool.

Request bodies arrive from uvicorn in small pieces; artifact uploads (PUT
/api/2.0/mlflow-artifacts/...) get them joined into pieces of at least
MLFLOW_STACK_SERVER_UPLOAD_CHUNK bytes, so MLflow writes its spool file in few large writes.

Artifact transfers with an S3 destination stream: a download is sent to the client as it
arrives from S3, an upload goes to S3 (multipart, as boto3 does it) while the client is still
sending. MLflow itself first spools the whole object in a temporary file, so the two halves run
one after the other (100 MB through nginx: 0.50x of boto3's upload speed and 0.40x of its
download speed). These routes are put in front of MLflow's own inside its FastAPI app, so
MLflow's middleware (allowed hosts, CORS, workspaces, metrics) still applies; its path
validation, artifact repository and upload arguments are used as they are; anything else
(another store, a missing key, a directory) is left to MLflow's own handlers.

MLflow itself is imported only inside the workers, on first use: `mlflow server` imports this
module to inspect it, and its supervisor process should stay small.
"""

import asyncio
import io
import json
import logging
import mimetypes
import os
import posixpath
import queue

THREADS = int(os.environ.get("MLFLOW_STACK_SERVER_THREADS") or 0)
UPLOAD_CHUNK = int(os.environ.get("MLFLOW_STACK_SERVER_UPLOAD_CHUNK") or 4 * 1024 * 1024)
_ARTIFACT_PATHS = ("/api/2.0/mlflow-artifacts/artifacts/", "/ajax-api/2.0/mlflow-artifacts/artifacts/")
_STREAM_CHUNK = 1024 * 1024
_logger = logging.getLogger("mlflow_stack_server")


def _s3_target(artifact_path):
    """(repository, bucket, root, path) of a proxied artifact file in an S3 destination, resolved
    and validated by MLflow's own functions; None for anything MLflow should answer itself."""
    from mlflow.server import artifact_router as router
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository
    from mlflow.utils.uri import validate_path_is_safe

    if not router._is_serving_proxied_artifacts():
        return None
    try:
        path = router._get_workspace_scoped_path(validate_path_is_safe(artifact_path))
        repo = router._get_artifact_repo()
    except Exception:  # noqa: BLE001 -- MLflow's own handler gives the right error
        return None
    if not isinstance(repo, S3ArtifactRepository) or not posixpath.basename(path or ""):
        return None
    bucket, root = repo.parse_s3_compliant_uri(repo.artifact_uri)
    return repo, bucket, root, path


async def _stream_s3_download(artifact_path):
    """A StreamingResponse of the S3 object behind a proxied artifact path, or None when MLflow
    should answer itself."""
    from fastapi.responses import StreamingResponse
    from mlflow.server import artifact_router as router
    from mlflow.utils.mime_type_utils import _guess_mime_type

    target = _s3_target(artifact_path)
    if target is None:
        return None
    repo, bucket, root, path = target
    try:
        obj = await asyncio.to_thread(repo._get_s3_client().get_object, Bucket=bucket, Key=posixpath.join(root, path))
    except Exception:  # noqa: BLE001 -- no such key (perhaps a directory): MLflow answers
        return None
    if not obj.get("ContentLength"):
        # Empty, or a store that answers for a directory: MLflow knows which.
        obj["Body"].close()
        return None
    body = obj["Body"]

    def chunks():
        try:
            yield from body.iter_chunks(_STREAM_CHUNK)
        finally:
            body.close()

    return StreamingResponse(chunks(), headers={
        "Content-Type": _guess_mime_type(path),
        "Content-Disposition": router._content_disposition(posixpath.basename(path)),
        "Content-Length": str(obj["ContentLength"]),
        "X-Content-Type-Options": "nosniff",
    })


class _BodyReader(io.RawIOBase):
    """The request body as a file boto3 reads in the upload's thread; fed from the event loop."""

    def __init__(self, depth=4):
        self.chunks = queue.Queue(maxsize=depth)
        self._buffer = bytearray()
        self._eof = False

    def readable(self):
        return True

    def read(self, size=-1):
        while not self._eof and (size is None or size < 0 or len(self._buffer) < size):
            chunk = self.chunks.get()
            if chunk is None:
                self._eof = True
            elif isinstance(chunk, BaseException):
                raise chunk
            else:
                self._buffer += chunk
        size = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


async def _stream_s3_upload(artifact_path, request):
    """Upload the request body to the S3 object behind a proxied artifact path while it arrives.
    None when MLflow should answer itself."""
    from fastapi.responses import Response

    target = _s3_target(artifact_path)
    if target is None:
        return None
    repo, bucket, root, path = target
    # What MLflow's S3 upload sends along: the guessed type, the bucket owner, MLFLOW_S3_UPLOAD_EXTRA_ARGS.
    extra = {}
    guessed_type, guessed_encoding = mimetypes.guess_type(path)
    if guessed_type:
        extra["ContentType"] = guessed_type
    if guessed_encoding:
        extra["ContentEncoding"] = guessed_encoding
    extra.update(getattr(repo, "_bucket_owner_params", None) or {})
    extra.update(repo.get_s3_file_upload_extra_args() or {})
    client = repo._get_s3_client()
    reader = _BodyReader()
    upload = asyncio.get_running_loop().run_in_executor(
        None, lambda: client.upload_fileobj(reader, bucket, posixpath.join(root, path), ExtraArgs=extra))
    try:
        async for chunk in request.stream():
            while chunk:
                if upload.done():
                    await upload  # raises the upload's error
                    raise RuntimeError("the S3 upload ended before the request body")
                try:
                    reader.chunks.put_nowait(chunk)
                    chunk = b""
                except queue.Full:
                    await asyncio.sleep(0.002)
        while True:
            try:
                reader.chunks.put_nowait(None)
                break
            except queue.Full:
                await asyncio.sleep(0.002)
        await upload
    except BaseException as exc:
        # A client that went away, or S3 refusing: stop the upload thread (it aborts the multipart
        # upload) and answer like MLflow does for a failed store.
        while not upload.done():
            try:
                reader.chunks.put_nowait(ConnectionAbortedError("request body incomplete"))
            except queue.Full:
                pass
            await asyncio.sleep(0.01)
        if not isinstance(exc, Exception):
            raise
        _logger.warning("artifact upload to s3://%s/%s failed: %s", bucket, posixpath.join(root, path), exc)
        return Response(json.dumps({"error_code": "INTERNAL_ERROR", "message": f"Artifact upload failed: {exc}"}),
                        status_code=500, media_type="application/json")
    return Response(status_code=200)


def _add_streaming_routes(app):
    """Put the streaming download and upload in front of MLflow's own routes, inside its app."""
    from fastapi import Request
    from fastapi.routing import APIRoute
    from mlflow.server import artifact_router as router

    async def download_artifact(artifact_path: str):
        response = await _stream_s3_download(artifact_path)
        return response if response is not None else await router.download_artifact(artifact_path)

    async def upload_artifact(artifact_path: str, request: Request):
        response = await _stream_s3_upload(artifact_path, request)
        return response if response is not None else await router.upload_artifact(artifact_path, request)

    for prefix in _ARTIFACT_PATHS:
        for endpoint, method in ((download_artifact, "GET"), (upload_artifact, "PUT")):
            app.router.routes.insert(0, APIRoute(prefix + "{artifact_path:path}", endpoint, methods=[method],
                                                 include_in_schema=False))


def _coalesced(receive, size):
    """An ASGI receive() that hands the body on in pieces of at least `size` bytes. Once the
    body is complete it is the plain receive() again (which waits for the disconnect)."""
    done = False

    async def receive_coalesced():
        nonlocal done
        if done:
            return await receive()
        chunks, length = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            length += len(chunks[-1])
            more = message.get("more_body", False)
            if not more or length >= size:
                done = not more
                return {"type": "http.request", "body": b"".join(chunks), "more_body": more}

    return receive_coalesced


def _settle_auth_module():
    """runs/search imports MLflow's basic-auth module on every call. Without its extra (Flask-WTF)
    that import fails half-way, every time; a thread that looks while another is half-way sees
    the module without `auth_config` and answers 500 (seen under 8 to 64 clients). Try it once
    here; if it cannot be imported, make every later import fail at once, as it would anyway."""
    import sys

    try:
        import mlflow.server.auth  # noqa: F401
    except ImportError:
        sys.modules["mlflow.server.auth"] = None


class StackApp:
    """ASGI app: MLflow's FastAPI app with a bounded thread pool per worker."""

    def __init__(self, threads, upload_chunk):
        self.threads = threads
        self.upload_chunk = upload_chunk
        self._app = None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            import anyio.to_thread
            from mlflow.server.fastapi_app import app

            if self.threads > 0:
                anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            _settle_auth_module()
            try:
                _add_streaming_routes(app)
            except Exception:  # noqa: BLE001 -- an MLflow without these internals serves as it is
                _logger.warning("streaming artifact transfers are off: MLflow's artifact routes changed", exc_info=True)
            self._app = app
        if (scope["type"] == "http" and scope.get("method") == "PUT" and self.upload_chunk > 0
                and scope.get("path", "").startswith(_ARTIFACT_PATHS)):
            receive = _coalesced(receive, self.upload_chunk)
        await self._app(scope, receive, send)


app = StackApp(THREADS, UPLOAD_CHUNK)
