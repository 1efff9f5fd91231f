#!/usr/bin/python3
"""gRPC health checks of a running bridge with Python grpcio, as a prober would.

Usage:
    PYTHONPATH=<dir with generated grpc_health/v1/health_pb2*.py> \
        /usr/bin/python3 test/python/health_check.py --target 127.0.0.1:PORT [--target ...]

Generate the modules with Debian's protoc and grpc_python_plugin from
proto/grpc/health/v1/health.proto copied to grpc_health/v1/health.proto, as
grpcio-health-checking names it (a top-level "grpc" directory would be shadowed
by grpcio's own package). Prints one JSON line with what each target answered.
Only talks to 127.0.0.1.
"""

import argparse
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 5.0


def status_name(response):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def probe(target):
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        result = {
            "server": status_name(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)),
            "bridge": status_name(
                stub.Check(
                    health_pb2.HealthCheckRequest(service="snakepit.bridge.BridgeService"),
                    timeout=TIMEOUT,
                )
            ),
        }
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
            result["unknown"] = "answered"
        except grpc.RpcError as e:
            result["unknown"] = e.code().name
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        result["watch_first"] = status_name(next(watch))
        watch.cancel()
        return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", action="append", required=True)
    args = parser.parse_args()
    for target in args.target:
        if target.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
            sys.exit(f"health_check.py: refusing non-loopback target {target!r}")
    print(json.dumps({t: probe(t) for t in args.target}))


if __name__ == "__main__":
    main()
