/**
 * Stop sequences over streamed text, for the (legacy) completions path. node-llama-cpp 3.21's
 * `LlamaCompletion` matches `customStopTriggers` against each token detokenized on its own, which drops
 * the leading space of SentencePiece pieces, so a stop holding a space never matched (issue 17); its
 * streamed text is detokenized in context and is right. This scans that text instead. Pure: no I/O.
 */

export interface StopScan {
  /** Text now safe to send: it cannot be the start of a stop sequence. */
  readonly emit: string;
  /** True once a stop sequence appeared; the text before it has been emitted and nothing after. */
  readonly stopped: boolean;
}

export interface StopScanner {
  /** Feeds the next piece of generated text. */
  push(piece: string): StopScan;
  /** The generation ended without a stop: the held-back rest. */
  flush(): string;
  /** Everything emitted so far (the response text). */
  readonly text: string;
}

/** A scanner for `stops` (non-empty strings). With no stops every piece is emitted at once. */
export function createStopScanner(stops: readonly string[]): StopScanner {
  let pending = '';
  let emitted = '';
  let stopped = false;
  return {
    push(piece) {
      if (stopped) return { emit: '', stopped: true };
      pending += piece;
      let cut = -1;
      for (const stop of stops) {
        const at = pending.indexOf(stop);
        if (at !== -1 && (cut === -1 || at < cut)) cut = at;
      }
      if (cut !== -1) {
        stopped = true;
        const emit = pending.slice(0, cut);
        pending = '';
        emitted += emit;
        return { emit, stopped: true };
      }
      // Hold back the longest tail of the text that is a proper prefix of some stop.
      let hold = 0;
      for (const stop of stops) {
        for (let length = Math.min(stop.length - 1, pending.length); length > hold; length--) {
          if (pending.endsWith(stop.slice(0, length))) {
            hold = length;
            break;
          }
        }
      }
      const emit = pending.slice(0, pending.length - hold);
      pending = pending.slice(pending.length - hold);
      emitted += emit;
      return { emit, stopped: false };
    },
    flush() {
      const rest = stopped ? '' : pending;
      pending = '';
      emitted += rest;
      return rest;
    },
    get text() {
      return emitted;
    },
  };
}
