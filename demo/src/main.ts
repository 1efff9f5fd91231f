import { Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  createSessionContext,
  type SessionContext,
  type VariableSnapshot,
} from "../../src/client/index.ts";
import { idbOutbox, idbPersistence } from "../../src/client/persist/idb.ts";
import {
  PROGRAM_VARIABLES,
  type ProgramConfig,
  type ProgramVariable,
  PYTHON_CLASSIFIER,
  PYTHON_TRAIN_TOOL,
  programSchema,
  toProgramConfig,
} from "../shared/program.ts";
import { parseRunLog, RUNS_VARIABLE, runsDeclaration } from "../shared/tuning-runs.ts";
import { clock, h, replaceChildren } from "./dom.ts";
import { type Explained, explain, isUnreachable, UNREACHABLE } from "./errors.ts";
import { createHistoryDrawer } from "./history-drawer.ts";
import { createProgramCard } from "./program-card.ts";
import { createTunePanel } from "./tune-panel.ts";
import { createVariablesPanel } from "./variables-panel.ts";
import { keepViewOnly } from "./view-only.ts";

/**
 * The demo page: opens (or creates) the session named in the URL, shows the
 * values saved in this browser at once, revalidates them with the bridge,
 * and wires the panels to the session's live changes. Edits go through an
 * outbox in IndexedDB: while the bridge is unreachable they are kept (also
 * across reloads, when the page opens without the bridge) and sent when it
 * is back.
 *
 * Access: on a bridge that needs tokens (`--access tokens`, the demo's
 * default), the page keeps its session's token in sessionStorage (this tab,
 * reloads included); links carry a token in the fragment (`#access=…`,
 * never sent to a server): "Copy link" the page's own, "Copy view-only
 * link" a viewer token minted for it. A page opened with a viewer token
 * shows everything live and disables every control that would write.
 */

const params = new URLSearchParams(location.search);
/** The token a link carried (`#access=…`), read once: the address bar drops it. */
const linkToken = new URLSearchParams(location.hash.slice(1)).get("access") ?? undefined;
/** The bridge's base URL: the page's origin (Vite's proxy, or Envoy in production) unless given. */
const bridgeUrl = params.get("bridge") ?? location.origin;
const trials = clampInt(params.get("trials"), 20, 1, 100);
const seed = clampInt(params.get("seed"), 7, 0, 2 ** 31);
const tabId = crypto.randomUUID().slice(0, 4);
const optimizerId = `tuner-${tabId}`;
/** This browser (profile): its tabs may stop a run another of its tabs started. */
const owner = browserId();
/** Values saved under another version of the program's schema are not shown. */
const persistence = idbPersistence({ buster: `schema-${hash(JSON.stringify(programSchema))}` });
/** Edits wait here until the bridge applies them: an outage or a reload loses none. */
const outbox = idbOutbox();
/** What the connection pill says while the bridge cannot be reached. */
const OFFLINE = "Bridge unreachable · edits are kept in this browser";

const connPill = h("span", { class: "pill", "data-conn": "connecting" }, "Connecting…");
const freshPill = h("span", { class: "pill", "data-freshness": "none" }, "");
const sessionBox = h("span", { class: "session" });
const notices = h("div", { class: "notices", "aria-live": "polite" });
const main = h("main", { class: "grid" });

document.body.append(
  h(
    "header",
    { class: "top" },
    h(
      "div",
      { class: "brand" },
      h("span", { class: "logo" }, "◆"),
      h("span", {}, "unified-bridge"),
      h("span", { class: "product" }, "Spam filter tuning"),
    ),
    h("div", { class: "pills" }, connPill, freshPill, sessionBox),
  ),
  notices,
  main,
);

/** Shows an error as a dismissible notice; the same text twice is shown once. */
function notify(
  error: Explained,
  level: "error" | "warn" | "info" = "error",
  sticky = level === "error",
): void {
  const key = `${error.title}\u0000${error.detail}`;
  for (const existing of notices.children) {
    if ((existing as HTMLElement).dataset.key === key) return;
  }
  const close = h("button", { type: "button", class: "ghost small", "aria-label": "Dismiss" }, "✕");
  const notice = h(
    "div",
    {
      class: `notice ${level}`,
      role: level === "error" ? "alert" : "status",
      "data-key": key,
      "data-unreachable": error.title === UNREACHABLE,
      "data-notice": level,
    },
    h("div", {}, h("strong", {}, error.title), h("div", {}, error.detail)),
    close,
  );
  close.addEventListener("click", () => notice.remove());
  notices.append(notice);
  if (!sticky) setTimeout(() => notice.remove(), 10_000);
}

function setConn(state: "connecting" | "live" | "reconnecting" | "down" | "ended", text: string) {
  connPill.dataset.conn = state;
  connPill.textContent = text;
}

async function open(): Promise<SessionContext> {
  const transport = createConnectTransport({ baseUrl: bridgeUrl, useBinaryFormat: true });
  const wanted = params.get("session") ?? undefined;
  const token = linkToken ?? storedToken(wanted);
  for (let attempt = 1; ; attempt++) {
    try {
      const ctx = await createSessionContext({
        transport,
        sessionId: wanted,
        ...(token === undefined ? {} : { token }),
        persistence,
        outbox,
        // Every call names the session (x-session-id), so a proxy in front of
        // several bridges (README "Deploying": Envoy's ring hash) keeps one
        // session's calls and its watch stream on one replica.
        affinityHeader: true,
        // Back within a few seconds of the bridge (the default waits up to 10 s).
        watch: { maxBackoffMs: 4000 },
        heartbeatMs: 60_000,
        metadata: { app: "spam-filter-demo" },
      });
      if (ctx.openedOffline && ctx.cached().length === 0) {
        // Opened without the bridge, and this browser kept nothing of the
        // session to show: wait for the bridge instead.
        await ctx.close();
        throw new ConnectError("nothing of this session is kept in this browser", Code.Unavailable);
      }
      if (wanted !== undefined && ctx.created) {
        // The server did not know this session any more; the context has
        // already discarded what this browser saved from its previous life.
        notify(
          {
            title: "A fresh start for this session",
            detail:
              "The server did not know this session any more (it expired after 30 minutes without activity, or the server restarted), so it starts again with the initial values.",
            code: undefined,
          },
          "info",
          true,
        );
      }
      return ctx;
    } catch (e) {
      const explained = explain(e, "opening the session");
      if (!isUnreachable(e)) throw e;
      const delay = Math.min(10, attempt * 2);
      setConn("down", `Server unreachable · retrying in ${delay}s`);
      notify(explained);
      await new Promise((resolve) => setTimeout(resolve, delay * 1000));
    }
  }
}

async function start(): Promise<void> {
  const ctx = await open();
  for (const n of notices.querySelectorAll("[data-unreachable]")) n.remove();
  const started = performance.now();
  const url = new URL(location.href);
  url.searchParams.set("session", ctx.sessionId);
  // The token stays in this tab (sessionStorage), not in the address bar,
  // where it would be copied along with the link by accident.
  url.hash = "";
  history.replaceState(null, "", url);
  storeToken(ctx.sessionId, ctx.accessToken);
  /** A link to this session carrying `token`, if there is one. */
  const linkWith = (token: string | undefined) =>
    token === undefined ? url.href : `${url.href}#access=${token}`;
  const link = linkWith(ctx.accessToken);
  const viewOnly = ctx.accessRole === "viewer";
  const copy = copyButton("Copy link", async () => link, {
    title: viewOnly
      ? "A link to watch this session (view-only, as this page)"
      : "A link to this session with this page's rights",
  });
  const viewLink = h("a", { class: "small", "data-view-link": "", hidden: true }, "view-only link");
  const reason = viewOnlyLinkRefusal(ctx);
  const copyView = copyButton(
    "Copy view-only link",
    async () => {
      // Twelve hours at most, and never longer than this page's own token.
      const minted = await ctx.mintToken({ role: "viewer", ttlSeconds: 12 * 3600 });
      const href = linkWith(minted.token);
      viewLink.setAttribute("href", href);
      viewLink.hidden = false;
      return href;
    },
    {
      title:
        reason ??
        "A link that shows this session live to whoever opens it, and lets them change nothing",
      "data-action": "copy-view-link",
    },
    (e) => notify(explain(e, "making a view-only link")),
  );
  if (reason !== undefined) copyView.disabled = true;
  replaceChildren(
    sessionBox,
    "Session ",
    h(
      "code",
      { title: ctx.sessionId, "data-session": ctx.sessionId },
      `${ctx.sessionId.slice(0, 8)}…`,
    ),
    viewOnly ? h("span", { class: "pill", "data-role": "viewer" }, "View only") : null,
    copy,
    viewOnly ? null : copyView,
    viewLink,
    h(
      "a",
      { href: link, target: "_blank", rel: "noopener", class: "small", "data-tab-link": "" },
      "Open in another tab",
    ),
  );

  const onError = (error: Explained) => notify(error);
  const history_ = createHistoryDrawer(ctx, { onError });
  const panel = createVariablesPanel(ctx, {
    editorId: `editor-${tabId}`,
    onHistory: (name) => void history_.open(name),
    onError,
    // Not offered until the Python worker's tool is seen registered.
    unavailableChoices: [PYTHON_CLASSIFIER],
  });
  const program = createProgramCard(ctx, { onError });
  const tune = createTunePanel(ctx, {
    optimizerId,
    owner,
    editorId: `editor-${tabId}`,
    pendingDrafts: () => panel.pendingDrafts(),
    trials,
    seed,
    onError,
    onRunning: (running) => document.body.classList.toggle("tuning", running),
    onPython: (available) => panel.setUnavailableChoices(available ? [] : [PYTHON_CLASSIFIER]),
  });

  replaceChildren(
    main,
    h(
      "div",
      { class: "column" },
      program.element,
      h(
        "section",
        { class: "card", "aria-labelledby": "vars-title" },
        h(
          "div",
          { class: "card-head" },
          h("h2", { id: "vars-title" }, "Variables"),
          h(
            "span",
            { class: "muted small" },
            "Edits are checked as you type with the bridge's own rules, then written through the bridge. Every tab on this session sees them live.",
          ),
        ),
        panel.element,
      ),
    ),
    h("div", { class: "column" }, tune.element),
    history_.element,
  );

  if (viewOnly) {
    document.body.classList.add("view-only");
    keepViewOnly(main);
    notify(
      {
        title: "View-only link",
        detail:
          "You see this session live: its variables, runs and chart. Changing it needs an editor's link from its owner, so the controls that would are disabled.",
        code: undefined,
      },
      "info",
      true,
    );
  }

  const currentConfig = (): ProgramConfig | undefined => {
    try {
      return toProgramConfig(
        Object.fromEntries(PROGRAM_VARIABLES.map((n) => [n, ctx.peek(n)?.snapshot.value])),
      );
    } catch {
      return undefined; // some value is not known yet
    }
  };
  const show = (snapshot: VariableSnapshot, origin: "local" | "server" | "tab" | "initial") => {
    if (snapshot.name === RUNS_VARIABLE) {
      tune.setLog(parseRunLog(snapshot.value));
      return;
    }
    panel.update(snapshot, origin);
    tune.setCurrent(currentConfig());
    program.show(snapshot.name as ProgramVariable, snapshot.value);
    history_.changed(snapshot.name);
    const lockedBy = PROGRAM_VARIABLES.map((n) => ctx.peek(n)?.snapshot.lockedBy).find(
      (id) => id !== undefined,
    );
    if (lockedBy !== undefined && lockedBy !== optimizerId) {
      tune.setForeignLock(lockedBy, snapshot.metadata.trial);
    } else {
      tune.setForeignLock(undefined);
    }
    document.body.classList.toggle("locked", lockedBy !== undefined);
  };

  // 1. What this browser saved last time, shown before any further call.
  const saved = ctx.cached();
  if (saved.length > 0) {
    for (const { snapshot } of saved) show(snapshot, "initial");
    panel.setFreshness("saved");
    freshPill.dataset.freshness = "saved";
    freshPill.textContent = ctx.openedOffline
      ? "Saved values · not checked: the bridge is unreachable"
      : "Saved values · checking with the server…";
  } else {
    freshPill.dataset.freshness = "loading";
    freshPill.textContent = "Loading values…";
  }

  ctx.on("change", ({ snapshot, origin }) => {
    if (snapshot !== undefined) show(snapshot, origin);
  });
  // Tune and Evaluate need the bridge: off, saying why, while it is not live.
  let ended = false;
  const syncEnabled = () => {
    if (ended) tune.setEnabled(false, "This session has ended on the server.");
    else if (ctx.cache.live) tune.setEnabled(true);
    else
      tune.setEnabled(
        false,
        "The bridge is not reachable right now: Tune and Evaluate are back when the page is live again (edits are kept meanwhile).",
      );
  };
  for (const type of ["stale", "reconnecting", "resynchronized"] as const)
    ctx.on(type, syncEnabled);
  let revalidatedOnce = false;
  ctx.on("stale", () => {
    setConn("reconnecting", "Connection lost · reconnecting…");
    freshPill.dataset.freshness = "stale";
    freshPill.textContent = "Last known values · not live";
  });
  ctx.on("reconnecting", ({ attempt, error }) => {
    if (isUnreachable(error)) setConn("down", `${OFFLINE} · retry ${attempt}`);
    else setConn("reconnecting", `Reconnecting · retry ${attempt}`);
  });
  ctx.on("resynchronized", () => {
    setConn("live", "Live");
    for (const n of notices.querySelectorAll("[data-unreachable]")) n.remove();
    if (revalidatedOnce) {
      freshPill.dataset.freshness = "live";
      freshPill.textContent = `Values checked with the server at ${clock(Date.now())}`;
    }
  });
  ctx.on("persistence-degraded", ({ error }) =>
    notify(
      {
        title: "Values are not being saved in this browser",
        detail: `${explain(error, "saving values").detail}. Everything still works; a reload will fetch the values from the server instead.`,
        code: undefined,
      },
      "warn",
    ),
  );
  ctx.on("session-ended", () => {
    setConn("ended", "Session ended");
    ended = true;
    syncEnabled();
    const restart = h("button", { type: "button", class: "small" }, "Start it again");
    restart.addEventListener("click", async () => {
      // Edits kept for the ended session would be sent to the new one.
      await Promise.all([persistence.clear(ctx.sessionId), outbox.clear(ctx.sessionId)]).catch(
        () => undefined,
      );
      // The ended session's token cannot create it again: the new one
      // answers a new token.
      forgetToken(ctx.sessionId);
      location.reload();
    });
    const fresh = h("a", { href: `${location.pathname}`, class: "small" }, "or open a new session");
    const notice = h(
      "div",
      { class: "notice error", role: "alert", "data-session-ended": "" },
      h(
        "div",
        {},
        h("strong", {}, "This session has ended on the server. "),
        "It expired after 30 minutes without activity, or was cleaned up. Values on this page are no longer shared. ",
        restart,
        " ",
        fresh,
      ),
    );
    notices.append(notice);
  });

  if (ctx.openedOffline) {
    syncEnabled();
    // The bridge was unreachable: what this browser kept is shown, edits
    // are kept in the outbox, and the rest waits until the watch stream is
    // back and has revalidated the values (the outbox then sends the edits).
    setConn("down", OFFLINE);
    notify(
      {
        title: UNREACHABLE,
        detail:
          "The page shows the values saved in this browser. Edits you make are kept here and sent when the bridge is back; the page reconnects by itself.",
        code: undefined,
      },
      "warn",
      true,
    );
    await ctx.revalidated;
  }
  void program.loadDataset();
  // 2. Declare the variables (one call; existing ones are kept as they are).
  // A viewer may not declare anything: the session's owner has, and the
  // values arrive with the watch stream.
  try {
    if (!viewOnly) await ctx.bind({ ...programSchema, [RUNS_VARIABLE]: runsDeclaration });
  } catch (e) {
    notify(explain(e, "declaring the program's variables"));
    throw e;
  }
  for (const name of [...PROGRAM_VARIABLES, RUNS_VARIABLE]) {
    const peeked = ctx.peek(name);
    if (peeked !== undefined) show(peeked.snapshot, "initial");
  }
  if (ctx.cache.live) setConn("live", "Live");

  // 3. Revalidation: one batch call confirms (or replaces) what was shown.
  await ctx.revalidated;
  panel.setFreshness("live");
  freshPill.dataset.freshness = "live";
  freshPill.textContent =
    saved.length > 0
      ? `Saved values checked with the server at ${clock(Date.now())}${
          // Opened offline, the time until then is the outage's, not the check's.
          ctx.openedOffline ? "" : ` (${Math.round(performance.now() - started)} ms)`
        }`
      : "Values from the server";
  setConn("live", "Live");
  syncEnabled();
  revalidatedOnce = true;
  await watchPython(ctx, tune);
  // Scoring records an evaluation in the session: not a viewer's to do.
  if (!viewOnly) void tune.scoreOnLoad();
}

/**
 * Why this page may not make view-only links, or undefined when it may:
 * it needs the owner's token, on a bridge that needs tokens (in
 * session-id mode the link would carry the session id, which opens
 * everything).
 */
function viewOnlyLinkRefusal(ctx: SessionContext): string | undefined {
  if (ctx.accessToken === undefined) {
    return "This bridge opens sessions by their id (--access session-id): a view-only link would carry the id, which opens everything. Run the bridge with --access tokens.";
  }
  if (ctx.accessRole !== "owner") {
    return `Only the session's owner makes view-only links; this page has a ${ctx.accessRole ?? "limited"} link.`;
  }
  return undefined;
}

/** A button that copies what `text()` makes, saying so for a moment. */
function copyButton(
  label: string,
  text: () => Promise<string>,
  props: Record<string, string>,
  onError?: (e: unknown) => void,
): HTMLButtonElement {
  const button = h("button", { type: "button", class: "ghost small", ...props }, label);
  button.addEventListener("click", async () => {
    try {
      const copied = await text();
      await navigator.clipboard?.writeText(copied).catch(() => undefined);
      button.textContent = "Copied";
    } catch (e) {
      onError?.(e);
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

/** sessionStorage's key of a session's token. */
const tokenKey = (sessionId: string) => `unified-bridge-demo:token:${sessionId}`;

/** The token this tab kept for `sessionId`, if any. */
function storedToken(sessionId: string | undefined): string | undefined {
  if (sessionId === undefined) return undefined;
  try {
    return sessionStorage.getItem(tokenKey(sessionId)) ?? undefined;
  } catch {
    return undefined; // storage unavailable: links carry the token
  }
}

/** Forgets a session's token (its session ended). */
function forgetToken(sessionId: string): void {
  try {
    sessionStorage.removeItem(tokenKey(sessionId));
  } catch {
    // Storage unavailable: nothing was kept.
  }
}

/** Keeps a session's token in this tab, for reloads. */
function storeToken(sessionId: string, token: string | undefined): void {
  if (token === undefined) return;
  try {
    sessionStorage.setItem(tokenKey(sessionId), token);
  } catch {
    // Storage unavailable (private mode): a reload then needs the link again.
  }
}

/**
 * Tells the Tune card whether the Python worker's module is registered, now
 * and every 2 s: the bridge withdraws it while its worker restarts.
 */
async function watchPython(ctx: SessionContext, tune: ReturnType<typeof createTunePanel>) {
  const check = async () => {
    try {
      const tool = (await ctx.listTools()).find((t) => t.name === PYTHON_TRAIN_TOOL);
      tune.setPython(tool === undefined ? undefined : (tool.metadata.runtime ?? "Python"));
    } catch {
      // Not reachable right now: the connection pill says so; keep what was known.
    }
  };
  await check();
  setInterval(() => void check(), 2000);
}

/** A random id kept in this browser's localStorage (a fresh one when storage is unavailable). */
function browserId(): string {
  const key = "unified-bridge-demo:browser";
  try {
    const known = localStorage.getItem(key);
    if (known !== null) return known;
    const id = `browser-${crypto.randomUUID().slice(0, 8)}`;
    localStorage.setItem(key, id);
    return id;
  } catch {
    return `browser-${crypto.randomUUID().slice(0, 8)}`;
  }
}

start().catch((e: unknown) => {
  setConn("down", "Not connected");
  const explained = explain(e, "starting the demo");
  notify(explained);
  replaceChildren(
    main,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "The demo could not start"),
      h("p", {}, explained.detail),
      h("button", { type: "button", onclick: () => location.reload() }, "Try again"),
    ),
  );
});

function clampInt(raw: string | null, fallback: number, min: number, max: number): number {
  const n = raw === null ? Number.NaN : Number.parseInt(raw, 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
}

/** FNV-1a of a text, in base 36. */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(36);
}
