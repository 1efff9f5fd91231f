import type {
  SessionContext,
  SessionContextEvents,
  VariableSnapshot,
  VariableValue,
} from "../../src/client/index.ts";
import { checkValue, parseConstraints } from "../../src/values/index.ts";
import { PROGRAM_VARIABLES, programSchema } from "../shared/program.ts";
import { h, replaceChildren, showValue } from "./dom.ts";
import { type Explained, explain, explainNotStored } from "./errors.ts";

/**
 * The variables panel: every program variable with its type, constraints,
 * version and value. Edits are checked as you type with the shared rules
 * (`checkValue`, the function the server runs, so the message is the
 * server's) and written through the context's outbox: an edit shows at
 * once with a "pending" marker until the bridge applies it, also while the
 * bridge is unreachable and across reloads; one the bridge refuses (someone
 * else changed the variable first) says why and what the bridge holds.
 * Locked variables cannot be edited and say who holds them.
 */

/** Where the panel's values come from right now. */
export type Freshness = "saved" | "live";

export interface VariablesPanel {
  readonly element: HTMLElement;
  /** Shows a variable's new snapshot (a local write, another tab, the optimizer). */
  update(snapshot: VariableSnapshot, origin: "local" | "server" | "tab" | "initial"): void;
  /** Marks every row as a saved copy (not yet checked with the server) or live. */
  setFreshness(freshness: Freshness): void;
  /** Variables with an edit not saved yet (kept while an optimizer holds the lock). */
  pendingDrafts(): string[];
  /**
   * Choices not offered right now (a module whose tool is not registered),
   * unless a variable holds one already.
   */
  setUnavailableChoices(choices: readonly string[]): void;
}

interface Row {
  readonly name: string;
  readonly tr: HTMLTableRowElement;
  readonly version: HTMLElement;
  /** The "pending" marker: edits not applied by the bridge yet. */
  readonly badge: HTMLElement;
  readonly lock: HTMLElement;
  readonly editor: HTMLElement;
  readonly error: HTMLElement;
  readonly hint: HTMLElement;
  /** Why the bridge refused the last edit, and what it holds. */
  readonly refusal: HTMLElement;
  /** The confirmed snapshot. */
  snapshot: VariableSnapshot | undefined;
  /** What the editor shows: the confirmed snapshot, or the newest pending value. */
  shown: VariableSnapshot | undefined;
  input: HTMLInputElement | HTMLSelectElement | undefined;
  save: HTMLButtonElement | undefined;
  dirty: boolean;
}

/** Creates the panel for the program's variables. */
export function createVariablesPanel(
  ctx: SessionContext,
  options: {
    /** Written into each edit's metadata as its source. */
    readonly editorId: string;
    readonly onHistory: (name: string) => void;
    readonly onError: (error: Explained) => void;
    /** Choices not offered until {@link VariablesPanel.setUnavailableChoices} says otherwise. */
    readonly unavailableChoices?: readonly string[];
  },
): VariablesPanel {
  const rows = new Map<string, Row>();
  let unavailable = new Set(options.unavailableChoices ?? []);
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "variables" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { class: "col-name" }, "Variable"),
        h("th", { class: "col-type" }, "Type · constraints"),
        h("th", { class: "col-version" }, "Version"),
        h("th", { class: "col-value" }, "Value"),
        h("th", { class: "col-actions" }, ""),
      ),
    ),
    tbody,
  );

  for (const name of PROGRAM_VARIABLES) {
    const declaration = programSchema[name];
    const version = h("span", { class: "version" }, "…");
    const badge = h(
      "span",
      { class: "pending-badge", "data-pending": name, hidden: true, role: "status" },
      "pending",
    );
    const lock = h("span", { class: "lock", hidden: true });
    const editor = h("div", { class: "editor" }, h("span", { class: "muted" }, "loading…"));
    const error = h("div", { class: "field-error", role: "alert", "data-error": name });
    const hint = h("div", { class: "field-hint", "data-hint": name });
    const refusal = h("div", { class: "field-refused", role: "alert", "data-refused": name });
    const tr = h(
      "tr",
      { "data-var": name },
      h(
        "td",
        { class: "name" },
        h("code", {}, name),
        h("div", { class: "desc" }, declaration.metadata.description),
      ),
      h(
        "td",
        {},
        h("span", { class: `type type-${declaration.type}` }, declaration.type),
        h(
          "div",
          {
            class: "constraints",
            title: "constraints" in declaration ? JSON.stringify(declaration.constraints) : "",
          },
          describeConstraints(declaration),
        ),
      ),
      h("td", {}, version),
      // The hint in words first; the exact rule (the bridge's message) below it.
      h("td", { class: "value" }, editor, badge, lock, hint, error, refusal),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          {
            class: "ghost small",
            type: "button",
            "data-history": name,
            // Opens the history: a view-only page keeps it.
            "data-reads": "",
            onclick: () => options.onHistory(name),
          },
          "History",
        ),
      ),
    );
    tbody.append(tr);
    rows.set(name, {
      name,
      tr,
      version,
      badge,
      lock,
      editor,
      error,
      hint,
      refusal,
      snapshot: undefined,
      shown: undefined,
      input: undefined,
      save: undefined,
      dirty: false,
    });
  }

  /**
   * Hands an edit to the outbox. The row is "saving" only until the edit is
   * stored in this browser (a few milliseconds, bridge or not); from then
   * on the "pending" event shows it pending until the bridge applies it,
   * and the "refused" event reports a refusal: both also for edits made
   * before a reload or in another tab, which no promise here would see.
   */
  const write = (row: Row, value: VariableValue) => {
    const snapshot = row.snapshot;
    if (snapshot === undefined) return;
    replaceChildren(row.refusal);
    row.tr.classList.remove("refused");
    row.tr.classList.add("saving");
    const edit = ctx.enqueue(snapshot.name, value, { metadata: { source: options.editorId } });
    // A refusal is shown by the "refused" listener below.
    edit.committed.catch(() => undefined);
    edit.stored.then(
      () => {
        row.tr.classList.remove("saving");
        row.dirty = false;
        render(row);
      },
      (e: unknown) => {
        row.tr.classList.remove("saving");
        // Not kept, so never sent: show the value as it was.
        row.dirty = false;
        render(row);
        const explained = explainNotStored(e, snapshot.name);
        row.error.textContent = explained.server ?? explained.detail;
        options.onError(explained);
      },
    );
  };

  /** The value the user typed, as the shared checker should see it. */
  const parseDraft = (type: string, text: string): unknown => {
    if (type === "float" || type === "integer") {
      const trimmed = text.trim();
      // A number as written; anything else goes to the checker as text, so
      // its message names what was typed ("cannot convert 'abc' to float").
      return /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(trimmed) ? Number(trimmed) : text;
    }
    return text;
  };

  const validate = (row: Row): { ok: true; value: VariableValue } | { ok: false } => {
    const snapshot = row.snapshot;
    const input = row.input;
    if (snapshot === undefined || input === undefined) return { ok: false };
    const constraints = parseConstraints(snapshot.type, snapshot.constraints);
    const draft = parseDraft(snapshot.type, input.value);
    const checked = checkValue(snapshot.type, draft, constraints, snapshot.name);
    // A pattern is exact but not friendly: add the variable's own hint.
    const patternFailed =
      typeof draft === "string" && constraints.rules.pattern?.test(draft) === false;
    row.hint.textContent = !checked.ok && patternFailed ? (snapshot.metadata.hint ?? "") : "";
    if (!checked.ok) {
      row.error.textContent = checked.message;
      row.tr.classList.add("invalid");
      input.setAttribute("aria-invalid", "true");
      return { ok: false };
    }
    row.error.textContent = "";
    row.tr.classList.remove("invalid");
    input.removeAttribute("aria-invalid");
    return { ok: true, value: checked.value as VariableValue };
  };

  /** The confirmed snapshot, or the optimistic one while edits of it are pending. */
  const optimistic = (row: Row): VariableSnapshot | undefined => {
    const peeked = ctx.peek(row.name, { pending: true })?.snapshot;
    return peeked?.pending === true ? peeked : row.snapshot;
  };

  const renderBadge = (row: Row) => {
    const pending = ctx.pendingWrites().filter((w) => w.name === row.name).length;
    row.badge.hidden = pending === 0;
    row.tr.classList.toggle("pending", pending > 0);
    if (pending === 0) return;
    const live = ctx.cache.live;
    row.badge.textContent = live ? "pending" : "pending · waiting for the bridge";
    const edits = pending === 1 ? "This edit is" : `${pending} edits are`;
    row.badge.title = live
      ? `${edits} kept in this browser and being sent to the bridge.`
      : `${edits} kept in this browser: the bridge is not reachable now. They are sent when it is back (also after a reload).`;
  };

  const render = (row: Row) => {
    const snapshot = row.snapshot;
    if (snapshot === undefined) return;
    row.version.textContent = `v${snapshot.version}`;
    renderBadge(row);
    const shown = optimistic(row) ?? snapshot;
    const locked = snapshot.lockedBy !== undefined;
    row.tr.classList.toggle("locked", locked);
    row.lock.hidden = !locked;
    row.lock.textContent = locked ? `locked by ${snapshot.lockedBy}` : "";
    row.lock.title = locked
      ? "An optimizer holds this variable: only it can write until it stops."
      : "";
    if (row.input !== undefined && row.dirty) {
      row.input.disabled = locked;
      if (row.save !== undefined)
        row.save.disabled = locked || row.tr.classList.contains("invalid");
      // Keep the person's draft (also through a tuning run); the version
      // column shows the news, and Escape brings the stored value back.
      return;
    }
    if (row.input !== undefined && row.shown?.type === shown.type && shows(row.input, shown)) {
      // The editor already shows this value (e.g. the one just typed, now
      // pending or applied): keep it, and the focus in it.
      row.shown = shown;
      row.input.disabled = locked;
      if (row.save !== undefined) row.save.hidden = true;
      row.error.textContent = "";
      row.hint.textContent = "";
      row.tr.classList.remove("invalid");
      row.input.removeAttribute("aria-invalid");
      return;
    }
    renderEditor(row, shown, locked);
  };

  const renderEditor = (row: Row, snapshot: VariableSnapshot, locked: boolean) => {
    row.shown = snapshot;
    const value = snapshot.value;
    if (snapshot.type === "boolean") {
      const input = h("input", {
        type: "checkbox",
        "data-input": snapshot.name,
        "aria-label": snapshot.name,
        onchange: () => void write(row, input.checked),
      });
      input.checked = value === true;
      input.disabled = locked;
      row.input = input;
      row.save = undefined;
      replaceChildren(
        row.editor,
        h("label", { class: "switch" }, input, h("span", {}, value === true ? "on" : "off")),
      );
      return;
    }
    const allowed = (snapshot.constraints.choices ?? snapshot.constraints.allowed_modules) as
      | string[]
      | undefined;
    if ((snapshot.type === "choice" || snapshot.type === "module") && allowed !== undefined) {
      const select = h(
        "select",
        {
          "data-input": snapshot.name,
          "aria-label": snapshot.name,
          onchange: () => void write(row, select.value),
        },
        ...allowed
          .filter((option) => !unavailable.has(option) || option === String(value))
          .map((option) => h("option", { value: option }, option)),
      );
      select.value = String(value);
      select.disabled = locked;
      row.input = select;
      row.save = undefined;
      replaceChildren(row.editor, select);
      return;
    }
    const input = h("input", {
      type: "text",
      spellcheck: "false",
      "data-input": snapshot.name,
      "aria-label": snapshot.name,
      class: snapshot.type === "string" ? "wide" : "narrow",
    });
    input.value = showValue(value);
    input.disabled = locked;
    const save = h(
      "button",
      { type: "button", class: "small", "data-save": snapshot.name },
      "Save",
    );
    save.hidden = true;
    const commit = () => {
      const checked = validate(row);
      if (!checked.ok) return;
      // The edit is handed over: no Save left to press a second time.
      row.dirty = false;
      save.hidden = true;
      const current = (row.shown ?? snapshot).value;
      if (JSON.stringify(checked.value) === JSON.stringify(current)) {
        // The value it already has (or will have, when pending), perhaps
        // written differently ("0.30"): nothing to write, show it as stored.
        input.value = showValue(current);
        return;
      }
      write(row, checked.value);
    };
    input.addEventListener("input", () => {
      row.dirty = input.value !== showValue((row.shown ?? snapshot).value);
      const checked = validate(row);
      save.hidden = !row.dirty;
      save.disabled = !checked.ok;
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") commit();
      if (event.key === "Escape") {
        row.dirty = false;
        row.error.textContent = "";
        row.hint.textContent = "";
        row.tr.classList.remove("invalid");
        renderEditor(row, row.shown ?? snapshot, row.snapshot?.lockedBy !== undefined);
      }
    });
    save.addEventListener("click", commit);
    row.input = input;
    row.save = save;
    row.error.textContent = "";
    row.hint.textContent = "";
    row.tr.classList.remove("invalid");
    replaceChildren(row.editor, input, save);
  };

  /** Says on the row why the bridge refused an edit, and what it holds instead. */
  const showRefusal = ({ name, write, error, current }: SessionContextEvents["refused"]) => {
    const row = rows.get(name);
    if (row === undefined) return;
    const explained = explain(error, `saving '${name}'`);
    replaceChildren(
      row.refusal,
      h("strong", {}, `${explained.title}.`),
      ` Your ${showValue(write.value)} was not saved`,
      current === undefined
        ? `: ${explained.server ?? explained.detail}`
        : h(
            "span",
            {},
            "; the bridge holds ",
            h("b", { "data-current": name }, showValue(current.value)),
            ` (v${current.version}). Edit again if you still want yours.`,
          ),
    );
    row.refusal.title = explained.server ?? explained.detail;
    row.tr.classList.add("refused");
    options.onError(explained);
  };

  // Pending edits (made here, before a reload, or in another tab) and the
  // bridge's refusals of them.
  ctx.on("pending", ({ name }) => {
    const row = rows.get(name);
    if (row !== undefined) render(row);
  });
  ctx.on("refused", showRefusal);
  // "waiting for the bridge" only while it is not reachable.
  for (const type of ["stale", "reconnecting", "resynchronized"] as const) {
    ctx.on(type, () => {
      for (const row of rows.values()) renderBadge(row);
    });
  }

  return {
    element: table,
    update(snapshot, origin) {
      const row = rows.get(snapshot.name);
      if (row === undefined) return;
      const changed =
        row.snapshot !== undefined &&
        row.snapshot.version !== snapshot.version &&
        origin !== "initial";
      row.snapshot = snapshot;
      render(row);
      if (changed && origin !== "local") {
        row.tr.classList.remove("flash");
        void row.tr.offsetWidth; // restart the animation
        row.tr.classList.add("flash");
      }
    },
    setFreshness(freshness) {
      table.dataset.freshness = freshness;
    },
    pendingDrafts() {
      return [...rows.values()].filter((r) => r.dirty).map((r) => r.snapshot?.name ?? "");
    },
    setUnavailableChoices(choices) {
      const next = new Set(choices);
      if ([...next].join("\n") === [...unavailable].join("\n")) return;
      unavailable = next;
      // Selects are drawn again with the choices offered now; one being
      // edited keeps its state.
      for (const row of rows.values()) {
        if (!(row.input instanceof HTMLSelectElement) || row.shown === undefined) continue;
        if (document.activeElement === row.input) continue;
        renderEditor(row, row.shown, row.snapshot?.lockedBy !== undefined);
      }
    },
  };
}

/**
 * Whether a text field or select already shows `snapshot`'s value as it
 * would render it. A switch is drawn again (its label says on or off).
 */
function shows(input: HTMLInputElement | HTMLSelectElement, snapshot: VariableSnapshot): boolean {
  if (input instanceof HTMLInputElement && input.type === "checkbox") return false;
  return input.value === showValue(snapshot.value);
}

function describeConstraints(
  declaration: (typeof programSchema)[keyof typeof programSchema],
): string {
  if (!("constraints" in declaration)) return "true or false";
  const c = declaration.constraints as Record<string, unknown>;
  if ("min" in c || "max" in c) return `${c.min ?? "−∞"} ≤ x ≤ ${c.max ?? "∞"}`;
  if ("choices" in c) return `one of ${(c.choices as string[]).length} choices`;
  if ("allowed_modules" in c) return `one of ${(c.allowed_modules as string[]).length} modules`;
  const parts: string[] = [];
  if ("min_length" in c || "max_length" in c) {
    parts.push(`${c.min_length ?? 0}–${c.max_length ?? "∞"} chars`);
  }
  if ("pattern" in c) parts.push("pattern: known {parts} only");
  return parts.join(", ");
}
