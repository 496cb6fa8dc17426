"""The logic of the app the mlflow_server role installs (roles/mlflow_server/files/mlflow_stack_server.py)
that can be checked without a server: request bodies handed on in large pieces and nothing lost,
the upload reader boto3 reads from, and a module that stays light until a worker serves."""

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[3] / "roles" / "mlflow_server" / "files"
sys.path.insert(0, str(FILES))
import mlflow_stack_server as app_module  # noqa: E402


def _receive_from(messages):
    queue = list(messages)

    async def receive():
        return queue.pop(0)

    return receive


@pytest.mark.parametrize("pieces", [[b""], [b"a" * 10], [b"a" * 3] * 7, [b"x" * 5, b"", b"y" * 9, b"z"]])
def test_body_is_handed_on_in_large_pieces_and_complete(pieces):
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    messages.append({"type": "http.disconnect"})
    receive = app_module._coalesced(_receive_from(messages), size=8)

    async def drain():
        out = []
        while True:
            message = await receive()
            out.append(message)
            if not message.get("more_body"):
                break
        # After the body, receive() is the plain one again: it waits for the disconnect.
        out.append(await receive())
        return out

    out = asyncio.run(drain())
    assert b"".join(m["body"] for m in out[:-1]) == b"".join(pieces)
    assert all(len(m["body"]) >= 8 for m in out[:-2])
    assert out[-1] == {"type": "http.disconnect"}


def test_upload_reader_gives_boto3_exact_sizes_and_ends():
    reader = app_module._BodyReader(depth=2)

    def feed():
        for chunk in (b"abc", b"defgh", b"", b"ij"):
            if chunk:
                reader.chunks.put(chunk)
        reader.chunks.put(None)

    threading.Thread(target=feed).start()
    assert reader.read(4) == b"abcd"
    assert reader.read(4) == b"efgh"
    assert reader.read(4) == b"ij"
    assert reader.read(4) == b""
    assert not reader.seekable()


def test_upload_reader_raises_when_the_client_went_away():
    reader = app_module._BodyReader()
    reader.chunks.put(b"partial")
    reader.chunks.put(ConnectionAbortedError("request body incomplete"))
    with pytest.raises(ConnectionAbortedError):
        reader.read(100)


def test_importing_the_app_does_not_import_mlflow():
    # `mlflow server` imports the module to inspect it in its supervisor process, which stays
    # alive next to the workers: it must not pull MLflow's server in.
    code = (f"import sys; sys.path.insert(0, {str(FILES)!r}); import mlflow_stack_server; "
            "print(any(m.startswith('mlflow') and m != 'mlflow_stack_server' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_threads_and_upload_chunk_come_from_the_environment():
    code = (f"import sys; sys.path.insert(0, {str(FILES)!r}); import mlflow_stack_server as m; "
            "print(m.app.threads, m.app.upload_chunk)")
    env = {"MLFLOW_STACK_SERVER_THREADS": "6", "MLFLOW_STACK_SERVER_UPLOAD_CHUNK": "1048576", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["6", "1048576"]
