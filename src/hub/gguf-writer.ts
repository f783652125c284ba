/**
 * The one GGUF v3 writer behind both synthetic llamas (tiny-gguf.ts, F32; llama-gguf.ts, Q8_0): the
 * llama vocabulary around a list of scored pieces, the metadata table, the tensor layout of a llama,
 * the header (metadata and tensor infos) and the aligned sequence of chunks that follows it. Each
 * generator only decides the shape and how a tensor's bytes are drawn.
 *
 * No file I/O here: the hub decides where the bytes go. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 */
import { Buffer } from 'node:buffer';

/** Every tensor starts at a multiple of this many bytes (`general.alignment`). */
export const GGUF_ALIGNMENT = 32;
/** ggml tensor type of 32-bit floats. */
export const GGML_F32 = 0;

// GGUF metadata value types.
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_BOOL = 7;
const T_STRING = 8;
const T_ARRAY = 9;

// llama.cpp token types.
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

/** SentencePiece's word-boundary marker. */
export const SPACE = '\u2581';

/** The ChatML template; node-llama-cpp recognises it and uses its ChatML wrapper. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Tokens of a llama vocabulary that are not scored pieces: `<unk>`, `<s>`, `</s>`, 256 bytes, 2 ChatML. */
export const NON_PIECE_TOKENS = 3 + 256 + 2;

/** A llama vocabulary as GGUF stores it: three parallel arrays. */
export interface LlamaVocabulary {
  readonly tokens: string[];
  readonly scores: number[];
  readonly types: number[];
  /** The id of `<|im_end|>` (the end-of-turn token). */
  readonly imEnd: number;
}

/**
 * `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`…`<0xFF>` (byte fallback covers every input), the
 * scored `pieces` (most preferred first) and the ChatML control tokens `<|im_start|>` / `<|im_end|>`.
 */
export function llamaVocabulary(pieces: readonly string[]): LlamaVocabulary {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const scores: number[] = [0, 0, 0];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    scores.push(0);
    types.push(TOKEN_BYTE);
  }
  pieces.forEach((piece, index) => {
    tokens.push(piece);
    scores.push(-(index + 1)); // Higher score = merged first.
    types.push(TOKEN_NORMAL);
  });
  tokens.push('<|im_start|>');
  scores.push(0);
  types.push(TOKEN_CONTROL);
  const imEnd = tokens.length;
  tokens.push('<|im_end|>');
  scores.push(0);
  types.push(TOKEN_CONTROL);
  return { tokens, scores, types, imEnd };
}

/**
 * True for a control token, `<unk>` or a non-printable byte. Their rows of the output projection are
 * small, so greedy decoding prefers readable pieces and rarely ends at once on `</s>` / `<|im_end|>`.
 */
export function isQuietToken(vocab: LlamaVocabulary, token: number): boolean {
  const type = vocab.types[token];
  const byte = token - 3;
  return type === TOKEN_CONTROL || type === TOKEN_UNKNOWN || (type === TOKEN_BYTE && (byte < 0x20 || byte > 0x7e));
}

/** The widths of a llama. */
export interface LlamaWidths {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  readonly nFf: number;
}

/** What the metadata of a llama says besides its widths. */
export interface LlamaFacts extends LlamaWidths {
  /** `general.name`. */
  readonly name: string;
  /** `general.file_type` (0: all F32, 7: mostly Q8_0). */
  readonly fileType: number;
  readonly contextLength: number;
  readonly nLayer: number;
  readonly ropeFreqBase: number;
  readonly vocab: LlamaVocabulary;
}

/** One metadata value and its GGUF type. */
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

const u32 = (value: number): MetadataValue => ({ type: T_UINT32, value });
const f32 = (value: number): MetadataValue => ({ type: T_FLOAT32, value });
const bool = (value: boolean): MetadataValue => ({ type: T_BOOL, value });
const text = (value: string): MetadataValue => ({ type: T_STRING, value });

/** The metadata of a llama, in the order it is written. */
export function llamaMetadata(facts: LlamaFacts): [string, MetadataValue][] {
  const { vocab } = facts;
  return [
    ['general.architecture', text('llama')],
    ['general.name', text(facts.name)],
    ['general.file_type', u32(facts.fileType)],
    ['general.alignment', u32(GGUF_ALIGNMENT)],
    ['llama.context_length', u32(facts.contextLength)],
    ['llama.embedding_length', u32(facts.nEmbd)],
    ['llama.block_count', u32(facts.nLayer)],
    ['llama.feed_forward_length', u32(facts.nFf)],
    ['llama.attention.head_count', u32(facts.nHead)],
    ['llama.attention.head_count_kv', u32(facts.nHeadKv)],
    ['llama.attention.layer_norm_rms_epsilon', f32(1e-5)],
    ['llama.rope.dimension_count', u32(facts.nEmbd / facts.nHead)],
    ['llama.rope.freq_base', f32(facts.ropeFreqBase)],
    ['llama.vocab_size', u32(vocab.tokens.length)],
    ['tokenizer.ggml.model', text('llama')],
    ['tokenizer.ggml.tokens', { type: T_ARRAY, itemType: T_STRING, value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: T_ARRAY, itemType: T_FLOAT32, value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: T_ARRAY, itemType: T_INT32, value: vocab.types }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.eot_token_id', u32(vocab.imEnd)],
    ['tokenizer.ggml.add_bos_token', bool(true)],
    ['tokenizer.ggml.add_eos_token', bool(false)],
    ['tokenizer.chat_template', text(CHATML_TEMPLATE)],
  ];
}

/**
 * One tensor of a llama. `role` says how its values are drawn: `norm` all ones, `embedding` and `output`
 * the token tables, `weight` uniform within ±sqrt(3 / `fanIn`).
 */
export interface LlamaTensorSlot {
  readonly name: string;
  /** ggml dimensions, ne0 (the contiguous one) first. */
  readonly dims: readonly [number] | readonly [number, number];
  readonly role: 'norm' | 'embedding' | 'output' | 'weight';
  readonly fanIn: number;
}

/** The tensors of a llama in file order: embeddings, output norm and projection, then each layer's nine. */
export function llamaTensorSlots(widths: LlamaWidths, nLayer: number, nVocab: number): LlamaTensorSlot[] {
  const { nEmbd, nFf } = widths;
  const nEmbdKv = (nEmbd / widths.nHead) * widths.nHeadKv;
  const norm = (name: string): LlamaTensorSlot => ({ name, dims: [nEmbd], role: 'norm', fanIn: 0 });
  const weight = (name: string, ne0: number, ne1: number): LlamaTensorSlot => ({
    name,
    dims: [ne0, ne1],
    role: 'weight',
    fanIn: ne0,
  });
  const slots: LlamaTensorSlot[] = [
    { name: 'token_embd.weight', dims: [nEmbd, nVocab], role: 'embedding', fanIn: 0 },
    norm('output_norm.weight'),
    { name: 'output.weight', dims: [nEmbd, nVocab], role: 'output', fanIn: 0 },
  ];
  for (let layer = 0; layer < nLayer; layer++) {
    const prefix = `blk.${layer}`;
    slots.push(
      norm(`${prefix}.attn_norm.weight`),
      weight(`${prefix}.attn_q.weight`, nEmbd, nEmbd),
      weight(`${prefix}.attn_k.weight`, nEmbd, nEmbdKv),
      weight(`${prefix}.attn_v.weight`, nEmbd, nEmbdKv),
      weight(`${prefix}.attn_output.weight`, nEmbd, nEmbd),
      norm(`${prefix}.ffn_norm.weight`),
      weight(`${prefix}.ffn_gate.weight`, nEmbd, nFf),
      weight(`${prefix}.ffn_up.weight`, nEmbd, nFf),
      weight(`${prefix}.ffn_down.weight`, nFf, nEmbd),
    );
  }
  return slots;
}

/** Grows a byte buffer as values are appended (little-endian, as GGUF requires). */
class Writer {
  #buffer = Buffer.alloc(1 << 16);
  #length = 0;

  #put(size: number, write: (buffer: Buffer, offset: number) => unknown): void {
    if (this.#length + size > this.#buffer.length) {
      let next = this.#buffer.length * 2;
      while (next < this.#length + size) next *= 2;
      const grown = Buffer.alloc(next);
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    write(this.#buffer, this.#length);
    this.#length += size;
  }

  u32(value: number): void {
    this.#put(4, (buffer, offset) => buffer.writeUInt32LE(value, offset));
  }

  i32(value: number): void {
    this.#put(4, (buffer, offset) => buffer.writeInt32LE(value, offset));
  }

  u64(value: number): void {
    this.#put(8, (buffer, offset) => buffer.writeBigUInt64LE(BigInt(value), offset));
  }

  f32(value: number): void {
    this.#put(4, (buffer, offset) => buffer.writeFloatLE(value, offset));
  }

  u8(value: number): void {
    this.#put(1, (buffer, offset) => buffer.writeUInt8(value, offset));
  }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(bytes.length);
    this.#put(bytes.length, (buffer, offset) => bytes.copy(buffer, offset));
  }

  pad(): void {
    const extra = paddingAfter(this.#length);
    this.#put(extra, (buffer, offset) => buffer.fill(0, offset, offset + extra));
  }

  result(): Buffer {
    return Buffer.from(this.#buffer.subarray(0, this.#length));
  }
}

/** How many zero bytes bring `length` to the next multiple of {@link GGUF_ALIGNMENT}. */
function paddingAfter(length: number): number {
  return (GGUF_ALIGNMENT - (length % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;
}

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

function writeMetadata(writer: Writer, key: string, entry: MetadataValue): void {
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

/** A tensor as the header describes it: name, dims, ggml type and the byte length of its data. */
export interface TensorInfo {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: number;
  readonly bytes: number;
}

/** A planned GGUF file: its header bytes and its total size. */
export interface GgufPlan {
  readonly head: Buffer;
  readonly size: number;
}

/**
 * The header of a GGUF v3 file: magic, version, counts, the metadata, the tensor infos (each tensor's data
 * aligned) and the padding before the first tensor.
 */
export function ggufHeader(metadata: readonly [string, MetadataValue][], tensors: readonly TensorInfo[]): GgufPlan {
  const header = new Writer();
  header.u32(0x46554747); // "GGUF" read as a little-endian uint32.
  header.u32(3);
  header.u64(tensors.length);
  header.u64(metadata.length);
  for (const [key, entry] of metadata) writeMetadata(header, key, entry);
  let offset = 0;
  for (const tensor of tensors) {
    header.string(tensor.name);
    header.u32(tensor.dims.length);
    for (const dim of tensor.dims) header.u64(dim);
    header.u32(tensor.type);
    header.u64(offset);
    offset += tensor.bytes + paddingAfter(tensor.bytes);
  }
  header.pad();
  const head = header.result();
  return { head, size: head.length + offset };
}

/** The file's bytes in order: the header, then each tensor's data followed by its alignment padding. */
export function* ggufChunks<T extends TensorInfo>(
  head: Buffer,
  tensors: readonly T[],
  dataOf: (tensor: T) => Buffer,
): Generator<Buffer> {
  yield Buffer.from(head);
  for (const tensor of tensors) {
    yield dataOf(tensor);
    const pad = paddingAfter(tensor.bytes);
    if (pad > 0) yield Buffer.alloc(pad);
  }
}
