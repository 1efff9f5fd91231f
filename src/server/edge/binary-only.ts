import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/**
 * Refuses Connect's JSON format with a clear message, except for Ping (so
 * `curl` health probes work). Variable values and tool arguments travel in
 * google.protobuf.Any under snakepit type URLs that carry raw JSON bytes,
 * which the protobuf JSON mapping cannot express: without this check a
 * JSON client would get an INTERNAL "not in the type registry" error deep
 * in serialization instead of being told what to change.
 */
export const binaryOnlyInterceptor: Interceptor = (next) => async (req) => {
  const contentType = req.header.get("content-type") ?? "";
  if (contentType.includes("json") && req.method.name !== "Ping") {
    throw new ConnectError(
      "this server speaks the binary protobuf format: values travel in google.protobuf.Any, which the JSON format cannot carry; use useBinaryFormat: true with connect-web's createConnectTransport, or a gRPC / gRPC-Web transport",
      Code.InvalidArgument,
    );
  }
  return next(req);
};
