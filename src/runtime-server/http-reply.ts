/** How the runtime answers over HTTP: JSON bodies and OpenAI-shaped errors, never cached, never sniffed. */
import type { ServerResponse } from 'node:http';
import { ApiError } from './openai.js';

const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

/** Answers `status` with `body` as JSON; ends the response as it is when headers were already sent. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: object,
  extraHeaders: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, ...extraHeaders, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Answers `error` in OpenAI's shape with its status. */
export function sendError(res: ServerResponse, error: ApiError, extraHeaders: Record<string, string> = {}): void {
  sendJson(res, error.status, error.body(), extraHeaders);
}

/** `error` as the ApiError to answer: itself, or 500 `generation_failed` for anything else. */
export function errorFromGeneration(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  // A generation failure is reported by kind only: its message may quote model output or paths.
  return new ApiError(500, 'server_error', 'generation_failed', 'the generation failed');
}
