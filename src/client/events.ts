/**
 * A minimal typed event emitter. The client library never logs; it emits
 * events the application can subscribe to.
 */
export interface Emitter<Events extends Record<string, unknown>> {
  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof Events>(type: K, listener: (event: Events[K]) => void): () => void;
  emit<K extends keyof Events>(type: K, event: Events[K]): void;
  clear(): void;
}

/** Creates an emitter. A throwing listener does not stop the others. */
export function createEmitter<Events extends Record<string, unknown>>(
  onListenerError: (error: unknown) => void = reportLater,
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
    clear() {
      listeners.clear();
    },
  };
}

/**
 * A listener's bug must surface, but not inside the library's own control
 * flow (a watch loop, a write): rethrow it on a fresh task.
 */
function reportLater(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}
