/**
 * The order of every listing by name (ListVariables, a tool's
 * listVariables, tool lists): UTF-16 code unit order. Names are ASCII, so
 * that is code point order, and unlike localeCompare it is the same on every
 * machine.
 */
export function byName(a: { readonly name: string }, b: { readonly name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
