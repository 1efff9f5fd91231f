"""A Python worker for the bridge's worker pool, in the fewest lines.

It keeps snakepit's worker contract, as snakepit's own grpc_server.py does:
the bridge starts it with `--port 0 --elixir-address <bridge> --snakepit-run-id
<id>`, it serves BridgeService.ExecuteTool on a loopback port, prints
`GRPC_READY:<port>` once it serves, registers its tool with the bridge
(RegisterTools, without a worker address: the bridge knows where its pool
workers run) the first time a session calls it, and stops on SIGTERM.
Results travel as snakepit's typed JSON (`type.googleapis.com/snakepit.map`).

Needs Debian's python3-grpcio, and the bridge's proto compiled by protoc into
PYTHONPATH (examples/python-worker/run.ts does both).
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.any_pb2 import Any

from snakepit.bridge import bridge_pb2 as pb
from snakepit.bridge import bridge_pb2_grpc as pb_grpc

TOOL = "word_count"


def count_words(text):
    words = text.split()
    return {"words": len(words), "longest": max(words, key=len) if words else None}


class Worker(pb_grpc.BridgeServiceServicer):
    def __init__(self, register):
        self.register = register

    def Ping(self, request, context):
        return pb.PingResponse(message=request.message)

    def ExecuteTool(self, request, context):
        self.register(request.session_id)
        if request.tool_name != TOOL:
            return pb.ExecuteToolResponse(success=False, error_message=f"unknown tool {request.tool_name}")
        # Parameters arrive as raw JSON in an Any, as snakepit sends them.
        text = json.loads(request.parameters["text"].value) if "text" in request.parameters else ""
        result = Any(type_url="type.googleapis.com/snakepit.map",
                     value=json.dumps(count_words(str(text))).encode())
        return pb.ExecuteToolResponse(success=True, result=result)


def main():
    parser = argparse.ArgumentParser(description="A word-count worker for the bridge's pool")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--elixir-address", required=True, help="the bridge's worker listener")
    parser.add_argument("--snakepit-run-id", default="")
    args = parser.parse_args()

    stub = pb_grpc.BridgeServiceStub(grpc.insecure_channel(args.elixir_address))
    registered, lock = set(), threading.Lock()

    def register(session_id):
        with lock:
            if session_id in registered:
                return
            registered.add(session_id)
        stub.RegisterTools(pb.RegisterToolsRequest(
            session_id=session_id,
            worker_id="word-worker",
            tools=[pb.ToolRegistration(
                name=TOOL,
                description="Counts the words of a text and names the longest.",
                parameters=[pb.ParameterSpec(name="text", type="string", required=True)],
            )],
        ), timeout=10)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BridgeServiceServicer_to_server(Worker(register), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"GRPC_READY:{port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(1).wait(2)


if __name__ == "__main__":
    sys.exit(main())
