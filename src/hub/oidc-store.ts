/**
 * The authorization server's storage: an oidc-provider adapter per model, kept in memory and, with a
 * data directory, mirrored to one JSON file per model (`oidc/<Model>.json`, 0600, written atomically
 * after every change) so a restarted hub keeps its grants, refresh tokens and sessions.
 *
 * Entries are keyed by SHA-256 of their id, and a payload's `jti` is dropped when it equals the id:
 * the file holds no usable access token, refresh token or authorization code value. (Sessions keep
 * their id, which `findByUid` has to return; a session id alone is useless without the hub's signed
 * cookie.) Expired entries are dropped on load and on read.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { ensurePrivateDirSync, readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';

interface Entry {
  payload: AdapterPayload;
  /** Unix seconds; absent = no expiry. */
  expiresAt?: number;
  /** The payload's jti was the id and was dropped. */
  idIsJti?: boolean;
}

interface ModelFile {
  readonly format: 'companion-hub-oidc-store-v1';
  readonly entries: Record<string, Entry>;
}

const MODEL_NAME = /^[A-Za-z]{1,64}$/;

function keyOf(id: string): string {
  return createHash('sha256').update(id, 'utf8').digest('base64url');
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** One hub's adapter storage. `adapter` is what oidc-provider's `adapter` option gets. */
export class OidcStore {
  readonly #dir: string | null;
  readonly #models = new Map<string, Map<string, Entry>>();
  readonly #writes = new Map<string, Promise<void>>();
  #closed = false;

  /** @param dir folder for the model files; null keeps everything in memory. */
  constructor(dir: string | null) {
    this.#dir = dir;
    if (dir !== null) ensurePrivateDirSync(dir);
  }

  /** The adapter factory for oidc-provider (`new Provider(issuer, { adapter: store.adapter })`). */
  readonly adapter = (name: string): Adapter => new ModelAdapter(this, name);

  /** Entries currently held for a model (tests and diagnostics; never returns ids). */
  count(model: string): number {
    return this.#table(model).size;
  }

  /** Waits until every pending file write has finished. */
  async flush(): Promise<void> {
    await Promise.all([...this.#writes.values()]);
  }

  /** Flushes, then refuses further writes to disk (memory keeps working until the process ends). */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
  }

  #path(model: string): string | null {
    return this.#dir === null ? null : join(this.#dir, `${model}.json`);
  }

  /** @internal */
  _table(model: string): Map<string, Entry> {
    return this.#table(model);
  }

  #table(model: string): Map<string, Entry> {
    if (!MODEL_NAME.test(model)) throw new TypeError('invalid model name');
    let table = this.#models.get(model);
    if (table === undefined) {
      table = new Map();
      const path = this.#path(model);
      if (path !== null) {
        const stored = readJsonFileSync(path, 'a hub data file') as ModelFile | null;
        if (stored !== null && stored.format === 'companion-hub-oidc-store-v1' && typeof stored.entries === 'object') {
          const now = nowSeconds();
          for (const [key, entry] of Object.entries(stored.entries)) {
            if (entry.expiresAt === undefined || entry.expiresAt > now) table.set(key, entry);
          }
        }
      }
      this.#models.set(model, table);
    }
    return table;
  }

  /** @internal Persists a model's table (serialised per model; each write takes the latest state). */
  _persist(model: string): Promise<void> {
    const path = this.#path(model);
    if (path === null || this.#closed) return Promise.resolve();
    const previous = this.#writes.get(model) ?? Promise.resolve();
    const next = previous.then(() => {
      const entries: Record<string, Entry> = {};
      for (const [key, entry] of this.#table(model)) entries[key] = entry;
      const file: ModelFile = { format: 'companion-hub-oidc-store-v1', entries };
      writePrivateFileAtomicSync(path, JSON.stringify(file));
    });
    this.#writes.set(
      model,
      next.catch(() => undefined),
    );
    return next;
  }
}

class ModelAdapter implements Adapter {
  readonly #store: OidcStore;
  readonly #model: string;

  constructor(store: OidcStore, model: string) {
    this.#store = store;
    this.#model = model;
    store._table(model);
  }

  #live(key: string): Entry | undefined {
    const table = this.#store._table(this.#model);
    const entry = table.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= nowSeconds()) {
      table.delete(key);
      return undefined;
    }
    return entry;
  }

  #restore(id: string, entry: Entry): AdapterPayload {
    const payload = structuredClone(entry.payload);
    if (entry.idIsJti === true) payload.jti = id;
    return payload;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    const stored = structuredClone(payload);
    const idIsJti = this.#model !== 'Session' && stored.jti === id;
    if (idIsJti) delete stored.jti;
    const entry: Entry = { payload: stored };
    if (Number.isFinite(expiresIn) && expiresIn > 0) entry.expiresAt = nowSeconds() + Math.ceil(expiresIn);
    if (idIsJti) entry.idIsJti = true;
    this.#store._table(this.#model).set(keyOf(id), entry);
    await this.#store._persist(this.#model);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const entry = this.#live(keyOf(id));
    return entry === undefined ? undefined : this.#restore(id, entry);
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    for (const [key, entry] of this.#store._table(this.#model)) {
      if (entry.payload.uid === uid && this.#live(key) !== undefined) return structuredClone(entry.payload);
    }
    return undefined;
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    for (const [key, entry] of this.#store._table(this.#model)) {
      if (entry.payload.userCode === userCode && this.#live(key) !== undefined && entry.idIsJti !== true)
        return structuredClone(entry.payload);
    }
    return undefined;
  }

  async consume(id: string): Promise<void> {
    const entry = this.#live(keyOf(id));
    if (entry === undefined) return;
    entry.payload.consumed = nowSeconds();
    await this.#store._persist(this.#model);
  }

  async destroy(id: string): Promise<void> {
    if (this.#store._table(this.#model).delete(keyOf(id))) await this.#store._persist(this.#model);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    const table = this.#store._table(this.#model);
    let changed = false;
    for (const [key, entry] of table) {
      if (entry.payload.grantId === grantId) {
        table.delete(key);
        changed = true;
      }
    }
    if (changed) await this.#store._persist(this.#model);
  }
}
