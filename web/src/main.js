// quatre's built-in chat page: conversations in localStorage, a streamed reply per turn from
// /v1/chat/completions, markdown/code/math rendering, images, reasoning, tool calls, stop/regenerate/edit.
import { ApiError, listModels, streamChat } from './api.js';
import { escapeHtml, renderMarkdown } from './markdown.js';
import * as store from './store.js';

const $ = (id) => document.getElementById(id);
const el = {
  conversations: $('conversations'), newChat: $('new-chat'), model: $('model'), speed: $('speed'), notice: $('notice'),
  messages: $('messages'), composer: $('composer'), input: $('input'), file: $('file'), attachments: $('attachments'),
  reasoning: $('reasoning'), send: $('send'), stop: $('stop'), openSettings: $('open-settings'),
  settings: $('settings'), keyDialog: $('key-dialog'), keyInput: $('key-input'),
};

const state = {
  conversations: store.loadConversations(),
  settings: store.loadSettings(),
  apiKey: store.loadApiKey(),
  currentId: store.loadCurrentId(),
  model: null,
  images: [],        // data: URLs waiting to be sent
  controller: null,  // the AbortController of the reply being generated
  renderQueued: false,
};

const current = () => state.conversations.find((c) => c.id === state.currentId);
const isGenerating = () => state.controller !== null;

function notice(text) {
  el.notice.textContent = text || '';
  el.notice.hidden = !text;
}

function persist() {
  if (!store.saveConversations(state.conversations)) notice('Browser storage is full: this conversation (its images?) could not be saved.');
  store.saveCurrentId(state.currentId);
}

// ---- Sidebar ---------------------------------------------------------------------------------------------

function renderSidebar() {
  el.conversations.replaceChildren(...state.conversations.map((c) => {
    const li = document.createElement('li');
    li.className = 'conversation';
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    open.textContent = c.title;
    open.title = c.title;
    if (c.id === state.currentId) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => selectConversation(c.id));
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.textContent = '×';
    del.setAttribute('aria-label', `Delete conversation: ${c.title}`);
    del.addEventListener('click', () => deleteConversation(c.id));
    li.append(open, del);
    return li;
  }));
}

function selectConversation(id) {
  if (isGenerating()) stop();
  state.currentId = id;
  persist();
  renderAll();
}

function deleteConversation(id) {
  if (id === state.currentId && isGenerating()) stop();
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.currentId === id) state.currentId = state.conversations[0]?.id ?? null;
  persist();
  renderAll();
}

function newChat() {
  if (isGenerating()) stop();
  const c = store.newConversation();
  state.conversations.unshift(c);
  state.currentId = c.id;
  persist();
  renderAll();
  el.input.focus();
}

// ---- Messages --------------------------------------------------------------------------------------------

function button(label, onClick, className = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.className = className;
  b.addEventListener('click', onClick);
  return b;
}

function formatStats(s) {
  const parts = [`${s.tokens} tokens`];
  if (s.tps != null) parts.push(`${s.tps.toFixed(1)} tok/s`);
  if (s.ttft != null) parts.push(`first token ${(s.ttft / 1000).toFixed(2)} s`);
  if (s.stopped) parts.push('stopped');
  else if (s.finish && s.finish !== 'stop') parts.push(`finish: ${s.finish}`);
  return parts.join(' · ');
}

function userView(msg, index) {
  const div = document.createElement('div');
  div.className = 'bubble';
  if (msg.images?.length) {
    const imgs = document.createElement('div');
    imgs.className = 'images';
    for (const src of msg.images) {
      const img = document.createElement('img');
      img.src = src;
      img.alt = 'attached image';
      imgs.append(img);
    }
    div.append(imgs);
  }
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = msg.content;
  div.append(text);
  const actions = document.createElement('div');
  actions.className = 'actions';
  actions.append(button('Edit', () => startEdit(index), 'edit'));
  return [div, actions];
}

function toolCallsView(calls) {
  const box = document.createElement('div');
  box.className = 'tool-calls';
  for (const call of calls) {
    const d = document.createElement('details');
    d.className = 'tool-call';
    d.open = true;
    const s = document.createElement('summary');
    s.textContent = `Tool call: ${call.function?.name || '…'}`;
    const pre = document.createElement('pre');
    let args = call.function?.arguments || '';
    try { args = JSON.stringify(JSON.parse(args), null, 2); } catch { /* still streaming */ }
    pre.textContent = args;
    d.append(s, pre);
    box.append(d);
  }
  return box;
}

function assistantView(msg, index, isLast) {
  const nodes = [];
  const streaming = isLast && isGenerating();
  if (msg.reasoning) {
    const d = document.createElement('details');
    d.className = 'reasoning';
    d.open = msg.reasoningOpen ?? streaming;
    d.addEventListener('toggle', () => { msg.reasoningOpen = d.open; });
    const s = document.createElement('summary');
    s.textContent = streaming && !msg.content ? 'Reasoning…' : `Reasoning (${msg.reasoning.length} characters)`;
    const body = document.createElement('div');
    body.className = 'reasoning-body markdown';
    body.innerHTML = renderMarkdown(msg.reasoning);
    d.append(s, body);
    nodes.push(d);
  }
  const content = document.createElement('div');
  content.className = 'content markdown';
  content.innerHTML = renderMarkdown(msg.content);
  if (streaming && !msg.content && !msg.reasoning) content.innerHTML = '<span class="typing" aria-label="waiting for the reply">…</span>';
  nodes.push(content);
  if (msg.tool_calls?.length) nodes.push(toolCallsView(msg.tool_calls));
  if (msg.error) {
    const err = document.createElement('div');
    err.className = 'error';
    err.setAttribute('role', 'alert');
    err.textContent = msg.error;
    nodes.push(err);
  }
  const footer = document.createElement('div');
  footer.className = 'actions';
  if (msg.stats) {
    const stats = document.createElement('span');
    stats.className = 'stats';
    stats.textContent = formatStats(msg.stats);
    footer.append(stats);
  }
  if (!streaming) {
    if (msg.content) footer.append(button('Copy', () => navigator.clipboard?.writeText(msg.content).catch(() => {}), 'copy-reply'));
    if (isLast) footer.append(button('Regenerate', regenerate, 'regenerate'));
  }
  nodes.push(footer);
  return nodes;
}

function messageView(msg, index, isLast) {
  const article = document.createElement('article');
  article.className = `msg ${msg.role}`;
  if (isLast && isGenerating() && msg.role === 'assistant') article.classList.add('streaming');
  article.dataset.index = index;
  article.setAttribute('aria-label', msg.role === 'user' ? 'You' : 'Assistant');
  article.append(...(msg.role === 'user' ? userView(msg, index) : assistantView(msg, index, isLast)));
  return article;
}

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function renderMessages() {
  const c = current();
  const msgs = c?.messages ?? [];
  if (!msgs.length) {
    const empty = document.createElement('div');
    empty.className = 'empty';
    empty.textContent = state.model ? `Chat with ${state.model}` : 'Start a conversation';
    el.messages.replaceChildren(empty);
    return;
  }
  el.messages.replaceChildren(...msgs.map((m, i) => messageView(m, i, i === msgs.length - 1)));
}

// Re-renders only the last message (streaming), at most once per frame.
function renderLast() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    const msgs = current()?.messages ?? [];
    const last = el.messages.lastElementChild;
    if (!msgs.length || !last?.classList.contains('msg')) return renderMessages();
    const stick = nearBottom();
    last.replaceWith(messageView(msgs[msgs.length - 1], msgs.length - 1, true));
    if (stick) el.messages.scrollTop = el.messages.scrollHeight;
  });
}

function renderControls() {
  const busy = isGenerating();
  el.send.hidden = busy;
  el.stop.hidden = !busy;
  el.reasoning.checked = state.settings.reasoningEffort === 'high';
}

function renderAll() {
  renderSidebar();
  renderMessages();
  renderControls();
  el.messages.scrollTop = el.messages.scrollHeight;
}

function startEdit(index) {
  if (isGenerating()) return;
  const msg = current().messages[index];
  const article = el.messages.querySelector(`article[data-index="${index}"]`);
  const area = document.createElement('textarea');
  area.className = 'edit-area';
  area.value = msg.content;
  area.rows = Math.min(12, Math.max(2, msg.content.split('\n').length));
  area.setAttribute('aria-label', 'Edit message');
  const bar = document.createElement('div');
  bar.className = 'actions';
  bar.append(button('Save & send', () => {
    msg.content = area.value;
    current().messages = current().messages.slice(0, index + 1);
    generate();
  }, 'primary save-edit'), button('Cancel', renderMessages));
  article.replaceChildren(area, bar);
  area.focus();
}

// ---- Generation ------------------------------------------------------------------------------------------

function apiMessages(messages) {
  const out = [];
  if (state.settings.systemPrompt.trim()) out.push({ role: 'system', content: state.settings.systemPrompt });
  for (const m of messages) {
    if (m.role === 'user') {
      const content = m.images?.length
        ? [{ type: 'text', text: m.content }, ...m.images.map((url) => ({ type: 'image_url', image_url: { url } }))]
        : m.content;
      out.push({ role: 'user', content });
    } else if (m.content && !m.error) {
      out.push({ role: 'assistant', content: m.content });
    }
  }
  return out;
}

function requestBody(messages) {
  const s = state.settings;
  const body = {
    model: state.model || undefined,
    messages: apiMessages(messages),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(s.temperature),
    max_tokens: Number(s.maxTokens) || undefined,
    reasoning_effort: s.reasoningEffort,
  };
  if (s.extra.trim()) Object.assign(body, JSON.parse(s.extra));
  return body;
}

function mergeToolCalls(calls, deltas) {
  for (const d of deltas) {
    const i = d.index ?? calls.length;
    const call = calls[i] ??= { id: d.id, type: 'function', function: { name: '', arguments: '' } };
    if (d.id) call.id = d.id;
    if (d.function?.name) call.function.name += d.function.name;
    if (d.function?.arguments) call.function.arguments += d.function.arguments;
  }
}

async function generate() {
  const conv = current();
  const history = conv.messages.slice();
  const reply = { role: 'assistant', content: '', reasoning: '', tool_calls: [], stats: null, error: null };
  conv.messages.push(reply);
  let body;
  try {
    body = requestBody(history);
  } catch (e) {
    reply.error = `Settings: extra request fields are not valid JSON (${e.message})`;
    persist();
    return renderAll();
  }
  const controller = new AbortController();
  state.controller = controller;
  persist();
  renderAll();
  const t0 = performance.now();
  let first = null, last = null, chunks = 0, usageTokens = null, finish = null;
  // Decode speed over the tokens after the first; not shown until they span 50 ms (too few to measure).
  const rate = (tokens) => (tokens > 1 && last - first >= 50 ? ((tokens - 1) * 1000) / (last - first) : null);
  try {
    finish = await streamChat(body, {
      apiKey: state.apiKey,
      signal: controller.signal,
      onDelta(delta) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
        if (delta.content) reply.content += delta.content;
        const r = delta.reasoning_content ?? delta.reasoning;
        if (r) reply.reasoning += r;
        if (delta.tool_calls) mergeToolCalls(reply.tool_calls, delta.tool_calls);
        if (delta.content || r || delta.tool_calls) ++chunks;
        const tps = rate(chunks);
        reply.stats = { tokens: chunks, tps, ttft: first - t0 };
        el.speed.textContent = tps != null ? `${tps.toFixed(1)} tok/s` : '';
        renderLast();
      },
      onUsage(usage) { usageTokens = usage.completion_tokens; },
    });
  } catch (e) {
    if (e.name !== 'AbortError') {
      reply.error = e.message || String(e);
      if (e instanceof ApiError && e.status === 401) askForKey();
    }
  } finally {
    const stopped = controller.signal.aborted;
    const tokens = usageTokens ?? chunks;
    const tps = first === null ? null : rate(tokens);
    reply.stats = first === null && !stopped ? null : { tokens, tps, ttft: first === null ? null : first - t0, finish, stopped };
    if (tps != null) el.speed.textContent = `${tps.toFixed(1)} tok/s`;
    if (state.controller === controller) state.controller = null;
    persist();
    if (current() === conv) renderAll();
    else renderSidebar();
  }
}

function stop() {
  state.controller?.abort();
}

function regenerate() {
  if (isGenerating()) return;
  const msgs = current().messages;
  while (msgs.length && msgs[msgs.length - 1].role === 'assistant') msgs.pop();
  if (msgs.length) generate();
}

function send() {
  if (isGenerating()) return;
  const text = el.input.value.trim();
  if (!text && !state.images.length) return;
  if (!current()) newChat();
  const conv = current();
  conv.messages.push({ role: 'user', content: text, images: state.images });
  if (conv.title === 'New chat') conv.title = (text || 'Image').slice(0, 60);
  // The most recent conversation first.
  state.conversations = [conv, ...state.conversations.filter((c) => c !== conv)];
  state.images = [];
  el.input.value = '';
  renderAttachments();
  notice('');
  generate();
}

// ---- Images ----------------------------------------------------------------------------------------------

function renderAttachments() {
  el.attachments.replaceChildren(...state.images.map((src, i) => {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.src = src;
    img.alt = `attachment ${i + 1}`;
    fig.append(img, button('×', () => { state.images.splice(i, 1); renderAttachments(); }, 'remove'));
    fig.lastChild.setAttribute('aria-label', `Remove attachment ${i + 1}`);
    return fig;
  }));
  el.attachments.hidden = !state.images.length;
}

function addImageFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith('image/')) continue;
    const reader = new FileReader();
    reader.onload = () => { state.images.push(reader.result); renderAttachments(); };
    reader.readAsDataURL(file);
  }
}

// ---- Settings and the API key ----------------------------------------------------------------------------

function openSettings() {
  const s = state.settings;
  $('s-system').value = s.systemPrompt;
  $('s-temperature').value = s.temperature;
  $('s-max-tokens').value = s.maxTokens;
  $('s-reasoning').value = s.reasoningEffort;
  $('s-extra').value = s.extra;
  $('s-api-key').value = state.apiKey;
  el.settings.showModal();
}

function saveSettingsFromDialog() {
  state.settings = {
    systemPrompt: $('s-system').value,
    temperature: Number($('s-temperature').value),
    maxTokens: Number($('s-max-tokens').value),
    reasoningEffort: $('s-reasoning').value,
    extra: $('s-extra').value,
  };
  store.saveSettings(state.settings);
  const key = $('s-api-key').value.trim();
  if (key !== state.apiKey) {
    state.apiKey = key;
    store.saveApiKey(key);
    loadModels();
  }
  renderControls();
}

function askForKey() {
  if (el.keyDialog.open) return;
  el.keyInput.value = state.apiKey;
  el.keyDialog.showModal();
}

async function loadModels() {
  try {
    const models = await listModels(state.apiKey);
    state.model = models[0] ?? null;
    el.model.textContent = state.model ?? 'no model';
    notice('');
    if (!current()?.messages.length) renderMessages();
  } catch (e) {
    el.model.textContent = 'not connected';
    if (e instanceof ApiError && e.status === 401) askForKey();
    else notice(`Cannot list the models: ${e.message}`);
  }
}

// ---- Wiring ----------------------------------------------------------------------------------------------

el.composer.addEventListener('submit', (e) => { e.preventDefault(); send(); });
el.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
el.input.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData?.files ?? [])].filter((f) => f.type.startsWith('image/'));
  if (files.length) { e.preventDefault(); addImageFiles(files); }
});
el.file.addEventListener('change', () => { addImageFiles(el.file.files); el.file.value = ''; });
el.stop.addEventListener('click', stop);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && isGenerating()) stop(); });
el.newChat.addEventListener('click', newChat);
el.reasoning.addEventListener('change', () => {
  state.settings.reasoningEffort = el.reasoning.checked ? 'high' : 'none';
  store.saveSettings(state.settings);
});
el.openSettings.addEventListener('click', openSettings);
el.settings.addEventListener('close', () => { if (el.settings.returnValue === 'save') saveSettingsFromDialog(); });
el.keyDialog.addEventListener('close', () => {
  state.apiKey = el.keyInput.value.trim();
  store.saveApiKey(state.apiKey);
  loadModels();
});
el.messages.addEventListener('click', (e) => {
  const copy = e.target.closest('.code .copy');
  if (copy) navigator.clipboard?.writeText(copy.closest('.code').querySelector('code').textContent).catch(() => {});
});

if (!current()) state.currentId = state.conversations[0]?.id ?? null;
renderAttachments();
renderAll();
loadModels();
