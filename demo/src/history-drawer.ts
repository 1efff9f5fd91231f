import type { HistoryEntry, SessionContext } from "../../src/client/index.ts";
import { clock, h, replaceChildren, showValue } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";

/**
 * A side panel with one variable's history (newest first). Rolling back
 * writes the old value as a NEW version: versions never go backwards.
 */
export interface HistoryDrawer {
  readonly element: HTMLElement;
  open(name: string): Promise<void>;
  /** Refreshes the list if it shows `name`. */
  changed(name: string): void;
}

/** Creates the (hidden) history panel. */
export function createHistoryDrawer(
  ctx: SessionContext,
  options: { readonly onError: (error: Explained) => void },
): HistoryDrawer {
  const title = h("h2", {}, "History");
  const list = h("ol", { class: "history-list" });
  const note = h(
    "p",
    { class: "muted small" },
    "Rolling back writes the old value as a new version, so every tab sees it and the history keeps growing.",
  );
  const close = h("button", { type: "button", class: "ghost", "aria-label": "Close history" }, "✕");
  const element = h(
    "aside",
    { class: "drawer", hidden: true, "aria-live": "polite" },
    h("header", {}, title, close),
    note,
    list,
  );
  let showing: string | undefined;
  let refreshing: Promise<void> | undefined;
  let again = false;

  close.addEventListener("click", () => {
    element.hidden = true;
    showing = undefined;
  });

  const load = async (name: string) => {
    let entries: HistoryEntry[];
    try {
      entries = await ctx.history(name, { limit: 50 });
    } catch (e) {
      options.onError(explain(e, `reading the history of '${name}'`));
      return;
    }
    if (showing !== name) return;
    const current = ctx.peek(name)?.snapshot;
    const locked = current?.lockedBy !== undefined;
    replaceChildren(
      list,
      // The bridge answers newest first.
      ...entries.map((entry) => {
        const isCurrent = entry.version === current?.version;
        const by =
          entry.metadata.trial !== undefined
            ? `${entry.changedBy} · trial ${entry.metadata.trial}`
            : entry.changedBy;
        return h(
          "li",
          { "data-version": entry.version, class: isCurrent ? "current" : "" },
          h("span", { class: "version" }, `v${entry.version}`),
          h("code", { class: "history-value" }, showValue(entry.value)),
          h("span", { class: "muted small" }, `${clock(entry.timestamp)} · ${by}`),
          isCurrent
            ? h("span", { class: "badge" }, "current")
            : h(
                "button",
                {
                  type: "button",
                  class: "small",
                  "data-rollback": entry.version,
                  title: locked ? "Locked while the optimizer runs" : "",
                  disabled: locked,
                  onclick: async () => {
                    try {
                      await ctx.rollback(name, entry.version);
                    } catch (e) {
                      options.onError(explain(e, `rolling '${name}' back to v${entry.version}`));
                    }
                  },
                },
                "Roll back",
              ),
        );
      }),
    );
  };

  return {
    element,
    async open(name) {
      showing = name;
      title.textContent = `History of ${name}`;
      element.hidden = false;
      replaceChildren(list, h("li", { class: "muted" }, "loading…"));
      await load(name);
    },
    changed(name) {
      if (showing !== name) return;
      if (refreshing !== undefined) {
        again = true; // one more load after the current one
        return;
      }
      refreshing = load(name).finally(() => {
        refreshing = undefined;
        if (again) {
          again = false;
          if (showing !== undefined) this.changed(showing);
        }
      });
    },
  };
}
