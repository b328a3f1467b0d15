// Browser side of a custom chat widget: PostHog's session id → your backend → Dify `inputs`.
//
// Dify fixes a conversation's `inputs` when the conversation starts, so when PostHog starts a
// new session (after 30 minutes without activity, or after 24 hours) this widget starts a new
// Dify conversation too; otherwise the chatbot would keep reading the old session's activity.
//
// Requires posthog-js on the page (window.posthog) and backend/chat-proxy.mjs (or your own
// equivalent) at POST /api/chat.

let conversationId = '';
let conversationSession = null;

/** Ask the chatbot; returns its answer. */
export async function ask(question) {
  const sessionId = window.posthog.get_session_id();
  if (sessionId !== conversationSession) {
    conversationId = ''; // a new PostHog session: a new Dify conversation
    conversationSession = sessionId;
  }
  const response = await fetch('/api/chat', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({
      query: question,
      conversation_id: conversationId,
      session_id: sessionId,
    }),
  });
  if (!response.ok) {
    throw new Error(`the chat backend answered HTTP ${response.status}: ${await response.text()}`);
  }
  const reply = await response.json();
  conversationId = reply.conversation_id;
  return reply.answer;
}
