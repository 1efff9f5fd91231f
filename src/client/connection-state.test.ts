import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type ConnectionAction, createConnection, transition } from "./connection-state.js";
import { createEmitter } from "./events.js";
import type { SessionContextEvents } from "./session-events.js";
import { systemTimers } from "./timers.js";
import { createVariableCache } from "./variable-cache.js";

const lost = new ConnectError("stream reset", Code.Unavailable);
const gone = new ConnectError("session ended", Code.NotFound);

/** A connection over a real cache and emitter, recording every event in order. */
function recorded(watched: boolean, hydrated = false) {
  const cache = createVariableCache({ ttlMs: 5000, maxEntries: 10, timers: systemTimers });
  const events = createEmitter<SessionContextEvents>();
  const seen: string[] = [];
  for (const type of ["stale", "reconnecting", "resynchronized", "session-ended"] as const) {
    events.on(type, () => seen.push(type));
  }
  const connection = createConnection({ cache, events, watched, hydrated });
  return { cache, connection, seen };
}

const synced = (live: boolean, variables = 2): ConnectionAction => ({
  type: "synced",
  variables,
  live,
});

describe("transition", () => {
  it("never leaves closed, and leaves ended only for closed", () => {
    const all: ConnectionAction[] = [
      { type: "open" },
      { type: "resync", run: Promise.resolve() },
      synced(true),
      { type: "resync-failed" },
      { type: "reconnect", attempt: 1, delayMs: 0, error: lost },
      { type: "ended", error: gone },
    ];
    for (const action of all) {
      const closed = { status: "closed" } as const;
      expect(transition(closed, action)).toBe(closed);
      const ended = { status: "ended", error: gone } as const;
      expect(transition(ended, action)).toBe(ended);
    }
    expect(transition({ status: "ended", error: gone }, { type: "close" })).toEqual({
      status: "closed",
    });
  });

  it("goes live only on a sync that the watch stream carries on from", () => {
    expect(transition({ status: "connecting" }, synced(true)).status).toBe("live");
    expect(transition({ status: "unwatched" }, synced(false)).status).toBe("unwatched");
  });
});

describe("createConnection", () => {
  it("keeps the cache live exactly while live, with one event per change", () => {
    const { cache, connection, seen } = recorded(true);
    expect(connection.state.status).toBe("connecting");
    connection.dispatch({ type: "resync", run: Promise.resolve() });
    expect(cache.live).toBe(false);
    connection.dispatch(synced(true));
    expect(cache.live).toBe(true);
    connection.dispatch({ type: "reconnect", attempt: 1, delayMs: 10, error: lost });
    expect(cache.live).toBe(false);
    connection.dispatch({ type: "reconnect", attempt: 2, delayMs: 20, error: lost });
    connection.dispatch({ type: "open" });
    connection.dispatch(synced(true));
    expect(seen).toEqual([
      "resynchronized",
      "stale",
      "reconnecting",
      "reconnecting",
      "resynchronized",
    ]);
  });

  it("reports an ended session once, however many parts notice it", () => {
    const { cache, connection, seen } = recorded(true);
    connection.dispatch(synced(true));
    connection.dispatch({ type: "ended", error: gone }); // the heartbeat
    connection.dispatch({ type: "ended", error: gone }); // the watch stream
    expect(seen).toEqual(["resynchronized", "stale", "session-ended"]);
    expect(cache.live).toBe(false);
  });

  it("is silent once closed", () => {
    const { cache, connection, seen } = recorded(true);
    connection.dispatch(synced(true));
    connection.dispatch({ type: "close" });
    connection.dispatch({ type: "reconnect", attempt: 1, delayMs: 0, error: lost });
    connection.dispatch({ type: "ended", error: gone });
    expect(seen).toEqual(["resynchronized"]);
    expect(cache.live).toBe(false);
    expect(connection.state.status).toBe("closed");
  });

  it("without a watch: a revalidation resolves `revalidated`, a failed one reports stale", async () => {
    const ok = recorded(false, true);
    let revalidated = false;
    void ok.connection.revalidated.then(() => {
      revalidated = true;
    });
    ok.connection.dispatch({ type: "resync", run: Promise.resolve() });
    expect(ok.connection.state.status).toBe("resyncing");
    ok.connection.dispatch(synced(false, 3));
    await ok.connection.revalidated;
    expect(revalidated).toBe(true);
    expect(ok.connection.state.status).toBe("unwatched");
    expect(ok.cache.live).toBe(false);
    expect(ok.seen).toEqual(["resynchronized"]);

    const failed = recorded(false, true);
    failed.connection.dispatch({ type: "resync", run: Promise.resolve() });
    failed.connection.dispatch({ type: "resync-failed" });
    expect(failed.seen).toEqual(["stale"]);
    expect(failed.connection.state.status).toBe("unwatched");
  });
});
