import type { ValueOf, VariableType, VariableValue } from "../values/index.js";
import type { VariableSnapshot } from "./variable-snapshot.js";

/** Declaration of one variable in a schema. */
export interface VariableDeclaration<T extends VariableType = VariableType> {
  readonly type: T;
  /** The value it is registered with when it does not exist yet. */
  readonly default: ValueOf<T>;
  readonly constraints?: Readonly<Record<string, unknown>>;
  readonly metadata?: Readonly<Record<string, string>>;
  /** Cache TTL of this variable (ms), instead of the context's default. */
  readonly ttlMs?: number;
}

/** A set of variables declared once, by name. */
export type VariableSchema = Readonly<Record<string, VariableDeclaration>>;

/** Options of a read. */
export interface ReadOptions {
  /** Skip the cache and ask the server. */
  readonly bypassCache?: boolean;
  /** Accept a cached value at most this old (ms), instead of the TTL. */
  readonly maxAgeMs?: number;
}

/** Options of a write. */
export interface WriteOptions {
  /** Compare-and-swap: fail with ABORTED unless this is the current version. */
  readonly expectedVersion?: number;
  /** Merged into the variable's metadata. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Write as this optimizer, which may write while holding the lock. */
  readonly optimizerId?: string;
}

/** Typed access to one variable. */
export interface VariableHandle<V extends VariableValue = VariableValue> {
  readonly name: string;
  /** The value (from the cache when fresh). */
  get(options?: ReadOptions): Promise<V>;
  /** The full snapshot (from the cache when fresh). */
  snapshot(options?: ReadOptions): Promise<VariableSnapshot<V>>;
  /** Writes (validated locally first); resolves with the stored snapshot. */
  set(value: V, options?: WriteOptions): Promise<VariableSnapshot<V>>;
  /**
   * The cached snapshot without any call, fresh or not; with
   * `{ pending: true }` the newest pending write's value when there is one
   * (`snapshot.pending` then true).
   */
  peek(options?: { readonly pending?: boolean }): VariableSnapshot<V> | undefined;
  /**
   * Calls `listener` with every new snapshot (local writes, pushed changes,
   * other tabs), or undefined when the variable is deleted. Returns the
   * unsubscribe function.
   */
  subscribe(listener: (snapshot: VariableSnapshot<V> | undefined) => void): () => void;
}

/** The typed handles of a bound schema. */
export type BoundVariables<S extends VariableSchema> = {
  readonly [K in keyof S & string]: VariableHandle<ValueOf<S[K]["type"]>>;
};
