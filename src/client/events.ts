/**
 * A minimal typed event emitter. The client library never logs; it emits
 * events the application can subscribe to.
 */
export interface Emitter<Events extends Record<string, unknown>> {
  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): () => void;
  emit<K extends keyof Events>(type: K, event: Events[K]): void;
  /** Whether anyone listens to `type` (to skip building an event nobody hears). */
  has(type: keyof Events): boolean;
  clear(): void;
}

/** Creates an emitter. A throwing listener does not stop the others. */
export function createEmitter<Events extends Record<string, unknown>>(
  onListenerError: (error: unknown) => void = report,
): Emitter<Events> {
  const listeners = new Map<keyof Events, Set<(event: never) => void>>();
  return {
    on(type, listener) {
      let set = listeners.get(type);
      if (set === undefined) {
        set = new Set();
        listeners.set(type, set);
      }
      set.add(listener as (event: never) => void);
      return () => {
        set.delete(listener as (event: never) => void);
      };
    },
    emit(type, event) {
      const set = listeners.get(type);
      if (set === undefined) return;
      for (const listener of [...set]) {
        try {
          (listener as (event: Events[typeof type]) => void)(event);
        } catch (e) {
          onListenerError(e);
        }
      }
    },
    has(type) {
      return (listeners.get(type)?.size ?? 0) > 0;
    },
    clear() {
      listeners.clear();
    },
  };
}

/**
 * A listener's bug must surface, but neither inside the library's own
 * control flow (a watch loop, a write) nor as an uncaught exception: in
 * Node that ends the process, and rethrowing it on any later task (a
 * microtask or a timer) would do the same. `reportError` hands it to the
 * runtime's error reporting (browsers and workerd: the console and the
 * global "error" event) and returns; where the runtime has none (Node), the
 * console is the one place left.
 */
function report(error: unknown): void {
  const runtime = globalThis as { reportError?: (error: unknown) => void };
  if (typeof runtime.reportError === "function") runtime.reportError(error);
  else console.error("unified-bridge: an event listener threw", error);
}
