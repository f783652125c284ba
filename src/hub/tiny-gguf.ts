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

const N_EMBD = 64;
const N_HEAD = 4;
const N_FF = 128;
const N_LAYER = 2;
const N_CTX = 2048;
const ALIGNMENT = 32;

// GGUF metadata value types.
export const T_UINT32 = 4;
export const T_INT32 = 5;
export const T_FLOAT32 = 6;
export const T_BOOL = 7;
export const T_STRING = 8;
export const T_ARRAY = 9;
// ggml tensor type.
const GGML_F32 = 0;

// llama.cpp token types.
export const TOKEN_NORMAL = 1;
export const TOKEN_UNKNOWN = 2;
export const TOKEN_CONTROL = 3;
export const TOKEN_BYTE = 6;

/** The ChatML template; node-llama-cpp recognises it and uses its ChatML wrapper. */
export const TINY_GGUF_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export const SPACE = '\u2581'; // SentencePiece's word-boundary marker.

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

interface Vocabulary {
  readonly tokens: string[];
  readonly scores: number[];
  readonly types: number[];
  readonly imStart: number;
  readonly imEnd: number;
}

function vocabulary(): Vocabulary {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const scores: number[] = [0, 0, 0];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    scores.push(0);
    types.push(TOKEN_BYTE);
  }
  const list = pieces();
  list.forEach((piece, index) => {
    tokens.push(piece);
    scores.push(-(index + 1)); // Higher score = merged first.
    types.push(TOKEN_NORMAL);
  });
  const imStart = tokens.length;
  tokens.push('<|im_start|>');
  scores.push(0);
  types.push(TOKEN_CONTROL);
  const imEnd = tokens.length;
  tokens.push('<|im_end|>');
  scores.push(0);
  types.push(TOKEN_CONTROL);
  return { tokens, scores, types, imStart, imEnd };
}

/** mulberry32: a small, fast, well-mixed 32-bit PRNG; enough for deterministic random weights. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Grows a byte buffer as values are appended (little-endian, as GGUF requires). */
export class Writer {
  #buffer = Buffer.alloc(1 << 16);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #reserve(extra: number): void {
    if (this.#length + extra <= this.#buffer.length) return;
    let size = this.#buffer.length * 2;
    while (size < this.#length + extra) size *= 2;
    const next = Buffer.alloc(size);
    this.#buffer.copy(next, 0, 0, this.#length);
    this.#buffer = next;
  }

  u32(value: number): void {
    this.#reserve(4);
    this.#buffer.writeUInt32LE(value, this.#length);
    this.#length += 4;
  }

  i32(value: number): void {
    this.#reserve(4);
    this.#buffer.writeInt32LE(value, this.#length);
    this.#length += 4;
  }

  u64(value: number): void {
    this.#reserve(8);
    this.#buffer.writeBigUInt64LE(BigInt(value), this.#length);
    this.#length += 8;
  }

  f32(value: number): void {
    this.#reserve(4);
    this.#buffer.writeFloatLE(value, this.#length);
    this.#length += 4;
  }

  u8(value: number): void {
    this.#reserve(1);
    this.#buffer.writeUInt8(value, this.#length);
    this.#length += 1;
  }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(bytes.length);
    this.#reserve(bytes.length);
    bytes.copy(this.#buffer, this.#length);
    this.#length += bytes.length;
  }

  pad(alignment: number): void {
    const extra = (alignment - (this.#length % alignment)) % alignment;
    this.#reserve(extra);
    this.#buffer.fill(0, this.#length, this.#length + extra);
    this.#length += extra;
  }

  result(): Buffer {
    return Buffer.from(this.#buffer.subarray(0, this.#length));
  }
}

export type MetadataValue =
  | { readonly type: typeof T_UINT32 | typeof T_INT32 | typeof T_FLOAT32; readonly value: number }
  | { readonly type: typeof T_BOOL; readonly value: boolean }
  | { readonly type: typeof T_STRING; readonly value: string }
  | { readonly type: typeof T_ARRAY; readonly itemType: typeof T_STRING; readonly value: readonly string[] }
  | {
      readonly type: typeof T_ARRAY;
      readonly itemType: typeof T_FLOAT32 | typeof T_INT32;
      readonly value: readonly number[];
    };

function writeScalar(writer: Writer, type: number, value: number | string | boolean): void {
  switch (type) {
    case T_UINT32:
      writer.u32(value as number);
      break;
    case T_INT32:
      writer.i32(value as number);
      break;
    case T_FLOAT32:
      writer.f32(value as number);
      break;
    case T_BOOL:
      writer.u8(value === true ? 1 : 0);
      break;
    case T_STRING:
      writer.string(value as string);
      break;
    default:
      throw new Error(`unsupported GGUF value type ${type}`);
  }
}

export function writeMetadata(writer: Writer, key: string, entry: MetadataValue): void {
  writer.string(key);
  writer.u32(entry.type);
  if (entry.type === T_ARRAY) {
    writer.u32(entry.itemType);
    writer.u64(entry.value.length);
    for (const item of entry.value) writeScalar(writer, entry.itemType, item);
  } else {
    writeScalar(writer, entry.type, entry.value);
  }
}

interface Tensor {
  readonly name: string;
  /** ggml dimensions, ne0 (the contiguous one) first. */
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

/**
 * Generates the tiny model. The same seed always gives the same bytes.
 *
 * @param options.seed unsigned 32-bit seed of the weights (default 1)
 * @param options.omitMetadata metadata keys to leave out (fault tests only)
 * @returns the GGUF file's bytes
 */
export function generateTinyGguf(options: TinyGgufOptions = {}): Buffer {
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'seed must be an integer from 0 to 4294967295');
  }
  const omit = new Set(options.omitMetadata ?? []);
  const vocab = vocabulary();
  const nVocab = vocab.tokens.length;
  const random = prng(seed);
  const uniform = (count: number, scale: number): Float32Array => {
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = (random() * 2 - 1) * scale;
    return data;
  };
  const ones = (count: number): Float32Array => new Float32Array(count).fill(1);

  // A separate output projection: with tied embeddings a random model mostly predicts its last token
  // again ("eeee…"). Rows of control tokens and non-printable bytes are small, so greedy decoding
  // prefers readable pieces and rarely ends at once on `</s>` / `<|im_end|>`.
  const embeddings = uniform(N_EMBD * nVocab, 0.5);
  const output = uniform(N_EMBD * nVocab, 0.5);
  for (let token = 0; token < nVocab; token++) {
    const type = vocab.types[token];
    const byte = token - 3;
    const quiet =
      type === TOKEN_CONTROL || type === TOKEN_UNKNOWN || (type === TOKEN_BYTE && (byte < 0x20 || byte > 0x7e));
    if (!quiet) continue;
    for (let i = 0; i < N_EMBD; i++) output[token * N_EMBD + i]! *= 0.02;
  }

  const tensors: Tensor[] = [
    { name: 'token_embd.weight', dims: [N_EMBD, nVocab], data: embeddings },
    { name: 'output_norm.weight', dims: [N_EMBD], data: ones(N_EMBD) },
    { name: 'output.weight', dims: [N_EMBD, nVocab], data: output },
  ];
  const scaleIn = (fanIn: number): number => Math.sqrt(3 / fanIn);
  for (let layer = 0; layer < N_LAYER; layer++) {
    const prefix = `blk.${layer}`;
    tensors.push(
      { name: `${prefix}.attn_norm.weight`, dims: [N_EMBD], data: ones(N_EMBD) },
      { name: `${prefix}.attn_q.weight`, dims: [N_EMBD, N_EMBD], data: uniform(N_EMBD * N_EMBD, scaleIn(N_EMBD)) },
      { name: `${prefix}.attn_k.weight`, dims: [N_EMBD, N_EMBD], data: uniform(N_EMBD * N_EMBD, scaleIn(N_EMBD)) },
      { name: `${prefix}.attn_v.weight`, dims: [N_EMBD, N_EMBD], data: uniform(N_EMBD * N_EMBD, scaleIn(N_EMBD)) },
      { name: `${prefix}.attn_output.weight`, dims: [N_EMBD, N_EMBD], data: uniform(N_EMBD * N_EMBD, scaleIn(N_EMBD)) },
      { name: `${prefix}.ffn_norm.weight`, dims: [N_EMBD], data: ones(N_EMBD) },
      { name: `${prefix}.ffn_gate.weight`, dims: [N_EMBD, N_FF], data: uniform(N_EMBD * N_FF, scaleIn(N_EMBD)) },
      { name: `${prefix}.ffn_up.weight`, dims: [N_EMBD, N_FF], data: uniform(N_EMBD * N_FF, scaleIn(N_EMBD)) },
      { name: `${prefix}.ffn_down.weight`, dims: [N_FF, N_EMBD], data: uniform(N_FF * N_EMBD, scaleIn(N_FF)) },
    );
  }

  const metadata: [string, MetadataValue][] = [
    ['general.architecture', { type: T_STRING, value: 'llama' }],
    ['general.name', { type: T_STRING, value: `companion-tiny-${seed}` }],
    ['general.file_type', { type: T_UINT32, value: 0 }],
    ['general.alignment', { type: T_UINT32, value: ALIGNMENT }],
    ['llama.context_length', { type: T_UINT32, value: N_CTX }],
    ['llama.embedding_length', { type: T_UINT32, value: N_EMBD }],
    ['llama.block_count', { type: T_UINT32, value: N_LAYER }],
    ['llama.feed_forward_length', { type: T_UINT32, value: N_FF }],
    ['llama.attention.head_count', { type: T_UINT32, value: N_HEAD }],
    ['llama.attention.head_count_kv', { type: T_UINT32, value: N_HEAD }],
    ['llama.attention.layer_norm_rms_epsilon', { type: T_FLOAT32, value: 1e-5 }],
    ['llama.rope.dimension_count', { type: T_UINT32, value: N_EMBD / N_HEAD }],
    ['llama.rope.freq_base', { type: T_FLOAT32, value: 10000 }],
    ['llama.vocab_size', { type: T_UINT32, value: nVocab }],
    ['tokenizer.ggml.model', { type: T_STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: T_ARRAY, itemType: T_STRING, value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: T_ARRAY, itemType: T_FLOAT32, value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: T_ARRAY, itemType: T_INT32, value: vocab.types }],
    ['tokenizer.ggml.unknown_token_id', { type: T_UINT32, value: 0 }],
    ['tokenizer.ggml.bos_token_id', { type: T_UINT32, value: 1 }],
    ['tokenizer.ggml.eos_token_id', { type: T_UINT32, value: 2 }],
    ['tokenizer.ggml.eot_token_id', { type: T_UINT32, value: vocab.imEnd }],
    ['tokenizer.ggml.add_bos_token', { type: T_BOOL, value: true }],
    ['tokenizer.ggml.add_eos_token', { type: T_BOOL, value: false }],
    ['tokenizer.chat_template', { type: T_STRING, value: TINY_GGUF_CHAT_TEMPLATE }],
  ];
  const kept = metadata.filter(([key]) => !omit.has(key));

  const writer = new Writer();
  writer.u32(0x46554747); // "GGUF" read as a little-endian uint32.
  writer.u32(3);
  writer.u64(tensors.length);
  writer.u64(kept.length);
  for (const [key, entry] of kept) writeMetadata(writer, key, entry);

  let offset = 0;
  for (const tensor of tensors) {
    writer.string(tensor.name);
    writer.u32(tensor.dims.length);
    for (const dim of tensor.dims) writer.u64(dim);
    writer.u32(GGML_F32);
    writer.u64(offset);
    offset += tensor.data.byteLength;
    offset += (ALIGNMENT - (offset % ALIGNMENT)) % ALIGNMENT;
  }
  writer.pad(ALIGNMENT);
  for (const tensor of tensors) {
    for (const value of tensor.data) writer.f32(value);
    writer.pad(ALIGNMENT);
  }
  return writer.result();
}
