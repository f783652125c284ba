/**
 * The few `Reflect` metadata functions that @peculiar/x509's dependency injection (tsyringe) needs
 * before it loads. The usual answer is the `reflect-metadata` package; this project has no such
 * dependency, and tsyringe uses only define/get/has metadata, so a WeakMap-backed version is enough.
 * Installed only where `Reflect.getMetadata` is missing; imported by ca.ts before @peculiar/x509.
 */
type Key = string | symbol;
type Bucket = Map<unknown, unknown>;

const store = new WeakMap<object, Map<Key | undefined, Bucket>>();

function bucket(target: object, property: Key | undefined, create: boolean): Bucket | undefined {
  let byProperty = store.get(target);
  if (byProperty === undefined) {
    if (!create) return undefined;
    byProperty = new Map();
    store.set(target, byProperty);
  }
  let found = byProperty.get(property);
  if (found === undefined && create) {
    found = new Map();
    byProperty.set(property, found);
  }
  return found;
}

function* chain(target: object): Generator<object> {
  for (let current: object | null = target; current !== null; current = Object.getPrototypeOf(current) as object | null)
    yield current;
}

const polyfill = {
  defineMetadata(key: unknown, value: unknown, target: object, property?: Key): void {
    bucket(target, property, true)!.set(key, value);
  },
  getOwnMetadata(key: unknown, target: object, property?: Key): unknown {
    return bucket(target, property, false)?.get(key);
  },
  hasOwnMetadata(key: unknown, target: object, property?: Key): boolean {
    return bucket(target, property, false)?.has(key) ?? false;
  },
  getMetadata(key: unknown, target: object, property?: Key): unknown {
    for (const level of chain(target)) {
      const found = bucket(level, property, false);
      if (found?.has(key)) return found.get(key);
    }
    return undefined;
  },
  hasMetadata(key: unknown, target: object, property?: Key): boolean {
    for (const level of chain(target)) if (bucket(level, property, false)?.has(key)) return true;
    return false;
  },
  metadata(key: unknown, value: unknown) {
    return (target: object, property?: Key): void => polyfill.defineMetadata(key, value, target, property);
  },
};

const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== 'function') {
  for (const [name, fn] of Object.entries(polyfill)) {
    Object.defineProperty(Reflect, name, { value: fn, configurable: true, writable: true });
  }
}

export {};
