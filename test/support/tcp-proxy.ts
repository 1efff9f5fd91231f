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
  close(): Promise<void>;
}

/** Starts a proxy forwarding to 127.0.0.1:`target`. */
export async function startTcpProxy(target: number): Promise<TcpProxy> {
  let port = target;
  let refusing = false;
  const open = new Set<net.Socket>();
  const dropAll = () => {
    for (const s of open) s.destroy();
    open.clear();
  };
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    open.add(client);
    open.add(upstream);
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
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
    close: () =>
      new Promise<void>((resolve) => {
        dropAll();
        server.close(() => resolve());
      }),
  };
}
