/**
 * Envoy's route selection, for the matchers envoy/envoy.yaml may use, on
 * the canonical proto JSON of a RouteConfiguration's virtual host: the
 * first route whose match fits wins. Matchers this does not model fail
 * loudly rather than being guessed.
 */
import { at, list } from "./envoy-api.js";

/** A request as the router sees it (header names lower-case). */
export interface RouteRequest {
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
}

const modelled = new Set(["prefix", "path", "grpc", "headers", "caseSensitive"]);

/** The first route of `virtualHost` matching `request`, or undefined (404). */
export function selectRoute(virtualHost: unknown, request: RouteRequest): unknown {
  // Envoy matches path and prefix on :path without its query string.
  const path = request.path.split("?", 1)[0] as string;
  for (const route of list(virtualHost, "routes")) {
    const match = at(route, "match") as Record<string, unknown>;
    for (const key of Object.keys(match)) {
      if (!modelled.has(key)) throw new Error(`route matcher "${key}" is not modelled here`);
    }
    const caseSensitive = match.caseSensitive !== false;
    const norm = (s: string) => (caseSensitive ? s : s.toLowerCase());
    if (typeof match.prefix === "string" && !norm(path).startsWith(norm(match.prefix))) continue;
    if (typeof match.path === "string" && norm(path) !== norm(match.path)) continue;
    // `grpc: {}` admits gRPC content types only, which would shut out Connect.
    if (
      match.grpc !== undefined &&
      !/^application\/grpc/.test(request.headers["content-type"] ?? "")
    )
      continue;
    if (!list(match, "headers").every((h) => headerMatches(h, request.headers))) continue;
    return route;
  }
  return undefined;
}

function headerMatches(matcher: unknown, headers: Readonly<Record<string, string>>): boolean {
  const name = String(at(matcher, "name")).toLowerCase();
  const value = headers[name];
  const invert = at(matcher, "invertMatch") === true;
  let ok: boolean;
  if (at(matcher, "presentMatch") !== undefined) ok = value !== undefined;
  else if (at(matcher, "stringMatch", "exact") !== undefined)
    ok = value === at(matcher, "stringMatch", "exact");
  else if (at(matcher, "stringMatch", "prefix") !== undefined)
    ok = value?.startsWith(String(at(matcher, "stringMatch", "prefix"))) ?? false;
  else throw new Error(`header matcher ${JSON.stringify(matcher)} is not modelled here`);
  return invert ? !ok : ok;
}
