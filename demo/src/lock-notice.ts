import type { SessionContext } from "../../src/client/index.ts";
import { PROGRAM_VARIABLES } from "../shared/program.ts";
import { RUN_GONE_AFTER_MS, RUNS_TOOL, type RunLog } from "../shared/tuning-runs.ts";
import { h, replaceChildren } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";

/**
 * The notice a tab shows while another optimizer holds the lock: whose run
 * it is, "Stop that run" when this browser started it, and "Release the
 * lock…" (confirmed, then saying what it did) only once the holder has
 * shown no sign of life for a while, i.e. its tab was closed.
 */
export interface LockNotice {
  readonly element: HTMLElement;
  /** Redraws for the lock holder (undefined: nobody), its last trial label and the run log. */
  show(holder: string | undefined, trial: string | undefined, log: RunLog): void;
  /** Notes when each running run last changed (call on every new log). */
  observe(log: RunLog): void;
  /** Forgets the last "released" message. */
  clearReleased(): void;
}

export function createLockNotice(
  ctx: SessionContext,
  options: { readonly owner: string; readonly onError: (error: Explained) => void },
): LockNotice {
  const element = h("div", { class: "notice info", hidden: true, "data-foreign-lock": "" });
  let foreignLock: string | undefined;
  let foreignTrial: string | undefined;
  let log: RunLog = { runs: [], evaluations: [] };
  /** When this tab last saw each running run change (its own clock). */
  const lastSign = new Map<string, { updatedAt: number; seenAt: number }>();
  let releasing: "ask" | "busy" | undefined;
  /** When this tab first saw the current holder's lock. */
  let lockSeenAt = 0;
  /** Updated in place: a new trial must not rebuild the notice (and its buttons). */
  const trialLabel = h("span", { "data-foreign-trial": "" }, ".");
  let released: string | undefined;

  /** The holder of the lock has gone: no running run of it, or no sign of life for a while. */
  const holderGone = (holder: string): boolean => {
    const run = log.runs.find((r) => r.optimizerId === holder && r.status === "running");
    // A lock with no run of its holder: a run that recorded nothing yet, or
    // a lock taken some other way; gone once that lasts.
    if (run === undefined) return Date.now() - lockSeenAt > RUN_GONE_AFTER_MS;
    const sign = lastSign.get(run.id);
    return sign !== undefined && Date.now() - sign.seenAt > RUN_GONE_AFTER_MS;
  };

  /** What the notice last showed: redrawn only when that changes (buttons stay clickable). */
  let foreignKey = "";
  const drawForeign = () => {
    const holderRun = log.runs.find((r) => r.optimizerId === foreignLock && r.status === "running");
    const key = JSON.stringify([
      foreignLock,
      released,
      releasing,
      holderRun?.id,
      holderRun?.stopRequested,
      foreignLock === undefined ? false : holderGone(foreignLock),
    ]);
    trialLabel.textContent =
      foreignTrial !== undefined && /^\d+$/.test(foreignTrial)
        ? ` (now: trial ${foreignTrial}).`
        : ".";
    if (key === foreignKey) return;
    foreignKey = key;
    element.hidden = foreignLock === undefined && released === undefined;
    if (foreignLock === undefined) {
      if (released !== undefined)
        replaceChildren(element, h("div", { "data-release-result": "" }, released));
      return;
    }
    const holder = foreignLock;
    const run = log.runs.find((r) => r.optimizerId === holder && r.status === "running");
    const parts: (Node | string)[] = [
      h("strong", {}, "Tuning in progress elsewhere. "),
      `Optimizer ${holder} holds the lock on the program's variables; this tab draws its run live`,
      trialLabel,
    ];
    if (run !== undefined && run.owner === options.owner && !run.stopRequested) {
      const stopThere = h(
        "button",
        { type: "button", class: "small danger", "data-action": "remote-stop" },
        "Stop that run",
      );
      stopThere.addEventListener("click", async () => {
        stopThere.disabled = true;
        try {
          await ctx.callTool(RUNS_TOOL, { action: "stop", run_id: run.id, owner: options.owner });
        } catch (e) {
          options.onError(explain(e, "asking the run to stop"));
          stopThere.disabled = false;
        }
      });
      parts.push(
        h("div", { class: "small" }, "You started it in another tab of this browser: ", stopThere),
      );
    } else if (run?.stopRequested === true) {
      parts.push(h("div", { class: "small muted" }, "Stop requested: it finishes cleanly."));
    }
    if (holderGone(holder)) parts.push(releaseOffer(holder));
    replaceChildren(element, h("div", {}, ...parts));
  };

  const releaseOffer = (holder: string): HTMLElement => {
    if (releasing === undefined) {
      const offer = h(
        "button",
        { type: "button", class: "ghost small", "data-action": "force-release" },
        "Release the lock…",
      );
      offer.addEventListener("click", () => {
        releasing = "ask";
        drawForeign();
      });
      return h(
        "div",
        { class: "small muted" },
        `${holder} has shown no sign of life: its tab was probably closed. `,
        offer,
      );
    }
    const yes = h(
      "button",
      { type: "button", class: "small danger", "data-action": "confirm-release" },
      "Yes, release it",
    );
    const no = h("button", { type: "button", class: "ghost small" }, "Cancel");
    yes.disabled = releasing === "busy";
    no.addEventListener("click", () => {
      releasing = undefined;
      drawForeign();
    });
    yes.addEventListener("click", async () => {
      releasing = "busy";
      drawForeign();
      let count = 0;
      try {
        for (const name of PROGRAM_VARIABLES) {
          await ctx.stopOptimization(name, { force: true });
          count++;
        }
        const silent = log.runs.find((r) => r.optimizerId === holder && r.status === "running");
        if (silent !== undefined) {
          // Its record says "abandoned" from now on, in every tab.
          await ctx.callTool(RUNS_TOOL, { action: "abandon", run_id: silent.id });
        }
        released = `Released the lock of ${holder} on ${count} variables. Their values stay as its last write left them${foreignTrial === undefined ? "" : ` (trial ${foreignTrial})`}; you can edit them or start a run.`;
      } catch (e) {
        options.onError(explain(e, "releasing the lock"));
      } finally {
        releasing = undefined;
        drawForeign();
      }
    });
    return h(
      "div",
      { class: "small", "data-release-confirm": "" },
      `Release the lock ${holder} holds on all ${PROGRAM_VARIABLES.length} variables? If it is still running somewhere, its next write will fail. `,
      yes,
      " ",
      no,
    );
  };

  return {
    element,
    show(holder, trial, next) {
      if (holder !== foreignLock) {
        releasing = undefined;
        lockSeenAt = Date.now();
        if (holder !== undefined) released = undefined;
      }
      foreignLock = holder;
      foreignTrial = trial;
      log = next;
      drawForeign();
    },
    observe(next) {
      for (const run of next.runs) {
        if (run.status !== "running") {
          lastSign.delete(run.id);
          continue;
        }
        const sign = lastSign.get(run.id);
        if (sign === undefined || sign.updatedAt !== run.updatedAt) {
          lastSign.set(run.id, { updatedAt: run.updatedAt, seenAt: Date.now() });
        }
      }
    },
    clearReleased() {
      released = undefined;
      drawForeign();
    },
  };
}
