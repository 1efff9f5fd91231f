#!/usr/bin/python3
"""A self-registering worker for the bridge's worker liveness tests.

Serves BridgeService on 127.0.0.1 the way snakepit's workers do (Ping
answered, no grpc.health service) with one tool, py_echo, which returns its
"text" parameter; unless --no-register, registers py_echo on the bridge's
worker listener with metadata.worker_address naming its own port.

Usage:
    PYTHONPATH=<generated snakepit/bridge modules> \\
        /usr/bin/python3 test/python/liveness_worker.py --bridge HOST:PORT \\
        [--port N] [--worker-id ID] [--no-register]

Prints one JSON line {"ready": true, "port": N} once serving (and
registered), then serves until killed or stdin closes.
"""

import argparse
import json
import sys
from concurrent import futures

try:
    import grpc
    from google.protobuf.any_pb2 import Any
except ImportError as e:  # environment problem: the test reports it
    sys.exit(f"liveness_worker.py: cannot import grpc/protobuf ({e}); install python3-grpcio")

from snakepit.bridge import bridge_pb2 as pb
from snakepit.bridge import bridge_pb2_grpc as pb_grpc

TOOL = "py_echo"
STRING_VALUE_URL = "type.googleapis.com/google.protobuf.StringValue"


class Worker(pb_grpc.BridgeServiceServicer):
    def Ping(self, request, context):
        return pb.PingResponse(message=f"pong: {request.message}")

    def ExecuteTool(self, request, context):
        if request.tool_name != TOOL:
            return pb.ExecuteToolResponse(success=False, error_message="unknown tool")
        text = json.loads(request.parameters["text"].value.decode("utf-8"))
        return pb.ExecuteToolResponse(
            success=True,
            result=Any(type_url=STRING_VALUE_URL, value=json.dumps(text).encode("utf-8")),
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--worker-id", default="py-liveness")
    parser.add_argument("--no-register", action="store_true")
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BridgeServiceServicer_to_server(Worker(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        sys.exit(f"liveness_worker.py: cannot listen on 127.0.0.1:{args.port}")
    server.start()

    if not args.no_register:
        with grpc.insecure_channel(args.bridge) as channel:
            reply = pb_grpc.BridgeServiceStub(channel).RegisterTools(
                pb.RegisterToolsRequest(
                    worker_id=args.worker_id,
                    tools=[
                        pb.ToolRegistration(
                            name=TOOL,
                            description="Returns its text.",
                            parameters=[pb.ParameterSpec(name="text", type="string", required=True)],
                            metadata={"worker_address": f"127.0.0.1:{port}"},
                        )
                    ],
                ),
                timeout=10,
            )
            if not reply.success:
                sys.exit(f"liveness_worker.py: registration refused: {reply.error_message}")

    print(json.dumps({"ready": True, "port": port}), flush=True)
    # Serves until the test kills it, or closes stdin.
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
