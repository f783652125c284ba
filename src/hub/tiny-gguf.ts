/**
 * A tiny, valid GGUF v3 llama model with random weights, generated in memory and deterministic from a
 * seed (PLATFORM.md, "A tiny GGUF model, generated"). It loads in llama.cpp (node-llama-cpp), round-trips
 * text through its SentencePiece-style vocabulary (byte fallback covers every input) and generates
 * gibberish deterministically at temperature 0. Every test tier and the reference hub's model host use it.
 *
 * Shape: 2 layers, n_embd 64, 4 heads, n_ff 128, context 2048, F32 tensors, about 540 KB. Vocabulary:
 * `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`…`<0xFF>` (type 6), about 100 scored pieces, and
 * the two ChatML control tokens `<|im_start|>` / `<|im_end|>` used by the embedded `tokenizer.chat_template`.
 *
 * No file I/O here on purpose: the hub imports it and decides where the bytes go.
 * Format reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 */
import { Buffer } from 'node:buffer';
import { CodedTypeError } from '../core/errors.js';
import {
  GGML_F32,
  SPACE,
  ggufChunks,
  ggufHeader,
  isQuietToken,
  llamaMetadata,
  llamaTensorSlots,
  llamaVocabulary,
  type LlamaTensorSlot,
  type LlamaVocabulary,
  type TensorInfo,
} from './gguf-writer.js';

/** Options of {@link generateTinyGguf}. */
export interface TinyGgufOptions {
  /** Seed of the weights (an unsigned 32-bit integer; default 1). Same seed, same bytes. */
  readonly seed?: number;
  /**
   * Metadata keys to leave out, to make a deliberately broken model for fault tests (for example
   * `llama.attention.head_count`, without which llama.cpp aborts the process). Never needed otherwise.
   */
  readonly omitMetadata?: readonly string[];
}

/** 2 layers, n_embd 64, 4 heads (as many KV heads), n_ff 128, a trained context of 2048. */
const SHAPE = { nEmbd: 64, nHead: 4, nHeadKv: 4, nFf: 128, nLayer: 2, contextLength: 2048 } as const;

const WORDS = [
  'the',
  'and',
  'of',
  'to',
  'in',
  'is',
  'it',
  'that',
  'for',
  'on',
  'with',
  'as',
  'was',
  'hello',
  'world',
  'Hello',
  'you',
  'are',
  'this',
  'be',
  'at',
  'or',
  'not',
  'have',
  'from',
  'by',
  'we',
  'can',
  'model',
  'local',
];
const PAIRS = [
  'th',
  'he',
  'in',
  'er',
  'an',
  're',
  'on',
  'at',
  'en',
  'nd',
  'ti',
  'es',
  'or',
  'te',
  'ed',
  'al',
  'ar',
  'st',
  'nt',
  'ng',
  'se',
  'ha',
  'ou',
  'io',
  'le',
  've',
  'co',
  'me',
  'de',
  'hi',
  'ri',
  'ro',
  'ic',
  'ne',
  'ea',
  'ra',
  'ce',
];
const SINGLES = [...'etaoinshrdlucmfwgypbvkjxqz', '.', ',', '!', '?', "'"];

/** The scored pieces (about 100), most preferred first. Shared with the larger presets (llama-gguf.ts). */
export function pieces(): string[] {
  const out: string[] = [SPACE];
  for (const word of WORDS) out.push(SPACE + word);
  for (const pair of PAIRS) out.push(pair);
  for (const single of SINGLES) out.push(single, SPACE + single);
  return [...new Set(out)];
}

/** mulberry32: a small, fast, well-mixed 32-bit PRNG; enough for deterministic random weights. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An F32 tensor with its values: little-endian bytes, as GGUF stores them. */
interface F32Tensor extends TensorInfo {
  readonly data: Buffer;
}

function f32Bytes(values: Float32Array): Buffer {
  const out = Buffer.alloc(values.length * 4);
  values.forEach((value, i) => out.writeFloatLE(value, i * 4));
  return out;
}

/**
 * The values of every slot, drawn from `random` in file order (the order fixes the bytes of a seed):
 * uniform weights, ones for the norms. A separate output projection: with tied embeddings a random model
 * mostly predicts its last token again ("eeee…"); the rows of quiet tokens are made small.
 */
function tinyTensors(vocab: LlamaVocabulary, slots: readonly LlamaTensorSlot[], random: () => number): F32Tensor[] {
  const uniform = (count: number, scale: number): Float32Array => {
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = (random() * 2 - 1) * scale;
    return data;
  };
  return slots.map((slot) => {
    const count = slot.dims.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (slot.role === 'norm') values = new Float32Array(count).fill(1);
    else if (slot.role === 'weight') values = uniform(count, Math.sqrt(3 / slot.fanIn));
    else values = uniform(count, 0.5);
    if (slot.role === 'output') quietRows(vocab, values);
    return { name: slot.name, dims: slot.dims, type: GGML_F32, bytes: count * 4, data: f32Bytes(values) };
  });
}

function quietRows(vocab: LlamaVocabulary, output: Float32Array): void {
  for (let token = 0; token < vocab.tokens.length; token++) {
    if (!isQuietToken(vocab, token)) continue;
    for (let i = 0; i < SHAPE.nEmbd; i++) output[token * SHAPE.nEmbd + i]! *= 0.02;
  }
}

/**
 * Generates the tiny model. The same seed always gives the same bytes.
 *
 * @param options.seed unsigned 32-bit seed of the weights (default 1)
 * @param options.omitMetadata metadata keys to leave out (fault tests only)
 * @returns the GGUF file's bytes
 * @throws TypeError ERR_INVALID_ARG_VALUE for a seed that is not an unsigned 32-bit integer
 */
export function generateTinyGguf(options: TinyGgufOptions = {}): Buffer {
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'seed must be an integer from 0 to 4294967295');
  }
  const omit = new Set(options.omitMetadata ?? []);
  const vocab = llamaVocabulary(pieces());
  const tensors = tinyTensors(vocab, llamaTensorSlots(SHAPE, SHAPE.nLayer, vocab.tokens.length), prng(seed));
  const metadata = llamaMetadata({
    ...SHAPE,
    name: `companion-tiny-${seed}`,
    fileType: 0,
    ropeFreqBase: 10000,
    vocab,
  }).filter(([key]) => !omit.has(key));
  const { head } = ggufHeader(metadata, tensors);
  return Buffer.concat([...ggufChunks(head, tensors, (tensor) => tensor.data)]);
}
