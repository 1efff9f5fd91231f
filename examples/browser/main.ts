// The page of `npm run example:browser`: opens the session of its
// `?session=` link (a new one without), renders every variable as it
// changes, from this tab, other tabs or other clients, and writes one.
import type { VariableSnapshot } from "unified-session-bridge";
import { browserExample } from "./example.ts";

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const values = new Map<string, string>();

function render(name: string, snapshot: VariableSnapshot | undefined): void {
  if (snapshot === undefined) values.delete(name);
  else values.set(name, `${JSON.stringify(snapshot.value)} (version ${snapshot.version})`);
  element("vars").replaceChildren(
    ...[...values].sort().map(([n, text]) => {
      const item = document.createElement("li");
      item.textContent = `${n} = ${text}`;
      return item;
    }),
  );
}

const ctx = await browserExample(render);
// The link of this session: a second tab opened with it shares the variables.
const url = new URL(location.href);
url.searchParams.set("session", ctx.sessionId);
history.replaceState(null, "", url);
element<HTMLAnchorElement>("share").href = url.href;
element("status").textContent = `Session ${ctx.sessionId.slice(0, 8)}…`;

const { clicks } = await ctx.bind({ clicks: { type: "integer", default: 0 } });
for (const snapshot of await ctx.list()) render(snapshot.name, snapshot);
const bump = element<HTMLButtonElement>("bump");
bump.disabled = false;
bump.addEventListener("click", () => {
  // Read from the cache, write through: every tab's list follows.
  void clicks.set((clicks.peek()?.value ?? 0) + 1);
});
// For the example's test: the context once it is open.
(window as unknown as { example: typeof ctx }).example = ctx;
