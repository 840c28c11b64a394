"""An application instrumented with ddtrace and its default propagation style (Datadog and
W3C tracecontext headers), as the peer of tests/trace_interop.rs.

  dd_app.py server            serves GET on 127.0.0.1, prints "ready <port>", then one JSON
                              line per request: its server span
  dd_app.py client URL [drop] one GET to URL inside a client span (dropped with "drop");
                              prints the span as one JSON line
"""

import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from ddtrace.trace import tracer
except ImportError:  # ddtrace < 3
    from ddtrace import tracer
from ddtrace.constants import MANUAL_DROP_KEY
from ddtrace.propagation.http import HTTPPropagator


def describe(role, span):
    priority = span.context.sampling_priority
    return {
        "role": role,
        "trace_id": format(span.trace_id, "032x"),
        "span_id": format(span.span_id, "016x"),
        "parent_id": format(span.parent_id, "016x") if span.parent_id else None,
        "sampled": priority is not None and priority > 0,
    }


def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            headers = {name.lower(): value for name, value in self.headers.items()}
            context = HTTPPropagator.extract(headers)
            tracer.context_provider.activate(context)
            with tracer.trace("server", span_type="web") as span:
                body = b"ok"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                print(json.dumps(describe("server", span)), flush=True)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"ready {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


def client(url, drop):
    with tracer.trace("client", span_type="http") as span:
        if drop:
            span.set_tag(MANUAL_DROP_KEY)
        headers = {"host": "backend.mesh"}
        HTTPPropagator.inject(span.context, headers)
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            response.read()
        print(json.dumps(describe("client", span)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "drop")
