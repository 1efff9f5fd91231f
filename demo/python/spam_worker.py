#!/usr/bin/python3
"""The demo's Python worker: a scikit-learn classifier module for the spam program.

An unmodified-protocol snakepit worker (grpcio, the bridge's own proto
compiled by protoc): it serves BridgeService.ExecuteTool on a loopback port
and registers the remote tool py_sklearn_train on the bridge's worker
listener. The bridge's spam_evaluate tool calls it through the bridge with
the training rows of a featurization (CSR in binary parameters: indptr
uint32, indices uint16, counts uint8, labels uint8, all little-endian); it
fits sklearn's LogisticRegression on log(1 + count) features scaled to unit
length and answers with the weights and the bias.

Two ways to run it:

- Under the bridge's worker pool (what `npm start` and the tests do), with
  the contract of snakepit's stock grpc_server.py: the bridge runs it with
  --port, --elixir-address (its worker listener) and --snakepit-run-id. It
  serves on 127.0.0.1:<port>, prints `GRPC_READY:<port>` once it serves
  (snakepit v0.4.3's ready signal; v0.13's ready file too, when
  SNAKEPIT_READY_FILE is set), and, like snakepit's BaseAdapter, registers
  its tool (without an address: the bridge knows where its workers are) on
  the first call of each session. It serves until SIGTERM.

      PYTHONPATH=<generated snakepit/bridge modules> /usr/bin/python3 \\
          demo/python/spam_worker.py --port 0 --elixir-address 127.0.0.1:50052

- On its own (docker-compose's worker), registering the remote tool with its
  address on the bridge's worker listener:

      PYTHONPATH=... /usr/bin/python3 demo/python/spam_worker.py --bridge 127.0.0.1:50052

  It prints one JSON line {"ready": true, "port": N, "sklearn": "x.y"} once
  the tool is registered, then serves until stdin closes or SIGTERM. A line
  "register" on stdin registers the tool again (answered by one JSON line),
  for a bridge that restarted with an empty tool registry.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

try:
    import grpc
    import numpy as np
    import sklearn
    from google.protobuf.any_pb2 import Any
    from google.protobuf.wrappers_pb2 import StringValue
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize
except ImportError as e:  # environment problem: the launcher reports it
    sys.exit(
        f"spam_worker.py: cannot import {e.name} ({e}); install the Debian packages "
        "python3-grpcio and python3-sklearn"
    )

from snakepit.bridge import bridge_pb2 as pb
from snakepit.bridge import bridge_pb2_grpc as pb_grpc

TOOL = "py_sklearn_train"
STRING_VALUE_URL = "type.googleapis.com/google.protobuf.StringValue"
MAX_MESSAGE = 32 * 1024 * 1024


def decode_param(any_msg):
    """A tool parameter: raw JSON bytes (snakepit's habit) or a packed StringValue."""
    try:
        return json.loads(any_msg.value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        wrapped = StringValue()
        wrapped.ParseFromString(any_msg.value)
        return json.loads(wrapped.value)


def encode_result(value):
    return Any(type_url=STRING_VALUE_URL, value=json.dumps(value).encode("utf-8"))


def train(request):
    params = {k: decode_param(v) for k, v in request.parameters.items()}
    rows, columns = int(params["rows"]), int(params["columns"])
    smoothing = float(params["smoothing"])
    if rows < 1 or columns < 1 or not (0 < smoothing <= 100):
        raise ValueError("rows and columns must be positive, smoothing in (0, 100]")
    blob = request.binary_parameters
    indptr = np.frombuffer(blob["indptr"], dtype="<u4").astype(np.int64)
    indices = np.frombuffer(blob["indices"], dtype="<u2").astype(np.int32)
    counts = np.frombuffer(blob["counts"], dtype=np.uint8).astype(np.float64)
    labels = np.frombuffer(blob["labels"], dtype=np.uint8)
    if len(indptr) != rows + 1 or len(labels) != rows or indptr[-1] != len(indices):
        raise ValueError("the CSR arrays do not match rows")
    if len(counts) != len(indices) or (len(indices) and indices.max() >= columns):
        raise ValueError("indices and counts do not match columns")
    x = normalize(csr_matrix((np.log1p(counts), indices, indptr), shape=(rows, columns)))
    # The smoothing knob is the prior strength: a larger one regularizes more.
    model = LogisticRegression(C=1.0 / smoothing, solver="liblinear", max_iter=200)
    model.fit(x, labels)
    return {
        "weights": [float(w) for w in model.coef_[0]],
        "bias": float(model.intercept_[0]),
        "sklearn": sklearn.__version__,
    }


class SpamWorker(pb_grpc.BridgeServiceServicer):
    def __init__(self, on_call=None):
        # Pool mode: called with each request first (registers the tool per session).
        self.on_call = on_call

    def Ping(self, request, context):
        return pb.PingResponse(message=f"Pong from Python: {request.message}")

    def ExecuteTool(self, request, context):
        if self.on_call is not None:
            self.on_call(request)
        if request.tool_name != TOOL:
            return pb.ExecuteToolResponse(
                success=False, error_message=f"unknown tool {request.tool_name}"
            )
        started = time.monotonic()
        try:
            result = train(request)
        except (KeyError, ValueError, TypeError) as e:  # reported in-band, as snakepit workers do
            return pb.ExecuteToolResponse(success=False, error_message=f"bad parameters: {e}")
        return pb.ExecuteToolResponse(
            success=True,
            result=encode_result(result),
            metadata={"worker": "python", "sklearn": sklearn.__version__},
            execution_time_ms=int((time.monotonic() - started) * 1000),
        )


def commands(stub, registration, done):
    """Reads the launcher's commands on stdin until it closes, then sets `done`.

    "register" registers the tool again and answers one JSON line,
    {"registered": true} or {"registered": false, "error": ...}: a bridge
    with an in-memory store that was stopped and started again
    (demo/stack.ts) has an empty tool registry, and the launcher asks the
    worker to register once the new bridge listens.
    """
    for line in sys.stdin:
        if line.strip() != "register":
            continue
        try:
            # wait_for_ready: the channel may still be backing off from the outage.
            reply = stub.RegisterTools(registration, timeout=10, wait_for_ready=True)
            answer = {"registered": reply.success}
            if not reply.success:
                answer["error"] = reply.error_message
        except grpc.RpcError as e:
            answer = {"registered": False, "error": f"{e.code().name}: {e.details()}"}
        print(json.dumps(answer), flush=True)
    done.set()


def registration_request(session_id, worker_id, metadata):
    return pb.RegisterToolsRequest(
        session_id=session_id,
        worker_id=worker_id,
        tools=[
            pb.ToolRegistration(
                name=TOOL,
                description=(
                    "Fits scikit-learn's LogisticRegression on the spam program's "
                    "training rows (binary CSR) and returns its weights and bias."
                ),
                parameters=[
                    pb.ParameterSpec(name="rows", type="integer", required=True),
                    pb.ParameterSpec(name="columns", type="integer", required=True),
                    pb.ParameterSpec(name="smoothing", type="float", required=True),
                ],
                metadata={
                    **metadata,
                    "runtime": f"Python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}",
                },
            )
        ],
    )


def serve_in_pool(args):
    """The stock snakepit worker contract, for the bridge's worker pool."""
    channel = grpc.insecure_channel(args.elixir_address)
    stub = pb_grpc.BridgeServiceStub(channel)
    worker_id = f"spam-worker-{uuid.uuid4().hex[:8]}"
    registered = set()
    lock = threading.Lock()

    def on_call(request):
        # As snakepit's BaseAdapter does: the tool is registered for each
        # session the first time it calls; a failure is logged, not fatal.
        with lock:
            if request.session_id in registered:
                return
            registered.add(request.session_id)
        try:
            stub.RegisterTools(registration_request(request.session_id, worker_id, {}), timeout=10)
        except grpc.RpcError as e:
            print(f"RegisterTools failed: {e.code().name}: {e.details()}", file=sys.stderr, flush=True)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
    )
    pb_grpc.add_BridgeServiceServicer_to_server(SpamWorker(on_call), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        sys.exit(f"spam_worker.py: cannot listen on port {args.port}")
    server.start()
    ready_file = os.environ.get("SNAKEPIT_READY_FILE")
    if ready_file:
        with open(f"{ready_file}.tmp", "w", encoding="utf-8") as f:
            f.write(str(port))
        os.replace(f"{ready_file}.tmp", ready_file)
    print(f"GRPC_READY:{port}", flush=True)
    print(f"spam_worker.py: serving {TOOL} on 127.0.0.1:{port} (scikit-learn {sklearn.__version__})", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1).wait(2)
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridge", help="on its own: the bridge's worker listener host:port")
    parser.add_argument("--port", type=int, help="in the pool: the port to serve on (0 picks one)")
    parser.add_argument(
        "--elixir-address", help="in the pool: the bridge's worker listener host:port"
    )
    parser.add_argument("--snakepit-run-id", default="", help="in the pool: the bridge's run id (unused)")
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="where this worker serves its tool (host:port; port 0 picks one; default 127.0.0.1:0)",
    )
    parser.add_argument(
        "--advertise",
        help="the host:port the bridge calls this worker at (default: the --listen host and the port bound)",
    )
    parser.add_argument(
        "--private-network",
        action="store_true",
        help="allow a bridge and a listen address off loopback (plaintext gRPC: only on a private network)",
    )
    args = parser.parse_args()
    if args.elixir_address is not None:
        serve_in_pool(args)
        return
    if args.bridge is None:
        parser.error("give --bridge (on its own) or --elixir-address (in the bridge's worker pool)")
    loopback = ("127.0.0.1", "localhost", "[::1]")
    listen_host = args.listen.rsplit(":", 1)[0]
    if not args.private_network:
        for what, address in (("bridge", args.bridge), ("listen address", args.listen)):
            if address.rsplit(":", 1)[0] not in loopback:
                sys.exit(
                    f"spam_worker.py: refusing non-loopback {what} {address!r} "
                    "(plaintext gRPC; pass --private-network on a private network)"
                )

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
    )
    pb_grpc.add_BridgeServiceServicer_to_server(SpamWorker(), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"spam_worker.py: cannot listen on {args.listen!r}")
    advertise = args.advertise or f"{listen_host}:{port}"
    server.start()

    channel = grpc.insecure_channel(args.bridge)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = pb_grpc.BridgeServiceStub(channel)
    registration = registration_request(
        "", f"spam-worker-{uuid.uuid4().hex[:8]}", {"worker_address": advertise}
    )
    registered = stub.RegisterTools(registration, timeout=10)
    if not registered.success:
        sys.exit(f"spam_worker.py: RegisterTools failed: {registered.error_message}")
    print(json.dumps({"ready": True, "port": port, "sklearn": sklearn.__version__}), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    # The launcher holds stdin open; when it goes away, so does the worker.
    threading.Thread(target=commands, args=(stub, registration, done), daemon=True).start()
    done.wait()
    server.stop(1).wait(2)
    channel.close()


if __name__ == "__main__":
    main()
