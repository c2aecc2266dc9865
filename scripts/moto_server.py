"""moto's S3 server for the tests, with conditional writes made atomic.

moto checks If-Match / If-None-Match and then writes, without a lock between the
two, and serves requests on many threads: two compare-and-swap writes racing on one
key can both succeed, which real S3 never allows. The engine's tag updates rely on
that guarantee (and a test checks it), so this wrapper serializes the requests that
carry a precondition. Everything else runs concurrently, as with `moto_server`.

Usage: python moto_server.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        if "HTTP_IF_MATCH" not in environ and "HTTP_IF_NONE_MATCH" not in environ:
            return app(environ, start_response)
        with lock:
            # Produce the whole response under the lock: the write happens inside.
            return list(app(environ, start_response))

    run_simple(
        host,
        port,
        serialized,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
