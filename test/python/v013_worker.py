"""A stock snakepit v0.13.0 worker (its grpc_server.py serving the showcase
adapter) with two tools added for the bridge's tests.

The stock server never sets ExecuteToolResponse.binary_result from a tool
(it infers the result's type, and only embeddings and tensors have a binary
form), so `make_blob` answers the way v0.13 answers a binary result: its
JSON result plus the bytes in binary_result. `request_context` returns what
the call brought: the x-snakepit-correlation-id header and the request
metadata. `call_bridge_tool` calls a bridge tool with v0.13's own
SessionContext.call_elixir_tool. Every other tool runs the stock ExecuteTool.

Run from a directory holding v0.13's priv/python with regenerated stubs
(PYTHONPATH=that directory), with grpc_server.py's own arguments.
"""

import asyncio

import grpc_server
import snakepit_bridge_pb2 as pb2
from snakepit_bridge.serialization import TypeSerializer
from snakepit_bridge.session_context import SessionContext

Stock = grpc_server.BridgeServiceServicer


def _map_result(value):
    response = pb2.ExecuteToolResponse(success=True)
    any_msg, _ = TypeSerializer.encode_any(value, "map")
    response.result.CopyFrom(any_msg)
    return response


class TestServicer(Stock):
    async def ExecuteTool(self, request, context):
        if request.tool_name == "make_blob":
            size = 16
            if "size" in request.parameters:
                size = int(TypeSerializer.decode_any(request.parameters["size"]))
            data = bytes(i % 256 for i in range(size))
            response = _map_result({"size": size, "format": "raw"})
            response.binary_result = data
            return response
        if request.tool_name == "request_context":
            headers = {key: value for key, value in context.invocation_metadata()}
            return _map_result(
                {
                    "header": headers.get("x-snakepit-correlation-id"),
                    "metadata": dict(request.metadata),
                }
            )
        if request.tool_name == "call_bridge_tool":
            # The showcase's call_elixir_demo cannot be called (its
            # tool_name argument collides with call_tool's): the same v0.13
            # SessionContext.call_elixir_tool, called directly.
            arguments = {
                key: TypeSerializer.decode_any(value) for key, value in request.parameters.items()
            }
            target = arguments.pop("elixir_tool")
            session = SessionContext(self.sync_elixir_stub, request.session_id)
            result = await asyncio.to_thread(session.call_elixir_tool, target, **arguments)
            return _map_result({"tool": target, "result": result})
        return await Stock.ExecuteTool(self, request, context)


# serve_with_shutdown builds the servicer from this module-level name.
grpc_server.BridgeServiceServicer = TestServicer

if __name__ == "__main__":
    grpc_server.main()
