// The README's Node example (the part between the region markers), run by
// `npm run example:node` (main.ts), which test/examples.test.ts runs.
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createSessionContext } from "unified-session-bridge";

/** Runs the example against the bridge at `baseUrl`. */
export async function nodeExample(baseUrl: string): Promise<void> {
  // #region readme
  const ctx = await createSessionContext({
    transport: createGrpcTransport({ baseUrl }),
  });
  const vars = await ctx.bind({
    temperature: { type: "float", default: 0.7, constraints: { min: 0, max: 2 } },
    model: { type: "choice", default: "small", constraints: { choices: ["small", "large"] } },
  });
  await vars.temperature.set(0.9); // 1 round trip; validated locally first
  console.log(await vars.temperature.get()); // 0.9, from the cache: 0 round trips
  try {
    await vars.temperature.set(2.5); // refused locally: 0 round trips
  } catch (e) {
    console.log(String(e)); // ConnectError: [invalid_argument] variable 'temperature': value 2.5 is above maximum 2
  }
  await ctx.close();
  // #endregion
}
