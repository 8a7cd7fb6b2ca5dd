// Verify hookrelay's webhooks in Node.js (18+): a receiver using node's own modules only.
//
// Both schemes hookrelay signs with are checked:
// - Logto's `logto-signature-sha-256`: lowercase hex HMAC-SHA256 of the raw body, keyed with
//   the signing key's UTF-8 text (exactly as for Logto's own webhooks).
// - Standard Webhooks (https://www.standardwebhooks.com/): `webhook-signature` holds one or
//   more `v1,<base64>` signatures (several during a key rotation), each an HMAC-SHA256 of
//   `<webhook-id>.<webhook-timestamp>.<raw body>` keyed with the base64-decoded part of the
//   `whsec_` secret; `webhook-timestamp` must be within 5 minutes of now (replay window).
//
// Run it:
//   LOGTO_SIGNING_KEY=... WEBHOOK_SECRET=whsec_... PORT=8000 node verify.mjs
// Set one variable or both (both: a request must pass both checks). It answers 204 to a
// verified POST and 401 with the reason otherwise. Verify the raw bytes as received, never
// re-serialised JSON, and use `webhook-id` to drop duplicates (same for every retry).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

const TOLERANCE_S = 5 * 60;

export class VerificationError extends Error {}

function sameBytes(expected, received) {
  const a = Buffer.from(expected);
  const b = Buffer.from(received);
  // timingSafeEqual needs equal lengths; a length difference reveals nothing secret.
  return a.length === b.length && timingSafeEqual(a, b);
}

export function verifyLogto(signingKey, body, headers) {
  const received = (headers['logto-signature-sha-256'] ?? '').trim().toLowerCase();
  const expected = createHmac('sha256', signingKey).update(body).digest('hex');
  if (!sameBytes(expected, received)) {
    throw new VerificationError('logto-signature-sha-256 does not match');
  }
}

export function verifyStandardWebhooks(secret, body, headers, nowS = Date.now() / 1000) {
  const id = headers['webhook-id'];
  const timestamp = headers['webhook-timestamp'];
  const signatures = headers['webhook-signature'];
  if (!id || !timestamp || !signatures) {
    throw new VerificationError('missing webhook-id, webhook-timestamp or webhook-signature');
  }
  if (!/^\d+$/.test(timestamp)) {
    throw new VerificationError('webhook-timestamp is not integer seconds');
  }
  if (Math.abs(nowS - Number(timestamp)) > TOLERANCE_S) {
    throw new VerificationError('webhook-timestamp is outside the 5 minute tolerance');
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key)
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest('base64');
  for (const versioned of signatures.split(' ')) {
    const [version, signature = ''] = versioned.split(',');
    if (version === 'v1' && sameBytes(expected, signature)) return;
  }
  throw new VerificationError('no webhook-signature matches');
}

const LOGTO_SIGNING_KEY = process.env.LOGTO_SIGNING_KEY ?? '';
const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET ?? '';

function answer(response, status, reason) {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(reason);
}

function handle(request, response) {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    const body = Buffer.concat(chunks); // the raw bytes: never JSON.stringify(JSON.parse(...))
    try {
      if (LOGTO_SIGNING_KEY) verifyLogto(LOGTO_SIGNING_KEY, body, request.headers);
      if (WEBHOOK_SECRET) verifyStandardWebhooks(WEBHOOK_SECRET, body, request.headers);
    } catch (error) {
      if (!(error instanceof VerificationError)) throw error;
      answer(response, 401, error.message);
      return;
    }
    // Authentic: deduplicate on request.headers['webhook-id'], then JSON.parse(body).
    answer(response, 204, '');
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!LOGTO_SIGNING_KEY && !WEBHOOK_SECRET) {
    console.error('set LOGTO_SIGNING_KEY and/or WEBHOOK_SECRET');
    process.exit(2);
  }
  const server = createServer(handle);
  server.listen(Number(process.env.PORT ?? 8000), '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${server.address().port}/`);
  });
}
