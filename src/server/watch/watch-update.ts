import { create, toBinary } from "@bufbuild/protobuf";
import { type VariableUpdate, VariableUpdateSchema } from "../../gen/snakepit/bridge/bridge_pb.js";
import { frameEnvelope } from "../edge/edge-compat.js";
import { encodeGrpcWebTextChunk } from "../edge/grpc-web-text.js";
import { timestamp, toVariableMessage } from "../session/variable-message.js";
import type { VariableChange, VariableRecord } from "../store/session-store.js";

/**
 * One update as every watch stream that gets it shares it: the message (for
 * connect-node's streams) and its length-prefixed frame (for the streams
 * written directly), each built once, on first use.
 */
export interface EncodedUpdate {
  /**
   * What a newer update replaces while a stream cannot keep up: the
   * variable's id, or a key of its own for the markers.
   */
  readonly key: string;
  /** The variable's version, for updates that carry a value. */
  readonly version: number | undefined;
  readonly message: VariableUpdate;
  /**
   * The message behind the 5-byte prefix of a gRPC, gRPC-Web and Connect
   * streaming frame (flags 0, big-endian length): the three share it.
   */
  readonly frame: Uint8Array;
  /** The frame as gRPC-Web's text mode sends it (padded base64 of its own). */
  readonly textFrame: Uint8Array;
}

/** Update types that carry a value version watchers must never see twice. */
const VERSIONED = new Set(["value_changed", "initial_value"]);

/** Wraps a message; `key` names what a newer update of the same key replaces. */
export function encodedUpdate(message: VariableUpdate, key: string): EncodedUpdate {
  let frame: Uint8Array | undefined;
  let textFrame: Uint8Array | undefined;
  return {
    key,
    version: VERSIONED.has(message.updateType) ? message.variable?.version : undefined,
    message,
    get frame() {
      frame ??= frameEnvelope(0, toBinary(VariableUpdateSchema, message));
      return frame;
    },
    get textFrame() {
      textFrame ??= encodeGrpcWebTextChunk(this.frame);
      return textFrame;
    },
  };
}

/** The update for a committed change. */
export function changeUpdate(change: VariableChange): EncodedUpdate {
  return encodedUpdate(
    create(VariableUpdateSchema, {
      variableId: change.variable.id,
      variable: toVariableMessage(change.variable),
      updateSource: change.source,
      updateMetadata: { ...change.metadata },
      timestamp: timestamp(change.timestamp),
      updateType: change.kind,
    }),
    change.variable.id,
  );
}

/** The update that starts a stream with a variable's current value. */
export function initialUpdate(record: VariableRecord, now: number): EncodedUpdate {
  return encodedUpdate(
    create(VariableUpdateSchema, {
      variableId: record.id,
      variable: toVariableMessage(record),
      updateSource: "server",
      timestamp: timestamp(now),
      updateType: "initial_value",
    }),
    record.id,
  );
}

/** Keys of the markers: no variable id is empty, so none collides with these. */
const SYNC_KEY = "";
export const KEEPALIVE_KEY = "\u0000keepalive";

/** The "sync" marker (see WatchVariablesRequest.sync_marker). */
export function syncUpdate(now: number): EncodedUpdate {
  return encodedUpdate(
    create(VariableUpdateSchema, {
      updateSource: "server",
      timestamp: timestamp(now),
      updateType: "sync",
    }),
    SYNC_KEY,
  );
}

/**
 * The progress message an idle stream carries so that proxies do not end it
 * (extension: update_type "keepalive", no variable; clients skip it).
 */
export function keepaliveUpdate(now: number): EncodedUpdate {
  return encodedUpdate(
    create(VariableUpdateSchema, {
      updateSource: "server",
      timestamp: timestamp(now),
      updateType: "keepalive",
    }),
    KEEPALIVE_KEY,
  );
}
