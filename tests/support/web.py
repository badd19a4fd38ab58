"""A folder served over http on the frontend's loopback, as an ``http`` marketplace's web server serves its
PUBLIC_DIR."""

from __future__ import annotations

import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.system import ensure_oneadmin


@contextmanager
def served_folder() -> Iterator[tuple[str, Path]]:
    """A new folder of /var/tmp that oneadmin owns, and the URL it is served at; both gone afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="one-ipfs-web-", dir="/var/tmp"))
    user = ensure_oneadmin()
    os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o755)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        shutil.rmtree(folder)
