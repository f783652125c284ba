/**
 * The HTML of the hub's sign-in and consent pages. Static markup, every value escaped, one inline
 * stylesheet allowed by its hash, no script, no external resource, no secret (the only hidden field is
 * the per-interaction CSRF token). The headers that go with every page are in {@link pageHeaders}.
 */
import { createHash } from 'node:crypto';

const STYLE = [
  'body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;padding:2rem}',
  'main{max-width:26rem;margin:0 auto;background:#fff;border-radius:8px;padding:1.5rem 2rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}',
  'h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin:.75rem 0 .25rem;font-weight:600}',
  'input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;border:1px solid #b8bdc7;border-radius:4px}',
  'button{margin-top:1rem;padding:.55rem 1rem;font-size:1rem;border-radius:4px;border:1px solid #2f5bd3;background:#2f5bd3;color:#fff;cursor:pointer}',
  'button.secondary{background:#fff;color:#2f5bd3}.row{display:flex;gap:.75rem}',
  '.error{color:#a8071a;background:#fff1f0;border:1px solid #ffa39e;padding:.5rem;border-radius:4px}',
  'ul{padding-left:1.2rem}li{margin:.3rem 0}.muted{color:#5a6272;font-size:.9rem}code{font-size:.9rem}',
].join('');

const STYLE_HASH = createHash('sha256').update(STYLE, 'utf8').digest('base64');

/**
 * Content-Security-Policy of every hub page. `form-action` must allow the loopback redirect too:
 * browsers apply it to the redirects that follow a form submission, and consent ends in a 303 to
 * `http://127.0.0.1:<port>/callback` (RFC 8252 §7.3).
 */
export const PAGE_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${STYLE_HASH}'`,
  "form-action 'self' http://127.0.0.1:*",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** Headers for every HTML page of the hub. */
export function pageHeaders(length: number): Record<string, string> {
  return {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': String(length),
    'Content-Security-Policy': PAGE_CSP,
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the form post,
    // and the Origin check is part of the CSRF defence. Nothing leaves the origin either way.
    'Referrer-Policy': 'same-origin',
    'Cross-Origin-Opener-Policy': 'same-origin',
  };
}

/** HTML-escapes text for element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function layout(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

/** The sign-in form. `error` is one of our fixed messages, never input. */
export function loginPage(options: {
  action: string;
  csrf: string;
  clientName: string;
  error?: string;
  username?: string;
}): string {
  const error = options.error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(options.error)}</p>\n`;
  return layout(
    'Sign in to the hub',
    `<h1>Sign in to the hub</h1>
<p class="muted">${escapeHtml(options.clientName)} asks you to sign in.</p>
${error}<form method="post" action="${escapeHtml(options.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(options.csrf)}">
<label for="username">User name</label>
<input type="text" id="username" name="username" value="${escapeHtml(options.username ?? '')}" required autofocus autocomplete="username" autocapitalize="none" spellcheck="false">
<label for="password">Password</label>
<input type="password" id="password" name="password" required autocomplete="current-password">
<div class="row">
<button type="submit" name="action" value="login" id="sign-in">Sign in</button>
<button type="submit" name="action" value="cancel" class="secondary" id="cancel" formnovalidate>Cancel</button>
</div>
</form>`,
  );
}

const SCOPE_TEXT: Record<string, string> = {
  openid: 'know who you are on this hub',
  offline_access: 'stay signed in on this computer until you sign out (refresh tokens)',
  'companion:manifest': 'read the signed list of models to run on this computer',
};

/** The consent form: who asks, what for, where the answer goes. */
export function consentPage(options: {
  action: string;
  csrf: string;
  clientName: string;
  user: string;
  scopes: readonly string[];
  redirectTarget: string;
}): string {
  const items = options.scopes
    .map((s) => `<li><code>${escapeHtml(s)}</code> — ${escapeHtml(SCOPE_TEXT[s] ?? 'an access this hub defines')}</li>`)
    .join('\n');
  return layout(
    'Allow access?',
    `<h1>Allow ${escapeHtml(options.clientName)}?</h1>
<p>Signed in as <strong>${escapeHtml(options.user)}</strong>.</p>
<p>${escapeHtml(options.clientName)} on this computer asks to:</p>
<ul>
${items}
</ul>
<p class="muted">The answer goes to the app listening at <code>${escapeHtml(options.redirectTarget)}</code>. Only allow it if you just started a sign-in from ${escapeHtml(options.clientName)}.</p>
<form method="post" action="${escapeHtml(options.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(options.csrf)}">
<div class="row">
<button type="submit" name="action" value="allow" id="allow">Allow</button>
<button type="submit" name="action" value="deny" class="secondary" id="deny">Deny</button>
</div>
</form>`,
  );
}

/** A page for a dead end (expired interaction, bad request). `message` is one of our fixed texts. */
export function messagePage(title: string, message: string): string {
  return layout(title, `<h1>${escapeHtml(title)}</h1>\n<p>${escapeHtml(message)}</p>`);
}
