/** Reading a request's JSON body: `application/json` only, bounded in size, answered in OpenAI's shape. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendError } from './http-reply.js';
import { ApiError } from './openai.js';

/** How much of an oversized body is read and dropped before the connection is cut. */
const DISCARD_LIMIT = 16 * 1024 * 1024;

/** A parsed body; a wrapper so that a body of `null` is told apart from "already answered". */
export interface JsonBody {
  readonly value: unknown;
}

/**
 * The request's body parsed as JSON, or null when the request was answered instead: 415
 * `unsupported_media_type` (not `application/json`), 413 `body_too_large` (over `limit` bytes), 400
 * `invalid_json`; a request that fails while its body is read is cut off.
 */
export async function readJsonBody(req: IncomingMessage, res: ServerResponse, limit: number): Promise<JsonBody | null> {
  if (!isJsonContentType(req.headers['content-type'])) {
    req.resume();
    sendError(
      res,
      new ApiError(415, 'invalid_request_error', 'unsupported_media_type', 'the body must be application/json'),
    );
    return null;
  }
  try {
    const raw = await readBody(req, limit);
    try {
      return { value: JSON.parse(raw.toString('utf8')) };
    } catch {
      throw new ApiError(400, 'invalid_request_error', 'invalid_json', 'the body is not valid JSON');
    }
  } catch (error) {
    if (!(error instanceof ApiError)) res.destroy();
    else if (error.status === 413) refuseOversized(req, res, error);
    else sendError(res, error);
    return null;
  }
}

function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  return value.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

/**
 * Answers 413 at once and drops what the client still sends (bounded), so that it reads the answer
 * instead of failing on a reset; a client that keeps sending past the bound is cut off.
 */
function refuseOversized(req: IncomingMessage, res: ServerResponse, error: ApiError): void {
  let discarded = 0;
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_LIMIT) req.socket.destroy();
  });
  req.resume();
  sendError(res, error);
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, 'invalid_request_error', 'body_too_large', `the request body exceeds ${limit} bytes`);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      reject(tooLarge(limit));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (error) => {
      if (!failed) {
        failed = true;
        reject(error);
      }
    });
  });
}
