"""A fake Cloud Storage for tests: ``gs://BUCKET/PATH`` is the local file ``ROOT/BUCKET/PATH``, reached through the
clients bobjax's libraries use for ``gs://``, none of which can reach a cloud here.

- epath (bobjax, TFDS, orbax's paths): its fsspec backend, with :class:`FakeGcsFileSystem` registered for ``gs``.
  Like an object store it writes a file without its folders existing, and it refuses renames (bobjax's rule:
  nothing is renamed on an object store; see ``bobjax/artifacts.py``).
- ArrayRecord's reader (``read_dataset``, TFDS data sources): its own Google Cloud C++ client, pointed by
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` at :class:`MediaServer`, a loopback HTTP server of the JSON API's object
  downloads; orbax's check of the bucket's layout (google-cloud-storage) reaches it through
  ``STORAGE_EMULATOR_HOST``.
- orbax's arrays (tensorstore's ``gcs`` driver) and TensorBoard's event files (TensorFlow's own GCS file system):
  redirected to ``ROOT`` by patching the functions that name the path for them, as neither can be pointed at
  a fake served here.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import urllib.parse

from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


def local(root: str, path) -> str:
    """The file behind ``gs://BUCKET/PATH`` (``ROOT/BUCKET/PATH``)."""
    return os.path.join(root, os.fspath(path).removeprefix("gs://"))


class FakeGcsFileSystem(DirFileSystem):
    """``gs://`` for fsspec (so for epath) over the local folder :attr:`root`."""

    protocol = ("gs", "gcs")
    root = ""  # Set by the test before the first use.

    def __init__(self, *args, finalize_on_close=True, **kwargs):  # epath passes gcsfs's finalize_on_close.
        super().__init__(path=self.root, fs=LocalFileSystem(auto_mkdir=True), **kwargs)

    def mv(self, path1, path2, **kwargs):
        raise AssertionError(f"renamed {path1} to {path2} on an object store")


class MediaServer(http.server.ThreadingHTTPServer):
    """Serves the JSON API's object downloads, ``GET /storage/v1/b/BUCKET/o/OBJECT?alt=media`` (with ``Range``),
    from ``ROOT/BUCKET/OBJECT``, and a bucket's metadata, ``GET /storage/v1/b/BUCKET`` (a flat bucket: no
    hierarchical namespace), on 127.0.0.1, in a daemon thread; every other request is a 404."""

    def __init__(self, root: str):
        super().__init__(("127.0.0.1", 0), _MediaHandler)
        self.root = root
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _MediaHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        bucket = re.fullmatch(r"/storage/v1/b/([^/]+)", url.path)
        if bucket and os.path.isdir(os.path.join(self.server.root, bucket[1])):
            return self._reply(200, json.dumps({"kind": "storage#bucket", "name": bucket[1]}).encode())
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/([^/]+)", url.path)
        path = match and os.path.join(self.server.root, match[1], urllib.parse.unquote(match[2]))
        if not path or "alt=media" not in url.query or not os.path.isfile(path):
            return self._reply(404, b'{"error": {"code": 404, "message": "No such object"}}')
        with open(path, "rb") as f:
            data = f.read()
        start, end = 0, len(data) - 1
        if ranged := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
            start, end = int(ranged[1]), min(int(ranged[2] or end), end)
        return self._reply(206 if ranged else 200, data[start:end + 1],
                           {"Content-Range": f"bytes {start}-{end}/{len(data)}"} if ranged else {})

    def _reply(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for key, value in {"Content-Type": "application/octet-stream", "Content-Length": str(len(body)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
