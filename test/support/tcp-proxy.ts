import net from "node:net";

/** A TCP proxy on a free loopback port, for cutting and redirecting connections in tests. */
export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /** Drops every connection; new ones go to `port` from now on. */
  failOver(port: number): void;
  /** New connections go to `port` from now on; open ones stay (as a proxy draining a host). */
  redirect(port: number): void;
  /** Drops every connection and refuses new ones until {@link restore}. */
  cut(): void;
  restore(): void;
  /**
   * From now on requests pass and replies are held (never delivered):
   * with {@link resetClients}, a connection that fails at the worst moment
   * for a write, after the server did it and before the client heard.
   */
  holdReplies(): void;
  /** Resets (TCP RST) every client connection, drops what was held, and stops holding. */
  resetClients(): void;
  close(): Promise<void>;
}

/** Starts a proxy forwarding to 127.0.0.1:`target`. */
export async function startTcpProxy(target: number): Promise<TcpProxy> {
  let port = target;
  let refusing = false;
  let holding = false;
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const dropAll = () => {
    for (const { client, upstream } of pairs) {
      client.destroy();
      upstream.destroy();
    }
    pairs.clear();
  };
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    // Replies by hand rather than piped, so that they can be held.
    upstream.on("data", (chunk: Buffer) => {
      if (holding) return;
      if (!client.write(chunk)) upstream.pause();
    });
    client.on("drain", () => upstream.resume());
    upstream.on("end", () => client.end());
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const s of [client, upstream]) {
      s.on("error", drop);
      s.on("close", drop);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const own = (server.address() as net.AddressInfo).port;
  return {
    port: own,
    url: `http://127.0.0.1:${own}`,
    failOver(next) {
      port = next;
      dropAll();
    },
    redirect(next) {
      port = next;
    },
    cut() {
      refusing = true;
      dropAll();
    },
    restore() {
      refusing = false;
    },
    holdReplies() {
      holding = true;
    },
    resetClients() {
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
      holding = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        dropAll();
        server.close(() => resolve());
      }),
  };
}
