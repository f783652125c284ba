// D5.8 at run time: the runtime group, as the shell builds it, holds no authority. A V8 heap snapshot
// shows every strong reference, closures' captured variables included; walking it from the running
// runtime group (supervisor, front door, runtime handle, probe, …) must reach none of the authority
// group's objects (the group, custody, the keychain) and no token string. The walk does not pass through
// the global object or the native context, which reach the whole heap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { findModel } from '../../src/core/manifest.js';
import { pullModel } from '../../src/runtime/manager/install.js';
import { layout } from '../../src/common/layout.js';
import { startRuntimeGroup } from '../../src/runtime/manager/group.js';
import { startCompanionHub } from '../helpers/companion-hub.js';

/** Marks an object so it can be found in a heap snapshot by its constructor name. */
class RuntimeGroupRoot {
  constructor(readonly target: unknown) {}
}
/** A stand-in that *does* capture custody in a closure: the walk must find it (the test can fail). */
class LeakyControl {
  constructor(readonly target: unknown) {}
}
class AuthorityTarget {
  constructor(readonly target: unknown) {}
}

interface Graph {
  readonly nodeCount: number;
  name(node: number): string;
  type(node: number): string;
  edges(node: number): Array<{ type: string; name: string; to: number }>;
}

/** Parses a V8 heap snapshot into an adjacency view. */
function parseSnapshot(json: string): Graph {
  const snap = JSON.parse(json) as {
    snapshot: {
      meta: { node_fields: string[]; edge_fields: string[]; node_types: [string[]]; edge_types: [string[]] };
    };
    nodes: number[];
    edges: number[];
    strings: string[];
  };
  const { node_fields: nf, edge_fields: ef, node_types: nt, edge_types: et } = snap.snapshot.meta;
  const N = nf.length;
  const E = ef.length;
  const nodeCount = snap.nodes.length / N;
  const firstEdge = new Uint32Array(nodeCount + 1);
  for (let i = 0, e = 0; i < nodeCount; i++) {
    firstEdge[i] = e;
    e += snap.nodes[i * N + nf.indexOf('edge_count')]! * E;
    firstEdge[i + 1] = e;
  }
  return {
    nodeCount,
    name: (n) => snap.strings[snap.nodes[n * N + nf.indexOf('name')]!]!,
    type: (n) => nt[0][snap.nodes[n * N + nf.indexOf('type')]!]!,
    edges(n) {
      const out: Array<{ type: string; name: string; to: number }> = [];
      for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += E) {
        const type = et[0][snap.edges[e + ef.indexOf('type')]!]!;
        const raw = snap.edges[e + ef.indexOf('name_or_index')]!;
        const name = type === 'element' || type === 'hidden' ? String(raw) : snap.strings[raw]!;
        out.push({ type, name, to: snap.edges[e + ef.indexOf('to_node')]! / N });
      }
      return out;
    },
  };
}

/** The node that `marker`'s `target` property points at. */
function targetOf(graph: Graph, markerName: string): number[] {
  const found: number[] = [];
  for (let n = 0; n < graph.nodeCount; n++) {
    if (graph.type(n) === 'object' && graph.name(n) === markerName) {
      const edge = graph.edges(n).find((e) => e.name === 'target');
      if (edge) found.push(edge.to);
    }
  }
  return found;
}

/**
 * Everything reachable from `root` through strong edges, closures' contexts included, but not through
 * the global object or the native context: those reach the whole heap (the test itself included) and
 * are not the runtime group's own references.
 */
/** The script URL a closure's code comes from ('' when unknown). */
function scriptOf(graph: Graph, closure: number): string {
  const shared = graph.edges(closure).find((e) => e.name === 'shared');
  if (shared === undefined) return '';
  const script = graph.edges(shared.to).find((e) => e.name === 'script_or_debug_info' || e.name === 'script');
  return script === undefined ? '' : graph.name(script.to);
}

function reachableFrom(graph: Graph, root: number): Map<number, [number, string]> {
  const seen = new Map<number, [number, string]>([[root, [-1, 'root']]]);
  const queue = [root];
  while (queue.length > 0) {
    const node = queue.pop()!;
    for (const edge of graph.edges(node)) {
      if (edge.type === 'weak' || edge.type === 'shortcut' || seen.has(edge.to)) continue;
      // Shared code, not instance state: prototypes, constructors and hidden classes lead into Node's
      // internals (event emitters, async hooks, the test runner) and from there to anything.
      if (edge.name === '__proto__' || edge.name === 'prototype' || edge.name === 'constructor' || edge.name === 'map')
        continue;
      // Node links every timer of one duration into a process-wide list (`_idleNext`/`_idlePrev`): a
      // timer of the group and one of the authority that happen to share a duration are neighbours there.
      // That list is Node's global bookkeeping, as the global object is, not a reference the group holds.
      if (edge.name === '_idleNext' || edge.name === '_idlePrev') continue;
      // A closure's captured scope is followed for Companion's own code (where a reference to authority
      // would be); Node's built-in closures capture Node's shared module state, not the group's.
      if (
        edge.name === 'context' &&
        graph.type(node) === 'closure' &&
        !scriptOf(graph, node).includes('/dist/src/') &&
        !scriptOf(graph, node).includes('/dist/test/')
      )
        continue;
      const name = graph.name(edge.to);
      if (
        name === 'system / NativeContext' ||
        name.startsWith('global') ||
        name === 'Window' ||
        graph.type(edge.to) === 'synthetic'
      )
        continue;
      seen.set(edge.to, [node, `${edge.type}:${edge.name}`]);
      queue.push(edge.to);
    }
  }
  return seen;
}

/** The chain of edges from the walk's root to `node`, for a failure message. */
function pathTo(graph: Graph, seen: Map<number, [number, string]>, node: number): string {
  const steps: string[] = [];
  for (let n = node, i = 0; n !== -1 && i < 40; i++) {
    const [parent, edge] = seen.get(n) ?? [-1, '?'];
    steps.push(`${graph.type(n)} ${graph.name(n).slice(0, 40)} <-${edge}-`);
    n = parent;
  }
  return steps.reverse().join('\n');
}

test('the running runtime group reaches no authority object and no token', { timeout: 60_000 }, async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const manifest = await authority.fetchManifest();
  const paths = layout(ch.dir);
  await pullModel({
    model: findModel(manifest),
    manifestVersion: manifest.version,
    modelsDir: paths.models,
    dispatcher: ch.agent,
  });
  const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
  const companion = await startRuntimeGroup({ dataDir: ch.dir, verifyToken, attest, threads: 1, sandboxMode: 'none' });
  t.after(() => companion.close());
  assert.ok(await companion.supervisor.waitAvailable(30_000));

  const secrets = [
    (await authority.loopbackToken())!.reveal(),
    (await authority.custody.refreshToken())!.reveal(),
    (await authority.custody.accessTokenIfFresh())!.reveal(),
  ];
  // Mark the roots, then take a heap snapshot: closures' captured variables are edges there.
  const custody = authority.custody;
  const leaky = { describe: () => custody.state() };
  const markers = [
    new LeakyControl(leaky),
    new RuntimeGroupRoot(companion),
    new AuthorityTarget(authority),
    new AuthorityTarget(authority.custody),
    new AuthorityTarget(authority.keychain),
  ];
  const graph = parseSnapshot(readFileSync(writeHeapSnapshot(join(ch.dir, 'heap.heapsnapshot')), 'utf8'));
  assert.equal(markers.length, 5);
  const [root] = targetOf(graph, 'RuntimeGroupRoot');
  assert.ok(root !== undefined, 'the runtime group is in the snapshot');
  const authorityNodes = targetOf(graph, 'AuthorityTarget');
  assert.equal(authorityNodes.length, 3);
  const seen = reachableFrom(graph, root);
  assert.ok(seen.size > 1_000, `the walk followed closures and contexts (${seen.size} nodes)`);
  for (const node of authorityNodes)
    assert.ok(
      !seen.has(node),
      `an authority object is reachable from the runtime group:\n${seen.has(node) ? pathTo(graph, seen, node) : ''}`,
    );
  // Negative control: the same walk from an object whose closure captures custody does reach it.
  const [control] = targetOf(graph, 'LeakyControl');
  assert.ok(
    control !== undefined && authorityNodes.some((n) => reachableFrom(graph, control).has(n)),
    'the walk finds authority captured in a closure',
  );
  const reachableStrings = [...seen.keys()]
    .filter(
      (n) => graph.type(n) === 'string' || graph.type(n) === 'concatenated string' || graph.type(n) === 'sliced string',
    )
    .map((n) => graph.name(n));
  for (const secret of secrets)
    assert.ok(!reachableStrings.some((s) => s.includes(secret)), 'no token string is reachable from the runtime group');
  await companion.close();
  assert.equal(verifyToken(secrets[0]!), true, 'the verifier it holds does check the real token');
});
