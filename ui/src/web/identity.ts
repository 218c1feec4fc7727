// The browser's identity: an Ed25519 key pair made by WebCrypto with the private key
// NON-EXTRACTABLE (no script, including this page's, can read its bytes; it can only sign), kept
// in IndexedDB (database `hum`, object store `identity`, key `me`) on this site's origin, with the
// public key (hex) and the display name. Clearing the site's data deletes it, and with it the
// account on this relay (docs/browser.md).

import { importSeed, publicKeyHex } from "./protocol";

export type StoredIdentity = {
  /** The private key (a non-extractable CryptoKey; IndexedDB keeps it as such). */
  key: CryptoKey;
  /** Ed25519 public key, 64 hex characters: the account. */
  public_key: string;
  display_name: string;
  created_at_unix_ms: number;
};

const DB = "hum";
const STORE = "identity";
const ME = "me";

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("cannot open IndexedDB"));
  });
}

async function tx<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const req = f(t.objectStore(STORE));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error ?? new Error("IndexedDB transaction failed"));
      t.onabort = () => reject(t.error ?? new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
}

export async function loadIdentity(): Promise<StoredIdentity | null> {
  const v = await tx<StoredIdentity | undefined>("readonly", (s) => s.get(ME));
  return v ?? null;
}

export async function saveIdentity(id: StoredIdentity): Promise<void> {
  await tx("readwrite", (s) => s.put(id, ME));
}

/** A new key pair; the private key cannot be exported. */
export async function generateIdentity(displayName: string): Promise<StoredIdentity> {
  const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
  return {
    key: pair.privateKey,
    public_key: await publicKeyHex(pair.publicKey),
    display_name: displayName,
    created_at_unix_ms: Date.now(),
  };
}

/**
 * The identity of a desktop identity file's seed (`secret_key`, hex), imported non-extractable.
 * `publicHex` is the file's `public_key`; the relay refuses a login whose signature does not match
 * it, which is the check that the pair belongs together.
 */
export async function identityFromSeed(secretHex: string, publicHex: string, displayName: string): Promise<StoredIdentity> {
  return { key: await importSeed(secretHex), public_key: publicHex, display_name: displayName, created_at_unix_ms: Date.now() };
}
