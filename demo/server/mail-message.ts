/**
 * A small RFC 822 / MIME reader, enough to turn a SpamAssassin corpus
 * message into the parts a feature template can name: subject, sender,
 * the readable body and the raw header block. Node-only (Buffer for
 * base64 and charsets).
 */

/** The parts of an e-mail a feature template can use. */
export interface MailParts {
  readonly subject: string;
  readonly from: string;
  /** Readable text: text/plain parts, or text/html parts with tags removed. */
  readonly body: string;
  /** Every header line, unfolded, names included. */
  readonly headers: string;
}

/** Bodies beyond this many characters are cut: attachments and quoted threads add cost, not signal. */
const MAX_BODY_CHARS = 20_000;
/** Nested multiparts deeper than this are not followed. */
const MAX_DEPTH = 4;

/** Splits a raw message (mbox "From " line allowed) into template parts. */
export function parseMail(raw: string): MailParts {
  const text = raw.startsWith("From ") ? raw.slice(raw.indexOf("\n") + 1) : raw;
  const { headers, body } = splitHeaders(text);
  const readable: string[] = [];
  collectText(headers, body, readable, 0);
  let joined = readable.join("\n");
  if (joined.length > MAX_BODY_CHARS) joined = joined.slice(0, MAX_BODY_CHARS);
  return {
    subject: decodeWords(header(headers, "subject")),
    from: decodeWords(header(headers, "from")),
    body: joined,
    headers: headers.map(([name, value]) => `${name}: ${decodeWords(value)}`).join("\n"),
  };
}

type HeaderList = [name: string, value: string][];

function splitHeaders(text: string): { headers: HeaderList; body: string } {
  const match = /\r?\n\r?\n/.exec(text);
  const head = match === null ? text : text.slice(0, match.index);
  const body = match === null ? "" : text.slice(match.index + match[0].length);
  const headers: HeaderList = [];
  for (const line of head.split(/\r?\n/)) {
    const last = headers[headers.length - 1];
    if (/^[ \t]/.test(line) && last !== undefined) {
      last[1] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon > 0) headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return { headers, body };
}

function header(headers: HeaderList, name: string): string {
  for (const [n, v] of headers) if (n.toLowerCase() === name) return v;
  return "";
}

/** Content-Type split into its media type and parameters. */
function contentType(headers: HeaderList): { type: string; params: Map<string, string> } {
  const raw = header(headers, "content-type");
  const [type = "", ...rest] = raw.split(";");
  const params = new Map<string, string>();
  for (const part of rest) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    params.set(
      part.slice(0, eq).trim().toLowerCase(),
      part
        .slice(eq + 1)
        .trim()
        .replace(/^"(.*)"$/, "$1"),
    );
  }
  return { type: type.trim().toLowerCase() || "text/plain", params };
}

function collectText(headers: HeaderList, body: string, out: string[], depth: number): void {
  const { type, params } = contentType(headers);
  const boundary = params.get("boundary");
  if (type.startsWith("multipart/") && boundary !== undefined && depth < MAX_DEPTH) {
    for (const part of body.split(`--${boundary}`).slice(1)) {
      if (part.startsWith("--")) break; // the closing delimiter
      const inner = splitHeaders(part.replace(/^\r?\n/, ""));
      collectText(inner.headers, inner.body, out, depth + 1);
    }
    return;
  }
  if (!type.startsWith("text/")) return; // images, attachments: no words to read
  const decoded = decodeBody(body, header(headers, "content-transfer-encoding"), params);
  out.push(type === "text/html" ? htmlToText(decoded) : decoded);
}

function decodeBody(body: string, encoding: string, params: Map<string, string>): string {
  const charset = params.get("charset") ?? "us-ascii";
  switch (encoding.trim().toLowerCase()) {
    case "base64":
      return decodeBytes(Buffer.from(body.replace(/[^A-Za-z0-9+/=]/g, ""), "base64"), charset);
    case "quoted-printable":
      return decodeBytes(quotedPrintable(body), charset);
    default:
      return body;
  }
}

function quotedPrintable(text: string): Buffer {
  const unfolded = text.replace(/=\r?\n/g, "");
  const bytes: number[] = [];
  for (let i = 0; i < unfolded.length; i++) {
    const c = unfolded.charCodeAt(i);
    if (c === 61 /* = */ && /^[0-9A-Fa-f]{2}$/.test(unfolded.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(unfolded.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(c & 0xff);
    }
  }
  return Buffer.from(bytes);
}

function decodeBytes(bytes: Uint8Array, charset: string): string {
  try {
    return new TextDecoder(charset.toLowerCase()).decode(bytes);
  } catch {
    // An unknown or bogus charset label (common in spam): read as Latin-1.
    return new TextDecoder("latin1").decode(bytes);
  }
}

/** RFC 2047 encoded words: =?charset?B|Q?text?= */
function decodeWords(value: string): string {
  return value.replace(
    /=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g,
    (_all, charset: string, kind: string, text: string) =>
      kind.toUpperCase() === "B"
        ? decodeBytes(Buffer.from(text, "base64"), charset)
        : decodeBytes(quotedPrintable(text.replace(/_/g, " ")), charset),
  );
}

const ENTITIES: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: " ",
};

function htmlToText(html: string): string {
  return html
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, " ")
    .replace(/<!--[\s\S]*?-->/g, " ")
    .replace(/<[^>]*>/g, " ")
    .replace(/&(#x?[0-9a-fA-F]+|[a-zA-Z]+);/g, (all, name: string) => {
      if (name.startsWith("#")) {
        const code =
          name[1] === "x" || name[1] === "X"
            ? Number.parseInt(name.slice(2), 16)
            : Number.parseInt(name.slice(1), 10);
        return Number.isFinite(code) && code > 0 && code < 0x110000
          ? String.fromCodePoint(code)
          : " ";
      }
      return ENTITIES[name.toLowerCase()] ?? all;
    });
}
