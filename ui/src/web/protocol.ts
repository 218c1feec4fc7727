// The relay protocol (docs/protocol.md) for the browser: one WebSocket, JSON requests matched to
// answers by id, events to a callback, and the Ed25519 login handshake with WebCrypto. Used by the
// web back end (./backend.ts) and, through it, by the interop page in tests/web.

/** Signed before the nonce in the unbound form: `sign(LOGIN_CONTEXT || nonce)`. */
export const LOGIN_CONTEXT = "hum-relay-login-v1\0";
/** Signed before the relay name in the bound form (what this client sends, docs/protocol.md). */
export const LOGIN_CONTEXT_BOUND = "hum-relay-login-v2\0";
export const PROTOCOL_VERSION = 1;

export const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export function unhex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) throw new Error("not a hex string");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The relay name a login is signed for: the `host[:port]` of the URL we dialed, lower case. */
export function relayName(url: string): string {
  return new URL(url).host.toLowerCase();
}

/**
 * The bytes a login signs. With `relay` (the bound form): the v2 context, the name's length as two
 * big-endian bytes, the name, then the nonce, so no other relay can reuse the signature. Without:
 * the v1 context, then the nonce.
 */
export function loginMessage(nonceHex: string, relay?: string): Uint8Array {
  const enc = new TextEncoder();
  const nonce = unhex(nonceHex);
  if (relay === undefined) {
    const ctx = enc.encode(LOGIN_CONTEXT);
    const msg = new Uint8Array(ctx.length + nonce.length);
    msg.set(ctx);
    msg.set(nonce, ctx.length);
    return msg;
  }
  const ctx = enc.encode(LOGIN_CONTEXT_BOUND);
  const name = enc.encode(relay);
  if (name.length > 261) throw new Error("relay name too long");
  const msg = new Uint8Array(ctx.length + 2 + name.length + nonce.length);
  msg.set(ctx);
  msg[ctx.length] = name.length >> 8;
  msg[ctx.length + 1] = name.length & 0xff;
  msg.set(name, ctx.length + 2);
  msg.set(nonce, ctx.length + 2 + name.length);
  return msg;
}

/** A refusal from the relay (`{"type": "error", "code": ...}`) or a lost connection (`closed`). */
export class RelayError extends Error {
  readonly code: string;
  readonly request: string;
  constructor(request: string, code: string, message: string) {
    super(message);
    this.code = code;
    this.request = request;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

type Pending = { resolve: (v: Json) => void; reject: (e: Error) => void; type: string };

/** A frame from the relay: a reply, an error or an event. Unknown frames are ignored. */
export type Frame =
  | { type: "reply"; re: number; reply: Json }
  | { type: "error"; re: number; code: string; message: string }
  | { type: "event"; event: Json };

/** The relay connection: requests matched to answers by id, events to `onEvent`. */
export class RelayConnection {
  readonly url: string;
  private ws: WebSocket | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  onEvent: (ev: Json) => void = () => {};
  onClose: (reason: string) => void = () => {};
  closed: string | null = null;

  constructor(url: string) {
    this.url = url;
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onerror = () => {
        if (!opened) reject(new RelayError("connect", "relay_unavailable", `cannot open a WebSocket to ${this.url}`));
      };
      ws.onclose = (e) => {
        this.closed = `relay closed the connection (code ${e.code}${e.reason ? ` ${e.reason}` : ""})`;
        for (const p of this.pending.values()) p.reject(new RelayError(p.type, "closed", this.closed));
        this.pending.clear();
        if (opened) this.onClose(this.closed);
        else reject(new RelayError("connect", "relay_unavailable", `cannot reach the relay at ${this.url}`));
      };
      ws.onmessage = (m) => {
        let frame: Frame;
        try {
          frame = JSON.parse(String(m.data));
        } catch {
          return;
        }
        this.frame(frame);
      };
    });
  }

  /** Routes one frame (exposed for tests). */
  frame(msg: Frame) {
    if (msg.type === "event") {
      this.onEvent(msg.event);
      return;
    }
    const p = this.pending.get(msg.re);
    if (!p) return;
    this.pending.delete(msg.re);
    if (msg.type === "reply") p.resolve(msg.reply);
    else p.reject(new RelayError(p.type, msg.code, msg.message));
  }

  request(type: string, fields: Record<string, unknown> = {}): Promise<Json> {
    if (this.closed || !this.ws) return Promise.reject(new RelayError(type, "closed", this.closed ?? "not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, type });
      this.ws!.send(JSON.stringify({ id, type, ...fields }));
    });
  }

  close() {
    this.ws?.close();
  }
}

/** hello -> challenge -> sign the bound login message for the relay we dialed -> login -> welcome. */
export async function login(
  relay: RelayConnection,
  key: CryptoKey,
  publicHex: string,
  displayName: string,
  client = "hum-web/0.1",
): Promise<Json> {
  const challenge = await relay.request("hello", { protocol: PROTOCOL_VERSION, client });
  const name = relayName(relay.url);
  const msg = loginMessage(challenge.nonce, name);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, msg as BufferSource));
  return relay.request("login", { public_key: publicHex, signature: hex(sig), display_name: displayName, relay: name });
}

/** The public key (hex) of an Ed25519 key pair. */
export async function publicKeyHex(publicKey: CryptoKey): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.exportKey("raw", publicKey)));
}

/**
 * An Ed25519 private key from the 32-byte seed Hum's identity files hold (`secret_key`, hex),
 * through PKCS#8 (RFC 8410: a fixed 16-byte header and the seed). `extractable` false keeps it
 * inside WebCrypto.
 */
export async function importSeed(secretHex: string, extractable = false): Promise<CryptoKey> {
  const seed = unhex(secretHex);
  if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes (64 hex characters)");
  const header = unhex("302e020100300506032b657004220420");
  const pkcs8 = new Uint8Array(header.length + 32);
  pkcs8.set(header);
  pkcs8.set(seed, header.length);
  return crypto.subtle.importKey("pkcs8", pkcs8 as BufferSource, { name: "Ed25519" }, extractable, ["sign"]);
}
