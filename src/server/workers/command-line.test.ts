import { describe, expect, it } from "vitest";
import { splitCommandLine } from "./command-line.js";

describe("splitCommandLine", () => {
  it("splits plain words on any whitespace", () => {
    expect(splitCommandLine("  python3\tgrpc_server.py \n --adapter a.B ")).toEqual([
      "python3",
      "grpc_server.py",
      "--adapter",
      "a.B",
    ]);
  });

  it("keeps quoted text together, as a shell would", () => {
    expect(splitCommandLine(`python3 "my worker.py" --name 'a "b"' x"y z"w ''`)).toEqual([
      "python3",
      "my worker.py",
      "--name",
      'a "b"',
      "xy zw",
      "",
    ]);
    expect(splitCommandLine(String.raw`a\ b "c\"d" 'e\f' "$HOME"`)).toEqual([
      "a b",
      'c"d',
      String.raw`e\f`,
      "$HOME",
    ]);
  });

  it("refuses what a shell would refuse", () => {
    expect(() => splitCommandLine(`python3 "worker.py`)).toThrow(/unterminated " quote/);
    expect(() => splitCommandLine("python3 'worker.py")).toThrow(/unterminated ' quote/);
    expect(() => splitCommandLine("python3 \\")).toThrow(/trailing backslash/);
  });

  it("gives no words for a blank line", () => {
    expect(splitCommandLine("   ")).toEqual([]);
  });
});
