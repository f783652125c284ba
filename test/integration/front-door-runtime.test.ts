// The front door in front of the REAL runtime with real inference (tiny GGUF, threads 1), driven by the
// official openai SDK exactly as a local client would use it: base URL `door.url + '/v1'`, API key = the
// loopback token. The same calls run against a runtime on its Unix socket, the same runtime inside the
// bubblewrap sandbox (issue 10: inference through the front door works unchanged), and a runtime on
// loopback TCP (the front door adds the per-spawn key). At temperature 0 all three give the same text.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolveSandbox } from '../../src/runtime/manager/sandbox-choice.js';
import { gate } from '../helpers/gate.js';
import { bwrapPresent, BWRAP } from '../helpers/sandbox-run.js';
import { startRuntimeDoor, type RuntimeDoor } from '../helpers/front-door-runtime.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];
const outputs = new Map<string, { chat: string; streamed: string; completion: string }>();

function record(mode: string, key: 'chat' | 'streamed' | 'completion', text: string): void {
  const entry = outputs.get(mode) ?? { chat: '', streamed: '', completion: '' };
  entry[key] = text;
  outputs.set(mode, entry);
}

function lastRequest(rd: RuntimeDoor): { method: string; path: string; status: number } {
  const event = rd.requests.at(-1)!;
  return { method: event.method, path: event.path, status: event.status };
}

for (const mode of ['socket', 'sandboxed'] as const) {
  const options = mode === 'sandboxed' ? gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap') : {};
  describe(`startFrontDoor() in front of the real runtime (${mode})`, options, () => {
    let rd: RuntimeDoor;

    before(async () => {
      const wrap = mode === 'sandboxed' ? (await resolveSandbox('required', () => undefined)).wrap : undefined;
      if (mode === 'sandboxed') assert.ok(wrap !== undefined, 'a full sandbox is available');
      rd = await startRuntimeDoor(wrap === undefined ? {} : { wrap });
    });
    after(() => rd?.close());

    if (mode === 'sandboxed') {
      test('the runtime behind the front door runs inside bubblewrap', () => {
        const argv = readFileSync(`/proc/${rd.handle.pid}/cmdline`, 'latin1').split('\0');
        assert.equal(argv[0], BWRAP);
        assert.ok(argv.includes('--unshare-all'), 'new namespaces, network included');
      });
    }

    test('the openai SDK gets a chat completion through the front door with the loopback token', async () => {
      const reply = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 12,
        temperature: 0,
      });
      const text = reply.choices[0]?.message.content ?? '';
      assert.ok(text.length > 0, 'the model generated text');
      assert.equal(reply.choices[0]?.finish_reason, 'length');
      assert.equal(reply.usage?.completion_tokens, 12);
      assert.equal(reply.model, 'tiny');
      assert.deepEqual(lastRequest(rd), { method: 'POST', path: '/v1/chat/completions', status: 200 });
      record(mode, 'chat', text);
    });

    test('the openai SDK streams a chat completion through the front door, token by token, to the same text', async () => {
      const stream = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 12,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = '';
      let chunks = 0;
      let finish: string | null = null;
      let usage: number | undefined;
      for await (const chunk of stream) {
        chunks++;
        text += chunk.choices[0]?.delta.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
        usage = chunk.usage?.completion_tokens ?? usage;
      }
      assert.ok(chunks > 3, `several SSE events arrived (${chunks})`);
      assert.equal(finish, 'length');
      assert.equal(usage, 12);
      assert.equal(text, outputs.get(mode)?.chat, 'streamed and non-streamed text agree at temperature 0');
      record(mode, 'streamed', text);
    });

    test('the openai SDK gets a text completion through the front door', async () => {
      const reply = await rd.openai.completions.create({
        model: 'tiny',
        prompt: 'Once upon',
        max_tokens: 8,
        temperature: 0,
      });
      assert.ok((reply.choices[0]?.text ?? '').length > 0);
      assert.equal(reply.usage?.completion_tokens, 8);
      assert.deepEqual(lastRequest(rd), { method: 'POST', path: '/v1/completions', status: 200 });
      record(mode, 'completion', reply.choices[0]!.text);
    });

    test('the openai SDK lists the one model through the front door', async () => {
      const models = [];
      for await (const model of rd.openai.models.list()) models.push(model.id);
      assert.deepEqual(models, ['tiny']);
      assert.ok(!rd.stderr.join('\n').includes(rd.token), 'the loopback token never reaches the runtime');
    });

    if (mode === 'sandboxed') {
      test('inference through the front door gives the same text inside the sandbox as outside', (t) => {
        const plain = outputs.get('socket');
        if (plain === undefined || plain.chat === '') {
          t.skip('the socket run did not record its outputs');
          return;
        }
        assert.deepEqual(outputs.get('sandboxed'), plain);
      });
    }
  });
}

test('startFrontDoor() reaches a runtime on loopback TCP with its per-spawn key, never the loopback token', async (t) => {
  const rd = await startRuntimeDoor({ bind: 'tcp' });
  t.after(() => rd.close());
  assert.equal(rd.handle.address.kind, 'tcp');
  const models = await rd.openai.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['tiny'],
  );
  const reply = await rd.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 12,
    temperature: 0,
  });
  const plain = outputs.get('socket')?.chat;
  if (plain !== undefined && plain !== '') assert.equal(reply.choices[0]?.message.content, plain);
  else assert.ok((reply.choices[0]?.message.content ?? '').length > 0);
});
