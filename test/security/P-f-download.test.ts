// P-f secret leakage, at the install: no error and no event of a pull or of the pre-load check names the
// model digest (or the hash of it that the record keeps) or a path on this machine, however it is
// printed (message, stack, String, JSON, util.inspect with hidden fields, detail, cause chain).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { createTlsAgent } from '../../src/common/tls.js';
import { createHubTls } from '../../src/hub/ca.js';
import { checkInstalledModel } from '../../src/runtime/manager/install.js';
import { MIB, SMALL, startDownloadHub, type PullRun } from '../helpers/download-hub.js';

function renderings(error: unknown): string[] {
  const out: string[] = [];
  for (
    let e = error, depth = 0;
    e !== undefined && e !== null && depth < 5;
    e = (e as { cause?: unknown }).cause, depth += 1
  ) {
    out.push(String(e), inspect(e, { showHidden: true, depth: 10 }), JSON.stringify(e) ?? '');
    if (e instanceof Error) out.push(e.message, e.stack ?? '');
    out.push(JSON.stringify((e as { detail?: unknown }).detail ?? null));
  }
  return out;
}

test('P-f no error or event of a failing pull or check names the model digest or a local path', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const runs: PullRun[] = [];
  const errors: unknown[] = [];
  const misbehaviours = [
    { flipByteAt: randomInt(0, model.size) },
    { contentLengthDelta: -7 },
    { contentLengthDelta: 7 },
    { cutAfterBytes: MIB },
    { redirectToHttp: true },
    { stallAfterBytes: 1000 },
  ];
  const stallAgent = dh.agentWith({ bodyTimeoutMs: 200 });
  // Each case in a models folder of its own (all under dh.dir, whose path must not show either).
  let n = 0;
  const fresh = (): string => join(dh.dir, `models-${(n += 1)}`);
  for (const misbehaviour of misbehaviours) {
    dh.hub.setMisbehaviour(misbehaviour);
    runs.push(await dh.pull(model, { dispatcher: stallAgent, modelsDir: fresh() }));
  }
  // A resume that then hits a flipped byte; a full disk, an I/O error, a CA that is not trusted.
  const resumed = fresh();
  dh.hub.setMisbehaviour({ cutAfterBytes: MIB });
  runs.push(await dh.pull(model, { modelsDir: resumed }));
  dh.hub.setMisbehaviour({ flipByteAt: 2 * MIB });
  runs.push(await dh.pull(model, { modelsDir: resumed }));
  dh.hub.setMisbehaviour({});
  runs.push(
    await dh.pull(model, {
      modelsDir: fresh(),
      writeFault: {
        afterBatches: 0,
        error: 'ENOSPC',
        message: `ENOSPC: no space left on device, write '${dh.modelsDir}'`,
        path: dh.modelsDir,
      },
    }),
  );
  runs.push(
    await dh.pull(model, {
      modelsDir: fresh(),
      writeFault: {
        afterBatches: 0,
        error: 'EIO',
        message: `EIO: i/o error, write '${dh.modelsDir}'`,
        path: dh.modelsDir,
      },
    }),
  );
  const other = await createHubTls();
  const wrongCa = createTlsAgent({ extraCas: [other.ca.certPem] });
  t.after(() => wrongCa.close());
  runs.push(await dh.pull(model, { dispatcher: wrongCa, modelsDir: fresh() }));
  // A models folder that cannot be created (a file in its place).
  await writeFile(join(dh.dir, 'blocked'), 'x');
  runs.push(await dh.pull(model, { modelsDir: join(dh.dir, 'blocked', 'models') }));
  // The pre-load check: nothing installed, then a changed file.
  errors.push(await checkInstalledModel(dh.modelsDir).catch((e: unknown) => e));
  assert.equal((await dh.pull(model)).error, null);
  const handle = await open(join(dh.modelsDir, `${model.id}.gguf`), 'r+');
  await handle.write(Buffer.from([1, 2, 3]), 0, 3, 100);
  await handle.close();
  errors.push(await checkInstalledModel(dh.modelsDir).catch((e: unknown) => e));
  await rm(join(dh.modelsDir, `${model.id}.gguf`));
  errors.push(await checkInstalledModel(dh.modelsDir).catch((e: unknown) => e));

  const failed = runs.filter((r) => r.error !== null);
  const codes = failed.map((r) => r.error!.code);
  for (const code of [
    'ERR_INTEGRITY_DIGEST',
    'ERR_INTEGRITY_SIZE_UNDER',
    'ERR_INTEGRITY_SIZE_OVER',
    'ERR_DOWNLOAD_NETWORK',
    'ERR_DOWNLOAD_NOT_HTTPS',
    'ERR_DOWNLOAD_STALLED',
    'ERR_DISK_SPACE',
    'ERR_DISK_WRITE',
    'ERR_DOWNLOAD_TLS',
  ]) {
    assert.ok(codes.includes(code), `${code} was exercised (got ${codes.join(', ')})`);
  }
  assert.deepEqual(
    errors.map((e) => (e as { code?: string }).code),
    ['ERR_MODEL_NOT_INSTALLED', 'ERR_MODEL_CHANGED', 'ERR_MODEL_NOT_INSTALLED'],
  );

  const secrets = [
    model.sha256,
    model.sha256.toUpperCase(),
    createHash('sha256').update(model.sha256).digest('hex'),
    dh.dir,
    dh.modelsDir,
    `${model.id}.gguf`,
    '.part',
  ];
  const texts = [
    ...failed.flatMap((r) => renderings(r.error)),
    ...errors.flatMap(renderings),
    ...runs.flatMap((r) => r.events.map((e) => JSON.stringify(e))),
  ];
  assert.ok(texts.length > 50);
  for (const text of texts) {
    for (const secret of secrets)
      assert.ok(
        !text.includes(secret),
        `a rendering shows ${secret === model.sha256 ? 'the digest' : JSON.stringify(secret)}: ${text.slice(0, 200)}`,
      );
  }
});
