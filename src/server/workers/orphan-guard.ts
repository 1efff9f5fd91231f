/**
 * Makes sure no worker process outlives the bridge, even a bridge killed
 * with SIGKILL (which runs no code of ours): a tiny watchdog process holds
 * the read end of a pipe whose only write end is the bridge's. The kernel
 * closes that end when the bridge dies, however it dies; the watchdog then
 * reads end-of-file and ends the process groups of the workers it was told
 * about (SIGTERM, then SIGKILL after a grace).
 *
 * Stock snakepit workers cannot do this themselves: v0.4.3 has no liveness
 * check of its host at all, and v0.13's heartbeat only runs for sessions it
 * has seen. Snakepit's own host relies on a process registry that kills
 * orphans at its next start; this guard needs no next start.
 *
 * The watchdog is `/bin/sh` running the fixed script below (never the
 * operator's command), in a process group of its own so a terminal's Ctrl-C
 * reaches the bridge (which stops the workers in order) and not it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Logger } from "../observability/logger.js";

/** Tracks worker pids for the watchdog. */
export interface OrphanGuard {
  /** A worker started: its process group is ended if the bridge dies. */
  add(pid: number): void;
  /** A worker exited: its pid may be reused, so it is forgotten. */
  remove(pid: number): void;
  /** Ends the watchdog (the workers are stopped by then). */
  close(): void;
}

// `+pid` adds, `-pid` removes; end of input ends every listed process group
// (the worker is its group's leader), falling back to the pid alone.
const script = `
trap '' INT HUP
pids=""
while IFS= read -r line; do
  case "$line" in
    +*) pids="$pids \${line#+}" ;;
    -*) keep=""; for p in $pids; do [ "$p" = "\${line#-}" ] || keep="$keep $p"; done; pids="$keep" ;;
  esac
done
[ -z "$pids" ] && exit 0
for p in $pids; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
sleep 2
for p in $pids; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
exit 0
`;

/** Starts the watchdog; without `/bin/sh` it logs once and guards nothing. */
export function createOrphanGuard(logger: Logger): OrphanGuard {
  let child: ChildProcess | undefined;
  try {
    child = spawn("/bin/sh", ["-c", script], {
      stdio: ["pipe", "ignore", "ignore"],
      detached: true,
    });
  } catch (error) {
    logger.warn("no orphan guard for Python workers: /bin/sh could not start", { error });
  }
  child?.on("error", (error) => {
    logger.warn("no orphan guard for Python workers: /bin/sh could not start", { error });
    child = undefined;
  });
  // The watchdog must not keep the bridge's event loop alive.
  child?.unref();
  const stdin = child?.stdin ?? undefined;
  // A write after the watchdog died (EPIPE) changes nothing for the bridge.
  stdin?.on("error", () => undefined);
  (stdin as unknown as { unref?: () => void } | undefined)?.unref?.();
  const send = (line: string) => {
    if (stdin !== undefined && !stdin.destroyed) stdin.write(`${line}\n`);
  };
  return {
    add: (pid) => send(`+${pid}`),
    remove: (pid) => send(`-${pid}`),
    close() {
      stdin?.end();
    },
  };
}
