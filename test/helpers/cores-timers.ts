// A manual clock for the admission core (unit and property tiers only): timers fire when advanced.
import type { AdmissionTimers } from '../../src/core/admission.js';

export interface ManualTimers extends AdmissionTimers {
  /** Moves time forward and runs every timer that is due, in order. */
  advance(ms: number): void;
  /** Timers still pending. */
  pending(): number;
  now(): number;
}

export function manualTimers(): ManualTimers {
  let now = 0;
  let nextId = 0;
  const timers = new Map<number, { at: number; callback: () => void }>();
  return {
    setTimeout(callback, ms) {
      const id = ++nextId;
      timers.set(id, { at: now + ms, callback });
      return id;
    },
    clearTimeout(handle) {
      timers.delete(handle as number);
    },
    advance(ms) {
      now += ms;
      for (;;) {
        const due = [...timers].filter(([, t]) => t.at <= now).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
        if (due === undefined) return;
        timers.delete(due[0]);
        due[1].callback();
      }
    },
    pending: () => timers.size,
    now: () => now,
  };
}

/** Lets promise callbacks run. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
