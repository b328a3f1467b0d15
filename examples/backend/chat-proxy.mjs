// A minimal backend between your web app and a Dify chatflow (Node 18+, no dependencies).
//
// - Keeps the Dify app API key on the server (never ship it to browsers).
// - Passes the browser's PostHog session id to the chatflow as the `session_id` input.
// - When LIVECTX_IDENTITY_SECRET is set (livectx then accepts only signed identifiers from
//   end-user channels), signs the identity exactly like `livectx sign`: the logged-in user's
//   id when your authentication knows it (input `user_id`: livectx resolves it to that
//   person's newest session, so it also survives PostHog's session rotation), otherwise the
//   session id.
//
// Run:  DIFY_API_BASE=https://api.dify.ai/v1 DIFY_APP_KEY=app-... node chat-proxy.mjs
// Then: POST http://localhost:3000/api/chat {"query": "...", "session_id": "...", "conversation_id": ""}

import http from 'node:http';
import { createHmac } from 'node:crypto';
import { pathToFileURL } from 'node:url';

/**
 * A signed identifier, the format livectx verifies with LIVECTX_IDENTITY_SECRET:
 * `<id>.<expires unix seconds>.<base64url(HMAC-SHA256(secret, "<id>.<expires>"))>`.
 */
export function signIdentity(id, secret, ttlSeconds = 24 * 3600, nowMs = Date.now()) {
  const expires = Math.ceil(nowMs / 1000 + ttlSeconds);
  const message = `${id}.${expires}`;
  const tag = createHmac('sha256', secret).update(message).digest('base64url');
  return `${message}.${tag}`;
}

/** Replace with your own authentication: the logged-in user's id (the id you give
 *  posthog.identify(), which the connector sends as `user_id`), or null. */
function authenticatedUserId(request) {
  return null;
}

/** The chatflow's `inputs` for this request. */
export function chatInputs({ sessionId, userId }, secret = process.env.LIVECTX_IDENTITY_SECRET) {
  if (!secret) {
    return { session_id: sessionId ?? '' };
  }
  if (userId) {
    return { session_id: '', user_id: signIdentity(userId, secret) };
  }
  return { session_id: sessionId ? signIdentity(sessionId, secret) : '' };
}

async function askDify({ query, conversationId, sessionId, userId }) {
  const response = await fetch(`${process.env.DIFY_API_BASE}/chat-messages`, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${process.env.DIFY_APP_KEY}`,
      'Content-Type': 'application/json',
    },
    body: JSON.stringify({
      inputs: chatInputs({ sessionId, userId }),
      query,
      response_mode: 'blocking',
      conversation_id: conversationId ?? '',
      // Dify's end-user id (sys.user_id); any stable id of this visitor will do.
      user: userId ?? sessionId ?? 'anonymous',
    }),
  });
  if (!response.ok) {
    throw new Error(`Dify answered HTTP ${response.status}: ${await response.text()}`);
  }
  const reply = await response.json();
  return { answer: reply.answer, conversation_id: reply.conversation_id };
}

async function readJson(request) {
  let body = '';
  for await (const chunk of request) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('request body too large');
  }
  return JSON.parse(body);
}

function serve(port) {
  http
    .createServer(async (request, response) => {
      const reply = (status, value) => {
        response.writeHead(status, { 'Content-Type': 'application/json' });
        response.end(JSON.stringify(value));
      };
      if (request.method !== 'POST' || request.url !== '/api/chat') {
        return reply(404, { error: 'POST /api/chat' });
      }
      try {
        const { query, conversation_id, session_id } = await readJson(request);
        if (typeof query !== 'string' || query.trim() === '') {
          return reply(400, { error: 'query must be a non-empty string' });
        }
        reply(200, await askDify({
          query,
          conversationId: conversation_id,
          sessionId: typeof session_id === 'string' ? session_id : null,
          userId: authenticatedUserId(request),
        }));
      } catch (error) {
        console.error(error);
        reply(502, { error: String(error.message ?? error) });
      }
    })
    .listen(port, () => console.log(`chat proxy on http://localhost:${port}/api/chat`));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const name of ['DIFY_API_BASE', 'DIFY_APP_KEY']) {
    if (!process.env[name]) {
      console.error(`${name} is not set`);
      process.exit(1);
    }
  }
  serve(Number(process.env.PORT ?? 3000));
}
