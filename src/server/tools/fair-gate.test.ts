import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createFairGate } from "./fair-gate.js";

const never = new AbortController().signal;

describe("createFairGate", () => {
  it("hands free slots to waiting clients in turn, not in arrival order", async () => {
    const gate = createFairGate({ maxRunning: 1, maxWaitingPerClient: 8 });
    const first = await gate.acquire("a", never, true);
    const order: string[] = [];
    // Each call runs as soon as it gets a slot, and gives it back.
    const wait = (client: string, label: string) =>
      gate.acquire(client, never, true).then((release) => {
        order.push(label);
        release();
      });
    const waiting = [
      wait("a", "a1"),
      wait("a", "a2"),
      wait("a", "a3"),
      wait("b", "b1"),
      wait("c", "c1"),
    ];
    expect(gate.waiting).toBe(5);
    first();
    await Promise.all(waiting);
    expect(order).toEqual(["a1", "b1", "c1", "a2", "a3"]);
    expect(gate.running).toBe(0);
    expect(gate.waiting).toBe(0);
  });

  it("refuses a client's call beyond its waiting bound, naming the flag; workers are not bounded", async () => {
    const gate = createFairGate({ maxRunning: 1, maxWaitingPerClient: 1 });
    await gate.acquire("a", never, true);
    void gate.acquire("a", never, true);
    const refused = await gate.acquire("a", never, true).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((refused as ConnectError).rawMessage).toContain(
      "--max-queued-expensive-calls-per-client",
    );
    void gate.acquire("a", never, false);
    void gate.acquire("b", never, true);
    expect(gate.waiting).toBe(3);
  });

  it("refuses new calls while the process is over its memory budget", async () => {
    let over = false;
    const memory = {
      check() {
        if (over) throw new ConnectError("at the memory budget", Code.ResourceExhausted);
      },
    };
    const gate = createFairGate({ maxRunning: 4, maxWaitingPerClient: 4, memory });
    (await gate.acquire("a", never, true))();
    over = true;
    const refused = await gate.acquire("a", never, true).catch((e: unknown) => e);
    expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((refused as ConnectError).rawMessage).toBe("at the memory budget");
    expect(gate.running).toBe(0);
  });

  it("drops a waiting call whose signal aborts, with the signal's reason", async () => {
    const gate = createFairGate({ maxRunning: 1, maxWaitingPerClient: 4 });
    const held = await gate.acquire("a", never, true);
    const deadline = new AbortController();
    const late = gate.acquire("b", deadline.signal, true).catch((e: unknown) => e);
    const cancel = new AbortController();
    const gone = gate.acquire("b", cancel.signal, true).catch((e: unknown) => e);
    deadline.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    cancel.abort();
    expect(((await late) as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(((await gone) as ConnectError).code).toBe(Code.Canceled);
    expect(gate.waiting).toBe(0);
    held();
    expect(gate.running).toBe(0);
  });
});
