/**
 * The data directory's layout: where each file of an installation lives. One definition, read by the
 * shell (config, lock, CLI) and the runtime group (discovery, published state, models).
 */
import { join } from 'node:path';

/** Folders inside the data dir. */
export function layout(dataDir: string) {
  return {
    dataDir,
    models: join(dataDir, 'models'),
    run: join(dataDir, 'run'),
    /** The discovery file local clients read (URL and pid, no token). */
    discovery: join(dataDir, 'run', 'endpoint.json'),
    /** The state `up` publishes for `status` (no secret). */
    state: join(dataDir, 'run', 'state.json'),
    /** The single-instance lock `up` holds while it runs (pid, start time, executable). */
    upLock: join(dataDir, 'run', 'up.lock'),
    /** The runtime's lock/state file for stale reclaim. */
    runtimeLock: join(dataDir, 'run', 'runtime.lock'),
    /** The last manifest version seen (rollback protection). */
    manifestVersion: join(dataDir, 'manifest-version.json'),
    /** The remembered settings (`login`, `config set`): hub, CA file, manifest key, threads. No secret. */
    configFile: join(dataDir, 'config.json'),
  };
}
