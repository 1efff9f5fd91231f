import { describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { BridgeService } from "../../gen/snakepit/bridge/bridge_pb.js";
import { covers, fromWireRole, higher, roles, toWireRole } from "./roles.js";
import { bridgeRules, otherRules, requiredRole, ruleOf } from "./rpc-roles.js";

const services = [BridgeService, Health];
const context = { toolRole: () => "editor" as const };

describe("the RPC role table", () => {
  it("has a rule for every method of every service the listeners serve, and none for others", () => {
    for (const service of services) {
      for (const method of service.methods) {
        expect(
          ruleOf(service.typeName, method.name),
          `${service.typeName}/${method.name}`,
        ).toBeDefined();
      }
    }
    const known = new Set(BridgeService.methods.map((m) => m.localName));
    expect(Object.keys(bridgeRules).filter((name) => !known.has(name))).toEqual([]);
    for (const [typeName, methods] of Object.entries(otherRules)) {
      const service = services.find((s) => s.typeName === typeName);
      expect(service, typeName).toBeDefined();
      const names = new Set(service?.methods.map((m) => m.name));
      expect(Object.keys(methods).filter((name) => !names.has(name))).toEqual([]);
    }
    expect(ruleOf("snakepit.bridge.BridgeService", "NoSuchMethod")).toBeUndefined();
    expect(ruleOf("other.Service", "Ping")).toBeUndefined();
  });

  it("names a session in the session_id field of every request it checks a role in", () => {
    for (const method of BridgeService.methods) {
      const rule = ruleOf(BridgeService.typeName, method.name);
      if (rule?.kind !== "session" && rule?.kind !== "open") continue;
      const field = method.input.fields.find((f) => f.name === "session_id");
      expect(field?.fieldKind, method.name).toBe("scalar");
      expect(field?.localName).toBe("sessionId");
    }
  });

  it("asks the highest role of a call's parts: a write as the lock holder is the tuner's", () => {
    const set = bridgeRules.setVariable;
    const setMany = bridgeRules.setVariables;
    if (set.kind !== "session" || setMany.kind !== "session") throw new Error("not session rules");
    expect(requiredRole(set, { metadata: {} }, context)).toBe("editor");
    expect(requiredRole(set, { metadata: { optimizer_id: "o" } }, context)).toBe("tuner");
    expect(requiredRole(setMany, { metadata: { optimizer_id: "o" } }, context)).toBe("tuner");
    const tool = bridgeRules.executeTool;
    if (tool.kind !== "session") throw new Error("not a session rule");
    const viewerTool = { toolRole: () => "viewer" as const };
    const ownerTool = { toolRole: () => "owner" as const };
    expect(requiredRole(tool, { sessionId: "s", toolName: "t" }, viewerTool)).toBe("viewer");
    expect(requiredRole(tool, { sessionId: "s", toolName: "t" }, ownerTool)).toBe("owner");
  });

  it("keeps the roles in order, each covering those before it", () => {
    for (const [i, a] of roles.entries()) {
      for (const [j, b] of roles.entries()) {
        expect(covers(a, b), `${a} covers ${b}`).toBe(i >= j);
        expect(higher(a, b)).toBe(roles[Math.max(i, j)]);
      }
      expect(fromWireRole(toWireRole(a))).toBe(a);
    }
    expect(fromWireRole(toWireRole(undefined))).toBeUndefined();
  });
});
