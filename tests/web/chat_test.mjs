// The built-in chat page (web/) in headless Chromium, driven by Playwright, against a real `quatre serve` on
// loopback with the built-in demo model (issue #12: scripts/make_default_model.sh lays it out; ~40 tokens/s on a
// busy 2-core machine, so a 900-token reply runs long enough to be stopped). The steps assert behaviour
// (requests sent, streamed text rendered, stop cancels on the server, storage survives a reload), never wording.
//
// Usage: node chat_test.mjs QUATRE_BINARY OUT_DIR [--docs-screenshot FILE]
// Screenshots go to OUT_DIR; --docs-screenshot also writes the README's picture (docs/web-chat.png).
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { chromium } from 'playwright-core';

const [quatre, outDir] = process.argv.slice(2);
const docsIdx = process.argv.indexOf('--docs-screenshot');
const docsScreenshot = docsIdx > 0 ? process.argv[docsIdx + 1] : null;
if (!quatre || !outDir) throw new Error('usage: node chat_test.mjs QUATRE_BINARY OUT_DIR [--docs-screenshot FILE]');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const API_KEY = 'test-key-123';
mkdirSync(outDir, { recursive: true });

// ---- the server ------------------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'quatre-web-'));
const modelDir = join(work, 'model');
execFileSync('bash', [new URL('../../scripts/make_default_model.sh', import.meta.url).pathname, modelDir], { stdio: 'pipe' });

function startServer() {
  const proc = spawn(quatre, ['serve', '--model', modelDir, '--port', '0', '--api-key', API_KEY, '--seed', '1',
    '--kv-cache-mib', '64', '--max-model-len', '1024'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const url = new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /ready on (http:\/\/[0-9.:]+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`quatre serve exited (${code}) before it was ready:\n${log}`)));
    setTimeout(() => reject(new Error(`quatre serve not ready after 60 s:\n${log}`)), 60000).unref();
  });
  return { proc, url, log: () => log };
}

const tStart = Date.now();
const server = startServer();
const base = await server.url;
const auth = { Authorization: `Bearer ${API_KEY}` };

// GET on a connection of its own that closes after the answer (an idle keep-alive connection would hold up
// the server's drain at exit).
function get(path, { withKey = true } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { ...(withKey ? auth : {}), Connection: 'close' };
    const req = httpRequest(`${base}${path}`, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function runningRequests() {
  const text = await get('/metrics');
  return Number(/^quatre_requests_running (\S+)$/m.exec(text)[1]);
}

// ---- the browser -----------------------------------------------------------------------------------------

console.log(`server ready (${Date.now() - tStart} ms)`);
const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, colorScheme: 'light' });
const page = await context.newPage();
// Keeps a copy of each chat completion's raw body (decoded by the browser) for the steps to compare with.
await context.addInitScript(() => {
  const original = window.fetch;
  window.sseBodies = [];
  window.fetch = async (...args) => {
    const res = await original(...args);
    if (String(args[0]).endsWith('/v1/chat/completions')) {
      const slot = window.sseBodies.push(null) - 1;
      res.clone().text().then((t) => { window.sseBodies[slot] = t; }, () => { window.sseBodies[slot] = ''; });
    }
    return res;
  };
});
console.log(`browser up (${Date.now() - tStart} ms)`);
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // The first /v1/models call is refused (no key yet); the image may be refused (no vision): both expected.
  if (m.type() === 'error' && !/status of (401|400)/.test(m.text())) problems.push(`console: ${m.text()}`);
});

let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    await page.screenshot({ path: join(outDir, 'web-failure.png') }).catch(() => {});
    console.error(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
  passed++;
  console.log(`ok ${name} (${Date.now() - t0} ms)`);
}

// Sends `text` and returns {request body, SSE events, final stored conversation} once the reply is done.
async function sendAndWait(text, { beforeSend } = {}) {
  const requestP = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions') && r.method() === 'POST');
  const responseP = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions'));
  await page.fill('#input', text);
  if (beforeSend) await beforeSend();
  await page.press('#input', 'Enter');
  const request = await requestP;
  const response = await responseP;
  await page.locator('#send').waitFor({ state: 'visible', timeout: 60000 });
  const body = await page.waitForFunction(() => window.sseBodies.at(-1) != null).then(() => page.evaluate(() => window.sseBodies.at(-1)));
  return { request: request.postDataJSON(), response, body, conversation: await storedConversation() };
}

const storedConversation = () => page.evaluate(() => {
  const id = JSON.parse(localStorage.getItem('quatre.current'));
  return JSON.parse(localStorage.getItem('quatre.conversations')).find((c) => c.id === id);
});
const lastAssistant = () => page.locator('article.msg.assistant').last();

// Clicks Save in the settings dialog and waits until the page has stored `expected` (a subset of the settings):
// the page saves on the dialog's close event, which the browser fires in a later task than the click.
async function saveSettings(expected) {
  await page.click('#s-save');
  await page.waitForFunction((want) => {
    const s = JSON.parse(localStorage.getItem('quatre.settings'));
    return s != null && Object.entries(want).every(([k, v]) => JSON.stringify(s[k]) === JSON.stringify(v));
  }, expected, { timeout: 10000 });
}

// The content deltas of an SSE body, concatenated, and its usage.
function parseSse(body) {
  let content = '', reasoning = '', usage = null;
  for (const line of body.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const chunk = JSON.parse(line.slice(6));
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices || []) {
      content += c.delta?.content || '';
      reasoning += c.delta?.reasoning_content || '';
    }
  }
  return { content, reasoning, usage };
}

try {
  await step('the page loads from / and asks for the API key', async () => {
    const res = await page.goto(base + '/');
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'], /text\/html/);
    // The page is public (the API is not) and is the committed web/dist/chat.html, byte for byte.
    const page_ = readFileSync(new URL('../../web/dist/chat.html', import.meta.url), 'utf8');
    assert.equal(await get('/', { withKey: false }), page_);
    assert.equal(await get('/index.html', { withKey: false }), page_);
    assert.match(await get('/v1/models', { withKey: false }), /Incorrect or missing API key/);
    await page.locator('#key-dialog').waitFor({ state: 'visible' });
    await page.fill('#key-input', API_KEY);
    await page.click('#key-save');
    const models = JSON.parse(await get('/v1/models'));
    await page.locator('#model').filter({ hasText: models.data[0].id }).waitFor();
    assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem('quatre.apiKey'))), API_KEY);
  });

  await step('settings are saved', async () => {
    await page.click('#open-settings');
    await page.fill('#s-system', 'You are a test.');
    await page.fill('#s-temperature', '0.5');
    await page.fill('#s-max-tokens', '24');
    await saveSettings({ systemPrompt: 'You are a test.', temperature: 0.5, maxTokens: 24 });
    const s = await page.evaluate(() => JSON.parse(localStorage.getItem('quatre.settings')));
    assert.deepEqual([s.systemPrompt, s.temperature, s.maxTokens, s.reasoningEffort], ['You are a test.', 0.5, 24, 'none']);
  });

  await step('a message gets a streamed reply', async () => {
    // Record the reply's rendered length at each DOM change: a streamed reply grows in several steps.
    await page.evaluate(() => {
      window.lengths = [];
      new MutationObserver(() => {
        const c = document.querySelector('article.msg.assistant:last-child .content');
        if (c) window.lengths.push(c.textContent.length);
      }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
    });
    const { request, response, body, conversation } = await sendAndWait('Hello there');
    assert.equal(request.stream, true);
    assert.equal(request.max_tokens, 24);
    assert.equal(request.temperature, 0.5);
    assert.equal(request.reasoning_effort, 'none');
    assert.deepEqual(request.messages, [{ role: 'system', content: 'You are a test.' }, { role: 'user', content: 'Hello there' }]);
    assert.match(response.headers()['content-type'], /text\/event-stream/);
    const sse = parseSse(body);
    assert.ok(sse.content.length > 0, 'the server streamed no content');
    // What the page kept is exactly what the server streamed; the token count is the server's.
    const reply = conversation.messages[1];
    assert.equal(reply.content, sse.content);
    assert.equal(reply.stats.tokens, sse.usage.completion_tokens);
    const distinct = new Set((await page.evaluate(() => window.lengths)).filter((n) => n > 0));
    assert.ok(distinct.size >= 2, `the reply appeared at once, not streamed (lengths ${[...distinct]})`);
    assert.ok((await lastAssistant().locator('.content').textContent()).trim().length > 0);
    assert.match(await lastAssistant().locator('.stats').textContent(), new RegExp(`^${sse.usage.completion_tokens} tokens · [0-9.]+ tok/s`));
    assert.match(await page.textContent('#speed'), /^[0-9.]+ tok\/s$/);
    assert.equal(await page.locator('.conversation .open[aria-current]').textContent(), 'Hello there');
    await page.screenshot({ path: join(outDir, 'web-reply.png') });
  });

  await step('the reasoning toggle sends reasoning_effort high', async () => {
    await page.check('#reasoning');
    const { request, conversation } = await sendAndWait('Think first');
    assert.equal(request.reasoning_effort, 'high');
    assert.equal(request.messages.length, 4);  // system, user, assistant, user
    assert.equal(request.messages[2].role, 'assistant');
    assert.ok(!conversation.messages[3].error, conversation.messages[3].error);
    await page.uncheck('#reasoning');
    assert.equal((await page.evaluate(() => JSON.parse(localStorage.getItem('quatre.settings')))).reasoningEffort, 'none');
  });

  await step('an image is attached and sent (reply or the server\'s error shown)', async () => {
    const png = await page.evaluate(() => {
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = 48;
      const g = canvas.getContext('2d');
      g.fillStyle = '#e8590c';
      g.fillRect(0, 0, 48, 48);
      g.fillStyle = '#1c7ed6';
      g.beginPath();
      g.arc(24, 24, 14, 0, 2 * Math.PI);
      g.fill();
      return canvas.toDataURL('image/png').split(',')[1];
    });
    await page.setInputFiles('#file', { name: 'circle.png', mimeType: 'image/png', buffer: Buffer.from(png, 'base64') });
    await page.locator('#attachments img').waitFor();
    const { request, response, body } = await sendAndWait('What is in this image?');
    const content = request.messages.at(-1).content;
    assert.equal(content[0].text, 'What is in this image?');
    assert.equal(content[1].type, 'image_url');
    assert.equal(content[1].image_url.url, `data:image/png;base64,${png}`);
    assert.equal(await page.locator('#attachments img').count(), 0);
    await page.locator('article.msg.user').last().locator('.images img').waitFor();
    if (response.status() === 200) {
      assert.ok(parseSse(body).content.length > 0);
    } else {
      // No vision in this build: the server's own message is shown.
      const message = JSON.parse(body).error.message;
      assert.equal((await lastAssistant().locator('.error').textContent()).trim(), message);
      assert.match(message, /image/i);
    }
    await page.screenshot({ path: join(outDir, 'web-image.png') });
  });

  await step('stop ends a long reply and the server cancels it', async () => {
    await page.click('#open-settings');
    await page.fill('#s-max-tokens', '900');
    await page.fill('#s-extra', '{"ignore_eos": true}');
    await saveSettings({ maxTokens: 900, extra: '{"ignore_eos": true}' });
    // A new conversation: the last one holds an image, which a model without vision refuses on every turn.
    await page.click('#new-chat');
    await page.fill('#input', 'Tell me a long story');
    await page.press('#input', 'Enter');
    await page.locator('#stop').waitFor({ state: 'visible' });
    await page.waitForFunction(() => document.querySelector('article.msg.assistant:last-child .content')?.textContent.length > 20);
    assert.equal(await runningRequests(), 1);
    await page.click('#stop');
    await page.locator('#send').waitFor({ state: 'visible' });
    const stored = (await storedConversation()).messages.at(-1);
    assert.ok(stored.stats.stopped);
    assert.ok(stored.stats.tokens < 900);
    assert.match(await lastAssistant().locator('.stats').textContent(), /stopped/);
    // The server drops the request (it would otherwise run for ~900 tokens).
    const deadline = Date.now() + 5000;
    while ((await runningRequests()) !== 0) {
      assert.ok(Date.now() < deadline, 'the server still generates after stop');
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await storedConversation()).messages.at(-1).content, stored.content);
  });

  await step('regenerate replaces the last reply', async () => {
    await page.click('#open-settings');
    await page.fill('#s-max-tokens', '24');
    await page.fill('#s-extra', '');
    await saveSettings({ maxTokens: 24, extra: '' });
    const requestP = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    const before = (await storedConversation()).messages.length;
    await lastAssistant().locator('button.regenerate').click();
    const request = (await requestP).postDataJSON();
    assert.deepEqual(request.messages.at(-1), { role: 'user', content: 'Tell me a long story' });
    assert.equal(request.ignore_eos, undefined);
    await page.locator('#send').waitFor({ state: 'visible' });
    const after = await storedConversation();
    assert.equal(after.messages.length, before);
    assert.ok(!after.messages.at(-1).stats.stopped);
  });

  await step('editing a message resends from there', async () => {
    await page.locator('article.msg.user').first().locator('button.edit').click();
    await page.fill('article.msg.user .edit-area', 'Edited question');
    const requestP = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.click('button.save-edit');
    const request = (await requestP).postDataJSON();
    assert.deepEqual(request.messages, [{ role: 'system', content: 'You are a test.' }, { role: 'user', content: 'Edited question' }]);
    await page.locator('#send').waitFor({ state: 'visible' });
    const conv = await storedConversation();
    assert.deepEqual(conv.messages.map((m) => m.role), ['user', 'assistant']);
    assert.equal(conv.messages[0].content, 'Edited question');
    assert.equal(await page.locator('article.msg').count(), 2);
  });

  await step('conversations survive a reload', async () => {
    await page.click('#new-chat');
    await sendAndWait('Second conversation');
    await page.reload();
    await page.locator('#model').filter({ hasNotText: /connecting|not connected/ }).waitFor();
    assert.equal(await page.locator('#key-dialog').isVisible(), false);  // the key was kept
    const titles = await page.locator('.conversation .open').allTextContents();
    assert.deepEqual(titles, ['Second conversation', 'Tell me a long story', 'Hello there']);
    assert.equal(await page.locator('article.msg.user .text').first().textContent(), 'Second conversation');
    await page.click('.conversation .open >> text=Tell me a long story');
    assert.equal(await page.locator('article.msg.user .text').first().textContent(), 'Edited question');
    assert.equal(await page.locator('article.msg.assistant').count(), 1);
    await page.click('.conversation .open >> text=Hello there');
    assert.equal(await page.locator('article.msg.user').count(), 3);
    assert.equal(await page.locator('article.msg.user .images img').count(), 1);
  });

  await step('reasoning, tool calls, code and math render (a canned stream)', async () => {
    // The random model emits no [THINK] or tool call: this stream, in the server's framing, stands in for it.
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const answer = 'The **energy** is $E = mc^2$, and for a sum:\n\n$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$\n\n' +
      '```python\ndef total(n):\n    return n * (n + 1) // 2\n```\n\nRaw <img src=x onerror="window.pwned=1"> stays text.';
    const sse = [chunk({ role: 'assistant', content: '' }),
      ...['The user asks for ', 'a closed form; ', 'Gauss: n(n+1)/2.'].map((r) => chunk({ reasoning_content: r })),
      ...answer.match(/[\s\S]{1,12}/g).map((c) => chunk({ content: c })),
      chunk({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'check_sum', arguments: '{"n": 1' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '0, "expected": 55}' } }] }),
      chunk({}, 'tool_calls'), 'data: [DONE]\n\n'].join('');
    await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200, contentType: 'text/event-stream', body: sse }));
    await page.click('#new-chat');
    await sendAndWait('What is 1 + 2 + ... + n?');
    await page.unroute('**/v1/chat/completions');
    const reply = lastAssistant();
    const reasoning = reply.locator('details.reasoning');
    assert.equal(await reasoning.getAttribute('open'), null);  // collapsed once the answer is done
    await reasoning.locator('summary').click();
    assert.match(await reasoning.locator('.reasoning-body').textContent(), /closed form; Gauss/);
    assert.ok(await reply.locator('.content .katex').count() >= 2);
    assert.equal(await reply.locator('.content .math-block .katex-display').count(), 1);
    assert.ok(await reply.locator('.content code.language-python .hljs-keyword').count() >= 2);
    assert.equal(await reply.locator('.content img').count(), 0);
    assert.match(await reply.locator('.content').textContent(), /<img src=x/);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.match(await reply.locator('.tool-call summary').textContent(), /check_sum/);
    assert.deepEqual(JSON.parse(await reply.locator('.tool-call pre').textContent()), { n: 10, expected: 55 });
    assert.match(await reply.locator('.stats').textContent(), /^22 tokens · first token [0-9.]+ s · finish: tool_calls/);
    await page.screenshot({ path: join(outDir, 'web-chat.png') });
    if (docsScreenshot) copyFileSync(join(outDir, 'web-chat.png'), docsScreenshot);
  });

  await step('no script errors', async () => {
    assert.deepEqual(problems, []);
  });
  console.log(`web chat: ${passed} steps passed`);
} finally {
  const tEnd = Date.now();
  await browser.close();
  console.log(`browser closed (${Date.now() - tEnd} ms)`);
  server.proc.kill('SIGTERM');
  await new Promise((r) => server.proc.once('exit', r));
  rmSync(work, { recursive: true, force: true });
  console.log(`shut down (${Date.now() - tEnd} ms)`);
}
