// What the page keeps in the browser (localStorage): conversations, settings and the API key.
const KEYS = { conversations: 'quatre.conversations', settings: 'quatre.settings', apiKey: 'quatre.apiKey', current: 'quatre.current' };

export const defaultSettings = { systemPrompt: '', temperature: 0.7, maxTokens: 1024, reasoningEffort: 'none', extra: '' };

function read(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v == null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

// Returns false when the browser refused (quota: images are large).
function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

export const loadConversations = () => read(KEYS.conversations, []);
export const saveConversations = (list) => write(KEYS.conversations, list);
export const loadSettings = () => ({ ...defaultSettings, ...read(KEYS.settings, {}) });
export const saveSettings = (s) => write(KEYS.settings, s);
export const loadApiKey = () => read(KEYS.apiKey, '');
export const saveApiKey = (k) => write(KEYS.apiKey, k);
export const loadCurrentId = () => read(KEYS.current, null);
export const saveCurrentId = (id) => write(KEYS.current, id);

export function newConversation() {
  const id = `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  return { id, title: 'New chat', created: Date.now(), messages: [] };
}
