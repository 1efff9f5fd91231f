import type { SessionContext, VariableSnapshot, VariableValue } from "../../src/client/index.ts";
import { checkValue, parseConstraints } from "../../src/values/index.ts";
import { PROGRAM_VARIABLES, programSchema } from "../shared/program.ts";
import { h, replaceChildren, showValue } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";

/**
 * The variables panel: every program variable with its type, constraints,
 * version and value. Edits are checked as you type with the shared rules
 * (`checkValue`, the function the server runs, so the message is the
 * server's) and written through the bridge; locked variables cannot be
 * edited and say who holds them.
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
}

interface Row {
  readonly tr: HTMLTableRowElement;
  readonly version: HTMLElement;
  readonly lock: HTMLElement;
  readonly editor: HTMLElement;
  readonly error: HTMLElement;
  readonly hint: HTMLElement;
  snapshot: VariableSnapshot | undefined;
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
  },
): VariablesPanel {
  const rows = new Map<string, Row>();
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
    const lock = h("span", { class: "lock", hidden: true });
    const editor = h("div", { class: "editor" }, h("span", { class: "muted" }, "loading…"));
    const error = h("div", { class: "field-error", role: "alert", "data-error": name });
    const hint = h("div", { class: "field-hint", "data-hint": name });
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
      h("td", { class: "value" }, editor, lock, hint, error),
      h(
        "td",
        { class: "actions" },
        h(
          "button",
          {
            class: "ghost small",
            type: "button",
            "data-history": name,
            onclick: () => options.onHistory(name),
          },
          "History",
        ),
      ),
    );
    tbody.append(tr);
    rows.set(name, {
      tr,
      version,
      lock,
      editor,
      error,
      hint,
      snapshot: undefined,
      input: undefined,
      save: undefined,
      dirty: false,
    });
  }

  const write = async (row: Row, value: VariableValue) => {
    const snapshot = row.snapshot;
    if (snapshot === undefined) return;
    row.tr.classList.add("saving");
    try {
      await ctx.set(snapshot.name, value, { metadata: { source: options.editorId } });
      row.dirty = false;
      row.error.textContent = "";
    } catch (e) {
      const explained = explain(e, `saving '${snapshot.name}'`);
      row.error.textContent = explained.server ?? explained.detail;
      options.onError(explained);
      // Show the stored value again: the write did not happen.
      row.dirty = false;
      render(row);
    } finally {
      row.tr.classList.remove("saving");
    }
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

  const render = (row: Row) => {
    const snapshot = row.snapshot;
    if (snapshot === undefined) return;
    row.version.textContent = `v${snapshot.version}`;
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
    renderEditor(row, snapshot, locked);
  };

  const renderEditor = (row: Row, snapshot: VariableSnapshot, locked: boolean) => {
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
        ...allowed.map((option) => h("option", { value: option }, option)),
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
      if (checked.ok) void write(row, checked.value);
    };
    input.addEventListener("input", () => {
      row.dirty = input.value !== showValue(snapshot.value);
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
        renderEditor(row, snapshot, locked);
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
  };
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
