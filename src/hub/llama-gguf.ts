/**
 * Synthetic llama models at named sizes, deterministic from a seed: `tiny` (the demo model of
 * tiny-gguf.ts, F32, about 540 KB) and `smol135m` (SmolLM2-135M's shape: n_embd 576, 30 layers, 9 heads,
 * 3 KV heads, n_ff 1536, context 8192, a vocabulary of 8,192 pieces, Q8_0 tensors, about 120 MB).
 * The weights are random, so the text is gibberish, but the arithmetic per token, the memory and the
 * file size are those of a real model of that shape: benches and load tests measure real work.
 *
 * The file is produced as a sequence of chunks (header, then one chunk per tensor), never as one Buffer,
 * so a caller streams it to disk or into a hash. The quantized weights are the AES-128-CTR keystream of a
 * key derived from the seed and the tensor name (fast, and each tensor independent of the others).
 *
 * No file I/O here: the hub decides where the bytes go. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 */
import { createCipheriv, createHash } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { invalidArgument } from './args.js';
import * as gguf from './gguf-writer.js';
import { generateTinyGguf, pieces } from './tiny-gguf.js';

/** The shape of a synthetic llama. */
export interface LlamaShape {
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly nFf: number;
  /** Total tokens: 3 specials, 256 byte tokens, the scored pieces and the 2 ChatML control tokens. */
  readonly vocabSize: number;
  /** The trained context written in the metadata. */
  readonly contextLength: number;
}

/** The named sizes. `tiny` is exactly the bytes of `generateTinyGguf()`. */
export const SYNTHETIC_LLAMA_PRESETS = Object.freeze({
  tiny: Object.freeze({ nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 4, nFf: 128, vocabSize: 0, contextLength: 2048 }),
  smol135m: Object.freeze({
    nEmbd: 576,
    nLayer: 30,
    nHead: 9,
    nHeadKv: 3,
    nFf: 1536,
    vocabSize: 8192,
    contextLength: 8192,
  }),
} satisfies Record<string, LlamaShape>);

export type SyntheticLlamaPreset = keyof typeof SYNTHETIC_LLAMA_PRESETS;

/** True when `name` is a preset name. */
export function isSyntheticLlamaPreset(name: string): name is SyntheticLlamaPreset {
  return Object.prototype.hasOwnProperty.call(SYNTHETIC_LLAMA_PRESETS, name);
}

/** Options of {@link syntheticLlamaGguf}. */
export interface SyntheticLlamaOptions {
  /** Seed of the weights (an unsigned 32-bit integer; default 1). Same preset and seed, same bytes. */
  readonly seed?: number;
  /**
   * Fewer layers than the preset (same widths): a cheaper model of the same shape for test suites.
   * Not for `tiny`.
   */
  readonly layers?: number;
}

/** A generated file: its exact size up front, and its bytes as chunks. */
export interface SyntheticLlamaFile {
  /** `companion-<preset>-<seed>` (plus `-l<layers>` when reduced), as written in `general.name`. */
  readonly name: string;
  readonly size: number;
  /** Yields the file's bytes in order; each call starts again from the first byte. */
  chunks(): Generator<Buffer>;
}

/** Bumped whenever the bytes for a given preset and seed change: caches key on it. */
export const SYNTHETIC_LLAMA_FORMAT = 1;

const GGML_Q8_0 = 8;
const QK8_0 = 32;
const Q8_0_BLOCK_BYTES = 34;
const FILE_TYPE_MOSTLY_Q8_0 = 7;

const MORE_WORDS = [
  'a',
  'I',
  'he',
  'she',
  'they',
  'his',
  'her',
  'their',
  'will',
  'would',
  'there',
  'what',
  'so',
  'up',
  'out',
  'if',
  'about',
  'who',
  'get',
  'which',
  'go',
  'me',
  'when',
  'make',
  'like',
  'time',
  'no',
  'just',
  'him',
  'know',
  'take',
  'people',
  'into',
  'year',
  'your',
  'good',
  'some',
  'could',
  'them',
  'see',
  'other',
  'than',
  'then',
  'now',
  'look',
  'only',
  'come',
  'its',
  'over',
  'think',
  'also',
  'back',
  'after',
  'use',
  'two',
  'how',
  'our',
  'work',
  'first',
  'well',
  'way',
  'even',
  'new',
  'want',
  'because',
  'any',
  'these',
  'give',
  'day',
  'most',
  'us',
  'tell',
  'story',
  'long',
  'once',
  'upon',
  'answer',
  'question',
  'data',
  'user',
  'text',
  'number',
  'name',
  'list',
  'file',
  'value',
  'true',
  'false',
  'null',
  'json',
  'code',
  'function',
  'return',
  'string',
  'The',
  'A',
  'It',
  'In',
  'This',
  'We',
  'You',
  'They',
  'What',
  'How',
  'Why',
  'Yes',
  'No',
];
const LETTERS = 'etaoinshrdlucmfwgypbvkjxqz';
const EXTRA_SINGLES = [
  ...'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ',
  ':',
  ';',
  '-',
  '(',
  ')',
  '"',
  '{',
  '}',
  '[',
  ']',
  '/',
  '*',
  '+',
  '=',
  '<',
  '>',
  '_',
  '#',
  '&',
  '%',
  '$',
  '@',
];

/**
 * `size` tokens: the tiny model's pieces, more words, digits, capitals and punctuation, every bigram of
 * a–z (with and without a word start), then trigrams of the commonest letters until the size is reached.
 * Every bigram is present, so the SentencePiece merges reach the trigrams; byte fallback covers the rest.
 */
function vocabulary(size: number): gguf.LlamaVocabulary {
  const wanted = size - gguf.NON_PIECE_TOKENS;
  const list = new Set<string>(pieces());
  for (const word of MORE_WORDS) list.add(gguf.SPACE + word);
  for (const single of EXTRA_SINGLES) {
    list.add(single);
    list.add(gguf.SPACE + single);
  }
  for (const a of LETTERS) for (const b of LETTERS) list.add(a + b);
  for (const a of LETTERS) for (const b of LETTERS) list.add(gguf.SPACE + a + b);
  outer: for (const a of LETTERS) {
    for (const b of LETTERS) {
      for (const c of LETTERS) {
        if (list.size >= wanted) break outer;
        list.add(a + b + c);
        if (list.size < wanted) list.add(gguf.SPACE + a + b + c);
      }
    }
  }
  return gguf.llamaVocabulary([...list].slice(0, wanted));
}

/** IEEE half-precision bits of a positive normal value (the Q8_0 block scale). */
function f16Bits(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0]!;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  if (exponent <= 0 || exponent >= 31) throw new RangeError('scale outside the half-precision normal range');
  const mantissa = (bits >>> 13) & 0x3ff;
  return (exponent << 10) | mantissa;
}

function keystream(seed: number, tensor: string, length: number): Buffer {
  const key = createHash('sha256')
    .update(`companion-llama-v${SYNTHETIC_LLAMA_FORMAT}\0${seed}\0${tensor}`, 'utf8')
    .digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return cipher.update(Buffer.alloc(length));
}

interface TensorPlan {
  readonly name: string;
  /** ggml dimensions, ne0 (the contiguous one) first. */
  readonly dims: readonly [number] | readonly [number, number];
  readonly type: typeof gguf.GGML_F32 | typeof GGML_Q8_0;
  readonly bytes: number;
  /** Largest absolute weight of each row (Q8_0); F32 tensors are all ones (norms). */
  readonly rowScale?: (row: number) => number;
}

/**
 * A norm is F32 ones; every other tensor is Q8_0 with a per-row scale: 0.5 for the token tables, except
 * the small rows of quiet tokens in the output projection (as tiny does), sqrt(3 / fan-in) for weights.
 */
function planOf(slot: gguf.LlamaTensorSlot, vocab: gguf.LlamaVocabulary): TensorPlan {
  const [ne0, ne1 = 1] = slot.dims;
  if (slot.role === 'norm') return { name: slot.name, dims: slot.dims, type: gguf.GGML_F32, bytes: ne0 * 4 };
  const weightScale = Math.sqrt(3 / slot.fanIn);
  const rowScale =
    slot.role === 'weight'
      ? () => weightScale
      : slot.role === 'output'
        ? (token: number) => (gguf.isQuietToken(vocab, token) ? 0.01 : 0.5)
        : () => 0.5;
  return { name: slot.name, dims: slot.dims, type: GGML_Q8_0, bytes: (ne0 / QK8_0) * ne1 * Q8_0_BLOCK_BYTES, rowScale };
}

/** The bytes of one tensor: ones for a norm, random Q8_0 blocks with a per-row scale otherwise. */
function tensorBytes(plan: TensorPlan, seed: number): Buffer {
  if (plan.type === gguf.GGML_F32) {
    const out = Buffer.alloc(plan.bytes);
    for (let i = 0; i < plan.dims[0]; i++) out.writeFloatLE(1, i * 4);
    return out;
  }
  const [ne0, ne1] = plan.dims as readonly [number, number];
  const quants = keystream(seed, plan.name, ne0 * ne1);
  const out = Buffer.allocUnsafe(plan.bytes);
  const blocksPerRow = ne0 / QK8_0;
  let o = 0;
  let q = 0;
  for (let row = 0; row < ne1; row++) {
    const d = f16Bits(plan.rowScale!(row) / 127);
    for (let block = 0; block < blocksPerRow; block++) {
      out.writeUInt16LE(d, o);
      quants.copy(out, o + 2, q, q + QK8_0);
      o += Q8_0_BLOCK_BYTES;
      q += QK8_0;
    }
  }
  return out;
}

function assertSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw invalidArgument('seed', 'an integer from 0 to 4294967295');
}

/**
 * Plans a synthetic llama of a preset. Nothing is generated until `chunks()` is iterated.
 *
 * @param preset a name of {@link SYNTHETIC_LLAMA_PRESETS}
 * @param options.seed unsigned 32-bit seed (default 1)
 * @param options.layers fewer layers (same widths), for test suites
 * @returns the file's size and a generator of its bytes
 * @throws TypeError ERR_INVALID_ARG_VALUE for an unknown preset, a bad seed or layer count
 */
export function syntheticLlamaGguf(preset: string, options: SyntheticLlamaOptions = {}): SyntheticLlamaFile {
  if (!isSyntheticLlamaPreset(preset))
    throw invalidArgument('preset', `one of ${Object.keys(SYNTHETIC_LLAMA_PRESETS).join(', ')}`);
  const seed = options.seed ?? 1;
  assertSeed(seed);
  const shape: LlamaShape = SYNTHETIC_LLAMA_PRESETS[preset];
  if (preset === 'tiny') {
    if (options.layers !== undefined) throw invalidArgument('layers', 'absent for the tiny preset');
    const bytes = generateTinyGguf({ seed });
    return {
      name: `companion-tiny-${seed}`,
      size: bytes.length,
      *chunks() {
        yield Buffer.from(bytes);
      },
    };
  }
  const nLayer = options.layers ?? shape.nLayer;
  if (!Number.isInteger(nLayer) || nLayer < 1 || nLayer > shape.nLayer)
    throw invalidArgument('layers', `an integer from 1 to ${shape.nLayer}`);
  const name = `companion-${preset}-${seed}${nLayer === shape.nLayer ? '' : `-l${nLayer}`}`;
  const vocab = vocabulary(shape.vocabSize);
  const plans = gguf.llamaTensorSlots(shape, nLayer, vocab.tokens.length).map((slot) => planOf(slot, vocab));
  const metadata = gguf.llamaMetadata({
    ...shape,
    name,
    fileType: FILE_TYPE_MOSTLY_Q8_0,
    nLayer,
    ropeFreqBase: 100000,
    vocab,
  });
  const { head, size } = gguf.ggufHeader(metadata, plans);
  return { name, size, chunks: () => gguf.ggufChunks(head, plans, (plan) => tensorBytes(plan, seed)) };
}
