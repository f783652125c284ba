/**
 * The first outcome of a callback-driven promise wins: a request, a timer and its error events race to
 * resolve one promise, and each must clean up (clear the timer, destroy the request) exactly once.
 */

/**
 * Wraps `resolve` so that only the first call counts; `cleanup` runs once, just before it. Later calls
 * do nothing.
 */
export function settleOnce<T>(resolve: (value: T) => void, cleanup: () => void): (value: T) => void {
  let settled = false;
  return (value) => {
    if (settled) return;
    settled = true;
    cleanup();
    resolve(value);
  };
}
