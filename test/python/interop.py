#!/usr/bin/python3
"""Python interop check of the unified-bridge server.

Drives a running bridge server over real gRPC (grpcio, insecure h2c) the way
an unmodified snakepit Python worker does, and hosts a tiny remote tool the
bridge forwards calls to. Fails loudly (non-zero exit, assertion message) on
anything wrong. (Over 400 lines: it is one script a worker would be,
checking every RPC in order against one session.)

Usage:
    PYTHONPATH=<dir with generated snakepit/bridge/bridge_pb2*.py> \
        /usr/bin/python3 test/python/interop.py --target 127.0.0.1:PORT

Generate the modules with Debian's protoc and grpc_python_plugin:
    protoc -I proto --python_out=OUT --grpc_python_out=OUT \
        --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
        proto/snakepit/bridge/bridge.proto

Prints "ok <check>" per check, then a JSON line {"checks": N}.
Only talks to 127.0.0.1.
"""

import argparse
import json
import sys
import threading
import time
import traceback
import uuid
from concurrent import futures

try:
    import grpc
    from google.protobuf.any_pb2 import Any
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"interop.py: cannot import grpc/protobuf ({e}); "
        "install the Debian packages python3-grpcio and python3-protobuf "
        "and run with /usr/bin/python3"
    )

try:
    from snakepit.bridge import bridge_pb2 as pb
    from snakepit.bridge import bridge_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"interop.py: cannot import the generated snakepit.bridge modules ({e}); "
        "generate them with protoc (Debian packages protobuf-compiler, "
        "protobuf-compiler-grpc) and put the output directory on PYTHONPATH"
    )

STRING_VALUE_URL = "type.googleapis.com/google.protobuf.StringValue"
RPC_TIMEOUT = 5.0
CHECKS = []


# --------------------------------------------------------------------------
# Encoding exactly as snakepit's Python client does.


def var_any(type_name, value):
    """A variable value: snakepit.<type> with the JSON text as bytes."""
    return Any(
        type_url=f"type.googleapis.com/snakepit.{type_name}",
        value=json.dumps(value).encode("utf-8"),
    )


def decode_var_any(any_msg):
    """(type, value) of a variable Any: type after the last '.'."""
    type_name = any_msg.type_url.rsplit(".", 1)[-1]
    return type_name, json.loads(any_msg.value.decode("utf-8"))


def tool_any(value):
    """A tool parameter: raw JSON bytes under the StringValue type url."""
    return Any(type_url=STRING_VALUE_URL, value=json.dumps(value).encode("utf-8"))


def decode_tool_any(any_msg):
    assert any_msg.type_url == STRING_VALUE_URL, (
        f"tool result type_url is {any_msg.type_url!r}, expected {STRING_VALUE_URL!r}"
    )
    return json.loads(any_msg.value.decode("utf-8"))


# --------------------------------------------------------------------------
# Helpers.


def ok(name):
    CHECKS.append(name)
    print(f"ok {name}", flush=True)


def expect_rpc_error(fn, code, contains, what):
    """Calls fn(); asserts it fails with the gRPC status code and detail text."""
    try:
        response = fn()
    except grpc.RpcError as e:
        assert e.code() == code, (
            f"{what}: expected status {code.name}, got {e.code().name} ({e.details()!r})"
        )
        details = e.details() or ""
        assert contains in details, (
            f"{what}: expected {contains!r} in the error details, got {details!r}"
        )
        return e
    raise AssertionError(f"{what}: expected a gRPC error {code.name}, got a response: {response!r}")


def get_var(stub, session_id, identifier):
    return stub.GetVariable(
        pb.GetVariableRequest(session_id=session_id, variable_identifier=identifier),
        timeout=RPC_TIMEOUT,
    ).variable


def register(stub, session_id, name, type_name, value, constraints=None):
    response = stub.RegisterVariable(
        pb.RegisterVariableRequest(
            session_id=session_id,
            name=name,
            type=type_name,
            initial_value=var_any(type_name, value),
            constraints_json=json.dumps(constraints) if constraints is not None else "",
        ),
        timeout=RPC_TIMEOUT,
    )
    assert response.success, f"RegisterVariable {name}: {response.error_message}"
    assert response.variable_id, f"RegisterVariable {name}: no variable_id"
    return response.variable_id


# --------------------------------------------------------------------------
# The remote worker: a grpc.server hosting py_word_count.


class WordCountWorker(pb_grpc.BridgeServiceServicer):
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def ExecuteTool(self, request, context):
        with self.lock:
            self.calls.append(request)
        if request.tool_name != "py_word_count":
            return pb.ExecuteToolResponse(
                success=False, error_message=f"unknown tool {request.tool_name}"
            )
        try:
            text = decode_tool_any(request.parameters["text"])
            count = len(str(text).split())
        except Exception as e:  # reported in-band, as snakepit workers do
            return pb.ExecuteToolResponse(success=False, error_message=f"bad parameters: {e}")
        return pb.ExecuteToolResponse(
            success=True,
            result=tool_any(count),
            metadata={"worker": "python"},
            execution_time_ms=1,
        )

    def ExecuteStreamingTool(self, request, context):
        text = decode_tool_any(request.parameters["text"])
        words = str(text).split()
        for i, word in enumerate(words):
            yield pb.ToolChunk(chunk_id=str(i + 1), data=json.dumps(word).encode())
        yield pb.ToolChunk(
            chunk_id=str(len(words) + 1), data=json.dumps(len(words)).encode(), is_final=True
        )


def start_worker():
    worker = WordCountWorker()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BridgeServiceServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0, "could not bind the Python worker to a free port"
    server.start()
    return server, worker, port


# --------------------------------------------------------------------------
# The checks.


def connect(target, what):
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        raise AssertionError(f"could not connect to the bridge's {what} at {target}")
    return channel


def run(target, worker_target):
    channel = connect(target, "public port")
    stub = pb_grpc.BridgeServiceStub(channel)
    # Workers register their tools on the worker listener.
    worker_channel = connect(worker_target, "worker listener")
    worker_stub = pb_grpc.BridgeServiceStub(worker_channel)

    pong = stub.Ping(pb.PingRequest(message="hello from python"), timeout=RPC_TIMEOUT)
    assert pong.message == "hello from python", f"Ping echoed {pong.message!r}"
    assert pong.server_time.seconds > 0, "Ping: no server_time"
    ok("ping")

    # 1. Sessions.
    init = stub.InitializeSession(pb.InitializeSessionRequest(), timeout=RPC_TIMEOUT)
    assert init.success, f"InitializeSession: {init.error_message}"
    sid = init.session_id
    assert len(sid) >= 16, f"minted session id too short: {sid!r}"
    assert init.created, "InitializeSession without id: created should be true"
    assert "conversation_append" in init.available_tools, (
        f"available_tools lacks conversation_append: {sorted(init.available_tools)}"
    )
    other = stub.InitializeSession(pb.InitializeSessionRequest(), timeout=RPC_TIMEOUT)
    assert other.session_id and other.session_id != sid, "two minted session ids are equal"
    ok("session_minted")

    explicit = f"py-interop-{uuid.uuid4().hex}"
    first = stub.InitializeSession(
        pb.InitializeSessionRequest(session_id=explicit, metadata={"client": "python"}),
        timeout=RPC_TIMEOUT,
    )
    assert first.success and first.session_id == explicit, f"explicit session: {first!r}"
    assert first.created, "explicit session: first call should create"
    register(stub, explicit, "marker", "integer", 1)
    again = stub.InitializeSession(
        pb.InitializeSessionRequest(session_id=explicit), timeout=RPC_TIMEOUT
    )
    assert again.success and again.session_id == explicit, f"second init: {again!r}"
    assert not again.created, "InitializeSession is not idempotent: created=true on second call"
    assert "marker" in again.initial_variables, (
        f"second init lost the session's variables: {sorted(again.initial_variables)}"
    )
    ok("session_idempotent")

    # 2. RegisterVariable, encoded as snakepit does.
    temp_id = register(stub, sid, "temperature", "float", 0.7, {"min": 0, "max": 2})
    ok("register_variable")

    # 3. GetVariable by name and by id.
    by_name = get_var(stub, sid, "temperature")
    assert by_name.id == temp_id, f"id mismatch: {by_name.id!r} vs {temp_id!r}"
    assert by_name.name == "temperature" and by_name.type == "float", f"{by_name!r}"
    assert decode_var_any(by_name.value) == ("float", 0.7), (
        f"value decoded as {decode_var_any(by_name.value)!r}, type_url {by_name.value.type_url!r}"
    )
    assert by_name.version == 0, f"fresh variable has version {by_name.version}"
    assert json.loads(by_name.constraints_json) == {"min": 0, "max": 2}, by_name.constraints_json
    by_id = get_var(stub, sid, temp_id)
    assert by_id.name == "temperature" and decode_var_any(by_id.value) == ("float", 0.7), (
        f"GetVariable by id: {by_id!r}"
    )
    ok("get_variable")

    # 4. SetVariable, then a constraint violation that changes nothing.
    set_ok = stub.SetVariable(
        pb.SetVariableRequest(
            session_id=sid, variable_identifier="temperature", value=var_any("float", 1.5)
        ),
        timeout=RPC_TIMEOUT,
    )
    assert set_ok.success and set_ok.new_version == 1, f"SetVariable 1.5: {set_ok!r}"
    ok("set_variable")

    expect_rpc_error(
        lambda: stub.SetVariable(
            pb.SetVariableRequest(
                session_id=sid, variable_identifier="temperature", value=var_any("float", 3.0)
            ),
            timeout=RPC_TIMEOUT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "above maximum",
        "SetVariable temperature=3.0",
    )
    after = get_var(stub, sid, "temperature")
    assert decode_var_any(after.value) == ("float", 1.5) and after.version == 1, (
        f"failed SetVariable changed the variable: {decode_var_any(after.value)} v{after.version}"
    )
    ok("set_variable_constraint")

    # 5. Batch get / set.
    register(stub, sid, "model.name", "string", "gpt")
    register(stub, sid, "model.layers", "integer", 12, {"min": 1, "max": 100})
    register(stub, sid, "modelxname", "string", "not a model.* match")

    batch = stub.GetVariables(
        pb.BatchGetVariablesRequest(
            session_id=sid, variable_identifiers=["temperature", "model.name", "no_such_var"]
        ),
        timeout=RPC_TIMEOUT,
    )
    assert set(batch.variables) == {"temperature", "model.name"}, f"{sorted(batch.variables)}"
    assert list(batch.missing_variables) == ["no_such_var"], f"{list(batch.missing_variables)}"
    assert decode_var_any(batch.variables["model.name"].value) == ("string", "gpt")
    ok("batch_get")

    partial = stub.SetVariables(
        pb.BatchSetVariablesRequest(
            session_id=sid,
            updates={
                "model.name": var_any("string", "llama"),
                "model.layers": var_any("integer", 500),  # above maximum 100
            },
            atomic=False,
        ),
        timeout=RPC_TIMEOUT,
    )
    assert partial.success, f"non-atomic batch: success false: {partial!r}"
    assert set(partial.errors) == {"model.layers"}, f"errors: {dict(partial.errors)}"
    assert "above maximum" in partial.errors["model.layers"], dict(partial.errors)
    assert dict(partial.new_versions) == {"model.name": 1}, dict(partial.new_versions)
    name_now = get_var(stub, sid, "model.name")
    layers_now = get_var(stub, sid, "model.layers")
    assert decode_var_any(name_now.value) == ("string", "llama") and name_now.version == 1
    assert decode_var_any(layers_now.value) == ("integer", 12) and layers_now.version == 0, (
        f"failed key changed: {decode_var_any(layers_now.value)} v{layers_now.version}"
    )
    ok("batch_set_non_atomic")

    atomic = stub.SetVariables(
        pb.BatchSetVariablesRequest(
            session_id=sid,
            updates={
                "model.name": var_any("string", "mistral"),
                "temperature": var_any("float", 0.1),
                "model.layers": var_any("integer", 0),  # below minimum 1
            },
            atomic=True,
        ),
        timeout=RPC_TIMEOUT,
    )
    assert not atomic.success, f"atomic batch with a bad key succeeded: {atomic!r}"
    assert "model.layers" in atomic.errors, f"errors: {dict(atomic.errors)}"
    assert "below minimum" in atomic.errors["model.layers"], dict(atomic.errors)
    for name, expected, version in [
        ("model.name", ("string", "llama"), 1),
        ("temperature", ("float", 1.5), 1),
        ("model.layers", ("integer", 12), 0),
    ]:
        v = get_var(stub, sid, name)
        assert decode_var_any(v.value) == expected and v.version == version, (
            f"atomic batch failed but {name} is {decode_var_any(v.value)} v{v.version}, "
            f"expected {expected} v{version}"
        )
    ok("batch_set_atomic")

    # 6. List with a glob; delete.
    listed = stub.ListVariables(
        pb.ListVariablesRequest(session_id=sid, pattern="model.*"), timeout=RPC_TIMEOUT
    )
    names = sorted(v.name for v in listed.variables)
    assert names == ["model.layers", "model.name"], f"ListVariables model.*: {names}"
    everything = stub.ListVariables(pb.ListVariablesRequest(session_id=sid), timeout=RPC_TIMEOUT)
    assert len(everything.variables) == 4, f"{[v.name for v in everything.variables]}"
    ok("list_variables")

    deleted = stub.DeleteVariable(
        pb.DeleteVariableRequest(session_id=sid, variable_identifier="modelxname"),
        timeout=RPC_TIMEOUT,
    )
    assert deleted.success, f"DeleteVariable: {deleted!r}"
    expect_rpc_error(
        lambda: get_var(stub, sid, "modelxname"),
        grpc.StatusCode.NOT_FOUND,
        "not found",
        "GetVariable after DeleteVariable",
    )
    ok("delete_variable")

    # 7. Server-side tools with JSON-in-Any parameters.
    appended = stub.ExecuteTool(
        pb.ExecuteToolRequest(
            session_id=sid,
            tool_name="conversation_append",
            parameters={"role": tool_any("user"), "content": tool_any("hello from python")},
        ),
        timeout=RPC_TIMEOUT,
    )
    assert appended.success, f"conversation_append: {appended.error_message}"
    result = decode_tool_any(appended.result)
    assert result["count"] == 1, f"conversation_append result: {result!r}"
    assert result["messages"][-1]["role"] == "user", result
    assert result["messages"][-1]["content"] == "hello from python", result
    ok("execute_tool")

    history = stub.ExecuteElixirTool(
        pb.ExecuteElixirToolRequest(
            session_id=sid, tool_name="conversation_history", parameters={"last": tool_any(5)}
        ),
        timeout=RPC_TIMEOUT,
    )
    assert history.success, f"conversation_history: {history.error_message}"
    hist = decode_tool_any(history.result)
    assert [m["content"] for m in hist["messages"]] == ["hello from python"], hist
    ok("execute_elixir_tool")

    exposed = stub.GetExposedElixirTools(
        pb.GetExposedElixirToolsRequest(session_id=sid), timeout=RPC_TIMEOUT
    )
    tool_names = {t.name for t in exposed.tools}
    assert {"conversation_append", "conversation_history"} <= tool_names, sorted(tool_names)
    append_spec = next(t for t in exposed.tools if t.name == "conversation_append")
    assert any(p.name == "role" and p.required for p in append_spec.parameters), append_spec
    ok("exposed_tools")

    missing_tool = stub.ExecuteTool(
        pb.ExecuteToolRequest(session_id=sid, tool_name="no_such_tool"), timeout=RPC_TIMEOUT
    )
    assert not missing_tool.success and "not found" in missing_tool.error_message.lower(), (
        f"unknown tool: {missing_tool!r}"
    )
    ok("unknown_tool_in_band")

    # 8. WatchVariables in a background thread.
    watch_temperature(stub, sid)

    # 9. A remote tool hosted by this Python process.
    remote_tool(stub, worker_stub, sid)

    # 10. Cleanup.
    cleaned = stub.CleanupSession(pb.CleanupSessionRequest(session_id=sid), timeout=RPC_TIMEOUT)
    assert cleaned.success, f"CleanupSession: {cleaned!r}"
    assert cleaned.resources_cleaned >= 3, f"resources_cleaned={cleaned.resources_cleaned}"
    beat = stub.Heartbeat(pb.HeartbeatRequest(session_id=sid), timeout=RPC_TIMEOUT)
    assert not beat.session_valid, "Heartbeat after CleanupSession: session_valid is true"
    expect_rpc_error(
        lambda: get_var(stub, sid, "temperature"),
        grpc.StatusCode.NOT_FOUND,
        "not found",
        "GetVariable after CleanupSession",
    )
    live = stub.Heartbeat(pb.HeartbeatRequest(session_id=explicit), timeout=RPC_TIMEOUT)
    assert live.session_valid, "Heartbeat on a live session: session_valid is false"
    stub.CleanupSession(pb.CleanupSessionRequest(session_id=explicit), timeout=RPC_TIMEOUT)
    stub.CleanupSession(pb.CleanupSessionRequest(session_id=other.session_id), timeout=RPC_TIMEOUT)
    ok("cleanup_session")

    channel.close()
    worker_channel.close()


def watch_temperature(stub, sid):
    call = stub.WatchVariables(
        pb.WatchVariablesRequest(
            session_id=sid, variable_identifiers=["temperature"], include_initial_values=True
        ),
        timeout=15,
    )
    updates = []
    errors = []
    got_initial = threading.Event()
    got_change = threading.Event()

    def consume():
        try:
            for update in call:
                updates.append(update)
                if update.update_type == "initial_value":
                    got_initial.set()
                elif update.update_type == "value_changed":
                    got_change.set()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(f"{e.code().name}: {e.details()}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            got_initial.set()
            got_change.set()

    thread = threading.Thread(target=consume, name="watcher", daemon=True)
    thread.start()
    assert got_initial.wait(5), "WatchVariables: no initial_value update within 5 s"
    assert not errors, f"WatchVariables failed: {errors}"
    initial = updates[0]
    assert initial.update_type == "initial_value", f"first update: {initial.update_type!r}"
    assert initial.variable.name == "temperature" and initial.variable.version == 1, initial
    assert decode_var_any(initial.variable.value) == ("float", 1.5), initial
    ok("watch_initial_value")

    response = stub.SetVariable(
        pb.SetVariableRequest(
            session_id=sid, variable_identifier="temperature", value=var_any("float", 0.9)
        ),
        timeout=RPC_TIMEOUT,
    )
    assert response.success and response.new_version == 2, f"SetVariable 0.9: {response!r}"
    assert got_change.wait(5), "WatchVariables: no value_changed update within 5 s"
    assert not errors, f"WatchVariables failed: {errors}"
    changed = [u for u in updates if u.update_type == "value_changed"]
    assert len(changed) == 1, f"value_changed updates: {changed}"
    change = changed[0]
    assert change.variable.version == 2, f"value_changed version {change.variable.version}"
    assert decode_var_any(change.variable.value) == ("float", 0.9), change
    assert change.variable_id == initial.variable.id, (change.variable_id, initial.variable.id)
    ok("watch_value_changed")

    call.cancel()
    thread.join(5)
    assert not thread.is_alive(), "watcher thread did not end after cancel()"
    assert not errors, f"WatchVariables ended with an error instead of CANCELLED: {errors}"
    assert call.code() == grpc.StatusCode.CANCELLED, f"watch ended with {call.code()}"
    # The bridge keeps serving after the cancelled stream.
    assert get_var(stub, sid, "temperature").version == 2
    ok("watch_cancel")


def remote_tool(stub, worker_stub, sid):
    server, worker, port = start_worker()
    worker_id = f"py-worker-{uuid.uuid4().hex[:8]}"
    address = f"127.0.0.1:{port}"
    try:
        request = pb.RegisterToolsRequest(
            session_id=sid,
            worker_id=worker_id,
            tools=[
                pb.ToolRegistration(
                    name="py_word_count",
                    description="Counts the words of a text.",
                    metadata={"worker_address": address},
                    parameters=[pb.ParameterSpec(name="text", type="string", required=True)],
                    supports_streaming=True,
                )
            ],
        )
        try:
            stub.RegisterTools(request, timeout=RPC_TIMEOUT)
            raise AssertionError("RegisterTools on the public port succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED, (
                f"RegisterTools on the public port: {e.code().name}: {e.details()}"
            )
        ok("register_tools_public_refused")
        registered = worker_stub.RegisterTools(request, timeout=RPC_TIMEOUT)
        assert registered.success, f"RegisterTools: {registered.error_message}"
        assert registered.tool_ids.get("py_word_count"), dict(registered.tool_ids)
        ok("register_tools")

        result = stub.ExecuteTool(
            pb.ExecuteToolRequest(
                session_id=sid,
                tool_name="py_word_count",
                parameters={"text": tool_any("the quick fox")},
            ),
            timeout=RPC_TIMEOUT,
        )
        assert result.success, f"forwarded ExecuteTool: {result.error_message}"
        assert decode_tool_any(result.result) == 3, f"py_word_count result {result.result!r}"
        assert len(worker.calls) == 1, f"the worker received {len(worker.calls)} calls, expected 1"
        forwarded = worker.calls[0]
        assert forwarded.tool_name == "py_word_count" and forwarded.session_id == sid, forwarded
        assert decode_tool_any(forwarded.parameters["text"]) == "the quick fox", forwarded
        ok("remote_tool_forwarded")

        chunks = list(
            stub.ExecuteStreamingTool(
                pb.ExecuteToolRequest(
                    session_id=sid,
                    tool_name="py_word_count",
                    parameters={"text": tool_any("a b")},
                    stream=True,
                ),
                timeout=RPC_TIMEOUT,
            )
        )
        data = [json.loads(c.data) for c in chunks]
        assert data == ["a", "b", 2], f"forwarded stream chunks: {data}"
        assert [c.is_final for c in chunks] == [False, False, True], chunks
        ok("remote_streaming_tool_forwarded")
    finally:
        server.stop(0).wait(5)

    calls_before = len(worker.calls)
    started = time.monotonic()
    gone = stub.ExecuteTool(
        pb.ExecuteToolRequest(
            session_id=sid, tool_name="py_word_count", parameters={"text": tool_any("x y")}
        ),
        timeout=10,
    )
    elapsed = time.monotonic() - started
    assert not gone.success, f"call to a stopped worker succeeded: {gone!r}"
    assert "py_word_count" in gone.error_message and "unreachable" in gone.error_message, (
        f"error_message does not say the tool's worker is unreachable: {gone.error_message!r}"
    )
    assert address not in gone.error_message and worker_id not in gone.error_message, (
        f"error_message reveals the worker: {gone.error_message!r}"
    )
    assert len(worker.calls) == calls_before, "the stopped worker still received a call"
    assert elapsed < 8, f"call to a stopped worker took {elapsed:.1f} s"
    ok("remote_worker_down")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="the bridge's host:port (127.0.0.1:PORT)")
    parser.add_argument(
        "--worker-target", required=True, help="the bridge's worker listener host:port"
    )
    args = parser.parse_args()
    for target in (args.target, args.worker_target):
        host = target.rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            sys.exit(f"interop.py: refusing non-loopback target {target!r}")
    started = time.monotonic()
    try:
        run(args.target, args.worker_target)
    except AssertionError as e:
        traceback.print_exc()
        print(f"FAILED after {len(CHECKS)} checks: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except grpc.RpcError as e:
        traceback.print_exc()
        print(
            f"FAILED after {len(CHECKS)} checks: unexpected gRPC error "
            f"{e.code().name}: {e.details()}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    print(f"# {time.monotonic() - started:.2f} s", file=sys.stderr)
    print(json.dumps({"checks": len(CHECKS)}))


if __name__ == "__main__":
    main()
