// The server's OpenAI-compatible API: GET /v1/models and a streamed POST /v1/chat/completions (SSE framing:
// "data: {json}\n\n" events, ended by "data: [DONE]").

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(apiKey) {
  const h = { 'Content-Type': 'application/json' };
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

async function errorOf(res) {
  let message = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    if (body?.error?.message) message = body.error.message;
    else if (body?.message) message = body.message;
  } catch { /* not JSON: keep the status */ }
  return new ApiError(res.status, message);
}

export async function listModels(apiKey) {
  const res = await fetch('/v1/models', { headers: headers(apiKey) });
  if (!res.ok) throw await errorOf(res);
  const body = await res.json();
  return (body.data || []).map((m) => m.id);
}

// Streams one chat completion; onDelta(delta, chunk) per choice-0 delta, onUsage(usage) at the end.
// `signal` aborts the fetch (the server then cancels the request).
export async function streamChat(body, { apiKey, signal, onDelta, onUsage }) {
  const res = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(apiKey), body: JSON.stringify(body), signal });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let finishReason = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
      const data = event.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue;  // comments (keep-alives)
      if (data === '[DONE]') return finishReason;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error.message || 'error while generating');
      if (chunk.usage) onUsage?.(chunk.usage);
      const choice = (chunk.choices || []).find((c) => (c.index ?? 0) === 0);
      if (!choice) continue;
      if (choice.delta) onDelta(choice.delta, chunk);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return finishReason;
}
