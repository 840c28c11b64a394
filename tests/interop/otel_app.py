"""An application instrumented with the OpenTelemetry Python SDK and its default propagator
(W3C tracecontext + baggage), as the peer of tests/trace_interop.rs.

  otel_app.py server            serves GET on 127.0.0.1, prints "ready <port>", then one JSON
                                line per request: its SERVER span
  otel_app.py client URL [drop] one GET to URL inside a CLIENT span (never sampled with
                                "drop"); prints the span as one JSON line
"""

import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, ALWAYS_ON


def describe(role, span):
    ctx = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "role": role,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "sampled": ctx.trace_flags.sampled,
    }


def server():
    trace.set_tracer_provider(TracerProvider(sampler=ParentBased(ALWAYS_ON)))
    tracer = trace.get_tracer("interop-server")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            context = propagate.extract(self.headers)
            with tracer.start_as_current_span(
                "server", context=context, kind=trace.SpanKind.SERVER
            ) as span:
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
    sampler = ALWAYS_OFF if drop else ALWAYS_ON
    trace.set_tracer_provider(TracerProvider(sampler=sampler))
    tracer = trace.get_tracer("interop-client")
    with tracer.start_as_current_span("client", kind=trace.SpanKind.CLIENT) as span:
        headers = {"host": "backend.mesh"}
        propagate.inject(headers)
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            response.read()
        print(json.dumps(describe("client", span)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "drop")
