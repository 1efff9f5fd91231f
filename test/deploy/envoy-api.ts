/**
 * Envoy's own configuration schema, for checking envoy/envoy.yaml without
 * an Envoy binary: the API `.proto` files that `@grpc/grpc-js-xds` ships
 * (with xds, googleapis and protoc-gen-validate) are compiled by our `buf`
 * into a descriptor set, and the YAML is read into `Bootstrap` with
 * protobuf-es `fromJson`, which refuses unknown fields, unknown enum values
 * and `@type`s it cannot resolve, as Envoy does.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  createFileRegistry,
  type DescMessage,
  fromBinary,
  fromJson,
  type JsonValue,
  type Registry,
  toJson,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { parse } from "yaml";

const root = fileURLToPath(new URL("../..", import.meta.url));
const deps = path.join(root, "node_modules/@grpc/grpc-js-xds/deps");
const buf = path.join(root, "node_modules/.bin/buf");

/** The descriptors of Envoy's bootstrap and the extensions a config names. */
export interface EnvoyApi {
  readonly registry: Registry;
  readonly bootstrap: DescMessage;
  /** Parses YAML text strictly into a Bootstrap and returns it as canonical proto JSON. */
  parse(yamlText: string): JsonValue;
}

/**
 * Compiles the bootstrap proto and, for every `@type` in `yamlText`, the
 * protos of its package, in a temporary directory removed afterwards.
 */
export async function loadEnvoyApi(yamlText: string): Promise<EnvoyApi> {
  const dir = await mkdtemp(path.join(tmpdir(), "ub-envoy-api-"));
  try {
    for (const module of ["envoy-api", "xds", "googleapis"]) {
      await symlink(path.join(deps, module), path.join(dir, module), "dir");
    }
    // This validate.proto predates StringRules.ignore_empty (field 26 in
    // protoc-gen-validate since 0.6), which Envoy's protos set in options;
    // a copy with that one field added stands in for it.
    const validate = await readFile(
      path.join(deps, "protoc-gen-validate/validate/validate.proto"),
      "utf8",
    );
    const strict = "optional bool strict = 25 [default = true];";
    if (!validate.includes(strict) || validate.includes("ignore_empty")) {
      throw new Error("validate.proto changed: revisit the ignore_empty patch in envoy-api.ts");
    }
    await mkdir(path.join(dir, "pgv/validate"), { recursive: true });
    await writeFile(
      path.join(dir, "pgv/validate/validate.proto"),
      validate.replace(strict, `${strict}\n  optional bool ignore_empty = 26;`),
    );
    await writeFile(
      path.join(dir, "buf.yaml"),
      "version: v2\nmodules:\n  - path: envoy-api\n  - path: xds\n  - path: googleapis\n  - path: pgv\n",
    );
    const files = ["envoy/config/bootstrap/v3/bootstrap.proto"];
    for (const typeName of typeUrls(parse(yamlText))) {
      const pkgDir = typeName.split(".").slice(0, -1).join("/");
      const protos = await readdir(path.join(deps, "envoy-api", pkgDir)).catch(() => []);
      for (const f of protos) if (f.endsWith(".proto")) files.push(`${pkgDir}/${f}`);
    }
    const out = path.join(dir, "envoy.binpb");
    const args = [
      "build",
      "-o",
      out,
      ...[...new Set(files)].flatMap((f) => ["--path", `envoy-api/${f}`]),
    ];
    await promisify(execFile)(buf, args, { cwd: dir, timeout: 60_000 });
    const set = fromBinary(FileDescriptorSetSchema, await readFile(out));
    const registry = createFileRegistry(set);
    const bootstrap = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
    if (bootstrap === undefined) throw new Error("the descriptor set has no Bootstrap");
    return {
      registry,
      bootstrap,
      parse(text) {
        const message = fromJson(bootstrap, parse(text) as JsonValue, { registry });
        return toJson(bootstrap, message, { registry });
      },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The message names of every `@type` in a parsed YAML document. */
function typeUrls(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const v of value) typeUrls(v, out);
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k === "@type" && typeof v === "string") out.add(v.slice(v.lastIndexOf("/") + 1));
      else typeUrls(v, out);
    }
  }
  return out;
}

/** `value` at `keys` (object keys or array indexes), or undefined. */
export function at(value: unknown, ...keys: (string | number)[]): unknown {
  let v = value;
  for (const k of keys) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

/** `value` at `keys` as an array (empty when absent). */
export function list(value: unknown, ...keys: (string | number)[]): unknown[] {
  const v = at(value, ...keys);
  return Array.isArray(v) ? v : [];
}

/** Seconds of a proto JSON Duration ("1.5s"). */
export function seconds(duration: unknown): number {
  if (typeof duration !== "string" || !duration.endsWith("s")) {
    throw new Error(`not a duration: ${JSON.stringify(duration)}`);
  }
  return Number(duration.slice(0, -1));
}
