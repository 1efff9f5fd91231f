/**
 * Forked helper processes (servers, load generators, probes) and the small
 * request/reply protocol the benchmark runner speaks with them over IPC.
 *
 * Every child is tracked so that a failing or interrupted run still kills
 * what it started: nothing may outlive `npm run bench`.
 */
import { type ChildProcess, fork } from "node:child_process";

/** A forked helper process answering requests one reply per request. */
export interface ChildWorker {
  readonly pid: number;
  /** Sends `body` and resolves with the child's reply (rejects with its error). */
  request<T>(body: object): Promise<T>;
  /** Disconnects, waits for the exit (SIGKILL after `graceMs`). Idempotent. */
  close(graceMs?: number): Promise<void>;
}

/** Options of {@link startChild}. */
export interface StartChildOptions {
  /** Node flags for the child, e.g. `["--expose-gc"]`. */
  readonly execArgv?: readonly string[];
  /**
   * Where the child's stdout goes: a file descriptor, or by default the
   * runner's stderr, so that children's logs never mix with the table.
   */
  readonly stdout?: number;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
}

interface Reply {
  readonly id?: number;
  readonly ready?: true;
  readonly ok?: boolean;
  readonly value?: unknown;
  readonly error?: string;
}

const running = new Set<ChildProcess>();

// Last resort: a crash or Ctrl-C in the runner still ends every child.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const child of running) child.kill("SIGKILL");
    process.exit(130);
  });
}

/**
 * Tracks a process started some other way (e.g. `spawn` of redis-server)
 * so that it is killed with the others if the runner dies.
 */
export function trackProcess(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
}

/**
 * Forks `file` (a `.ts` worker run by the same Node binary) and waits until
 * it has installed its request handler (see `serveRequests`).
 *
 * With `UB_BENCH_CPU_PROF=<dir>` in the environment, every child writes a V8
 * CPU profile there when it exits (file names carry the pid; open them in
 * Chrome DevTools), to find where a benchmark's time goes.
 */
export function startChild(file: URL, options: StartChildOptions = {}): Promise<ChildWorker> {
  const profileDir = process.env.UB_BENCH_CPU_PROF;
  const child = fork(file, [], {
    execArgv: [
      ...(options.execArgv ?? []),
      ...(profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]),
    ],
    stdio: ["ignore", options.stdout ?? 2, 2, "ipc"],
    env: { ...process.env, ...options.env },
  });
  running.add(child);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = true;
      running.delete(child);
      for (const p of pending.values()) {
        p.reject(
          new Error(`${file.pathname} exited (code ${code}, signal ${signal}) before replying`),
        );
      }
      pending.clear();
      resolve();
    });
  });

  return new Promise((resolve, reject) => {
    const onEarlyExit = () => reject(new Error(`${file.pathname} exited before it was ready`));
    child.once("exit", onEarlyExit);
    child.on("message", (raw) => {
      const reply = raw as Reply;
      if (reply.ready === true) {
        child.off("exit", onEarlyExit);
        resolve(worker);
        return;
      }
      if (reply.id === undefined) return;
      const p = pending.get(reply.id);
      if (p === undefined) return;
      pending.delete(reply.id);
      if (reply.ok === true) p.resolve(reply.value);
      else p.reject(new Error(`${file.pathname}: ${reply.error ?? "failed"}`));
    });

    let closing: Promise<void> | undefined;
    const worker: ChildWorker = {
      pid: child.pid ?? -1,
      request<T>(body: object) {
        if (exited) return Promise.reject(new Error(`${file.pathname} has exited`));
        const id = nextId++;
        return new Promise<T>((res, rej) => {
          pending.set(id, { resolve: res as (v: unknown) => void, reject: rej });
          child.send({ id, body });
        });
      },
      close(graceMs = 5000) {
        closing ??= (async () => {
          if (exited) return;
          // Children exit on disconnect (see serveRequests).
          if (child.connected) child.disconnect();
          const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
          await exitPromise;
          clearTimeout(timer);
        })();
        return closing;
      },
    };
  });
}

/**
 * Inside a child: answers each request with `handle`'s result, then tells
 * the parent it is ready. The child exits when the parent disconnects (or
 * dies), after `onExit` has had a chance to clean up.
 */
export function serveRequests(
  handle: (body: unknown) => unknown,
  onExit: () => Promise<void> | void = () => {},
): void {
  const send = process.send?.bind(process);
  if (send === undefined) throw new Error("this worker must be started with child_process.fork");
  process.on("message", (raw) => {
    const { id, body } = raw as { id: number; body: unknown };
    Promise.resolve()
      .then(() => handle(body))
      .then(
        (value) => send({ id, ok: true, value }),
        (error: unknown) =>
          send({
            id,
            ok: false,
            error: error instanceof Error ? (error.stack ?? error.message) : String(error),
          }),
      );
  });
  process.once("disconnect", () => {
    Promise.resolve()
      .then(onExit)
      .finally(() => process.exit(0));
  });
  send({ ready: true });
}
