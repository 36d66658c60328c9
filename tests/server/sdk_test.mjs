// Drives the real `quatre serve` binary with the official OpenAI and Mistral SDKs (and raw HTTP where the SDKs
// hide the wire): node sdk_test.mjs QUATRE_BINARY. Generates a tiny random checkpoint, so the assertions are on
// structure, determinism, streamed == whole text, finish reasons, usage against /tokenize, error statuses,
// constrained outputs that must parse, cancellation and draining — never on what the words say.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import zlib from "node:zlib";
import OpenAI from "openai";
import { Mistral } from "@mistralai/mistralai";

const binary = process.argv[2];
assert.ok(binary, "usage: node sdk_test.mjs QUATRE_BINARY");
const dir = mkdtempSync(path.join(tmpdir(), "quatre-serve-"));
const modelDir = path.join(dir, "model");
const servers = [];

async function startServer(extraArgs = [], model = modelDir) {
  const proc = spawn(binary, ["serve", "--model", model, "--port", "0", "--kv-cache-mib", "64", "--served-model-name", "tiny", ...extraArgs],
                     { stdio: ["ignore", "pipe", "pipe"] });
  servers.push(proc);
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/ready on (http:\/\/[^ ]+)/);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error(`quatre serve exited ${code}: ${stderr}`)));
  });
  return { proc, url };
}

let srv;
let openai;
let mistral;
before(async () => {
  execFileSync(binary, ["gen-model", modelDir, "--preset", "tiny"], { stdio: "ignore" });
  srv = await startServer();
  openai = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
  mistral = new Mistral({ serverURL: srv.url, apiKey: "unused" });
});
after(() => {
  for (const p of servers) if (p.exitCode === null) p.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

const messages = [{ role: "user", content: "Tell me about Paris." }];
const base = { model: "tiny", messages, temperature: 0, max_tokens: 24 };

async function post(pathname, body, headers = {}) {
  const r = await fetch(`${srv.url}${pathname}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}
async function rawStream(body) {
  const r = await fetch(`${srv.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(r.headers.get("content-type"), "text/event-stream");
  const text = await r.text();
  const events = text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
  return events;
}
async function metric(name) {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

test("health, version and models", async () => {
  assert.equal((await fetch(`${srv.url}/health`)).status, 200);
  const models = await openai.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
  assert.equal((await openai.models.retrieve("tiny")).id, "tiny");
  await assert.rejects(openai.models.retrieve("nope"), (e) => e.status === 404);
});

test("chat: deterministic at temperature 0, usage matches /tokenize", async () => {
  const a = await openai.chat.completions.create(base);
  const b = await openai.chat.completions.create(base);
  assert.match(a.id, /^chatcmpl-/);
  assert.equal(a.object, "chat.completion");
  assert.equal(a.choices.length, 1);
  assert.equal(a.choices[0].message.role, "assistant");
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.ok(["stop", "length"].includes(a.choices[0].finish_reason));
  const tok = await post("/tokenize", { model: "tiny", messages });
  assert.equal(a.usage.prompt_tokens, tok.body.count);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  if (a.choices[0].finish_reason === "length") assert.equal(a.usage.completion_tokens, 24);
  // the same seed gives the same sample at temperature 1
  const s1 = await openai.chat.completions.create({ ...base, temperature: 1, seed: 7 });
  const s2 = await openai.chat.completions.create({ ...base, temperature: 1, seed: 7 });
  assert.equal(s1.choices[0].message.content, s2.choices[0].message.content);
});

test("chat streaming: role first, text equals the whole response, usage chunk, [DONE]", async () => {
  const whole = await openai.chat.completions.create(base);
  const stream = await openai.chat.completions.create({ ...base, stream: true, stream_options: { include_usage: true } });
  let text = "";
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  for (const c of chunks) for (const ch of c.choices) text += ch.delta.content ?? "";
  assert.equal(text, whole.choices[0].message.content);
  const finish = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  assert.equal(finish.length, 1);
  assert.equal(finish[0].choices[0].finish_reason, whole.choices[0].finish_reason);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, whole.usage);
  const raw = await rawStream(base);
  assert.equal(raw[raw.length - 1], "[DONE]");
  for (const e of raw.slice(0, -1)) JSON.parse(e);  // every frame is one whole JSON object
});

test("stop strings: cut before the match, never streamed, finish stop", async () => {
  const whole = await openai.chat.completions.create({ ...base, max_tokens: 40 });
  const text = whole.choices[0].message.content;
  assert.ok(text.length >= 6, `the random model said too little: ${JSON.stringify(text)}`);
  const stop = text.slice(3, 6);
  const cut = text.slice(0, text.indexOf(stop));
  const r = await openai.chat.completions.create({ ...base, max_tokens: 40, stop: [stop, "\u0000never"] });
  assert.equal(r.choices[0].message.content, cut);
  assert.equal(r.choices[0].finish_reason, "stop");
  const stream = await openai.chat.completions.create({ ...base, max_tokens: 40, stop, stream: true });
  let streamed = "";
  for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? "";
  assert.equal(streamed, cut);
});

const weatherTool = {
  type: "function",
  function: { name: "get_weather", description: "Weather of a city",
              parameters: { type: "object", properties: { unit: { enum: ["celsius", "fahrenheit"] }, days: { type: "boolean" } },
                            required: ["unit", "days"], additionalProperties: false } },
};
const timeTool = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { utc: { type: "boolean" } }, required: ["utc"], additionalProperties: false } },
};

function checkCall(call) {
  assert.match(call.id, /^call_[A-Za-z0-9]{9}$/);
  assert.equal(call.type, "function");
  const args = JSON.parse(call.function.arguments);
  if (call.function.name === "get_weather") {
    assert.ok(["celsius", "fahrenheit"].includes(args.unit));
    assert.equal(typeof args.days, "boolean");
  } else {
    assert.equal(call.function.name, "get_time");
    assert.equal(typeof args.utc, "boolean");
  }
}

test("tools: required/any, named, parallel off, auto; arguments valid for the schema", async () => {
  const tools = [weatherTool, timeTool];
  for (const tool_choice of ["required", { type: "function", function: { name: "get_time" } }]) {
    const r = await openai.chat.completions.create({ ...base, max_tokens: 200, tools, tool_choice, parallel_tool_calls: false });
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    assert.equal(r.choices[0].message.content, null);
    assert.equal(r.choices[0].message.tool_calls.length, 1);
    checkCall(r.choices[0].message.tool_calls[0]);
    if (typeof tool_choice === "object") assert.equal(r.choices[0].message.tool_calls[0].function.name, "get_time");
  }
  // parallel calls: one or more, each complete one valid (a random model may keep calling until max_tokens)
  const par = await openai.chat.completions.create({ ...base, max_tokens: 120, tools, tool_choice: "required" });
  const parCalls = par.choices[0].message.tool_calls;
  assert.ok(parCalls.length >= 1);
  const complete = par.choices[0].finish_reason === "tool_calls" ? parCalls : parCalls.slice(0, -1);
  for (const c of complete) checkCall(c);
  assert.equal(new Set(parCalls.map((c) => c.id)).size, parCalls.length);
  const single = await openai.chat.completions.create({ ...base, temperature: 1, seed: 3, max_tokens: 200, tools, tool_choice: "required", parallel_tool_calls: false });
  assert.equal(single.choices[0].message.tool_calls.length, 1);
  const auto = await openai.chat.completions.create({ ...base, tools });
  assert.ok(["stop", "length", "tool_calls"].includes(auto.choices[0].finish_reason));
  // streamed tool calls: index on every delta, id and name first, arguments equal the whole call's
  const forced = { ...base, max_tokens: 200, tools, tool_choice: "required", parallel_tool_calls: false };
  const whole = await openai.chat.completions.create(forced);
  const stream = await openai.chat.completions.create({ ...forced, stream: true });
  const calls = [];
  let finish;
  for await (const c of stream) {
    const ch = c.choices[0];
    if (!ch) continue;
    for (const d of ch.delta.tool_calls ?? []) {
      assert.equal(typeof d.index, "number");
      if (d.id) calls[d.index] = { name: d.function.name, arguments: d.function.arguments ?? "" };
      else calls[d.index].arguments += d.function.arguments;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(finish, "tool_calls");
  assert.deepEqual(calls, whole.choices[0].message.tool_calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })));
  // an assistant turn with the tool call and the tool's result renders and continues
  const call = whole.choices[0].message.tool_calls[0];
  const next = await openai.chat.completions.create({ ...base, tools,
    messages: [...messages, whole.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" }] });
  assert.equal(next.choices[0].message.role, "assistant");
});

test("response_format json_schema and json_object: content parses and fits", async () => {
  const schema = { type: "object", properties: { city: { enum: ["Paris", "Lyon"] }, sunny: { type: "boolean" } }, required: ["city", "sunny"], additionalProperties: false };
  const r = await openai.chat.completions.create({ ...base, max_tokens: 100, response_format: { type: "json_schema", json_schema: { name: "w", schema, strict: true } } });
  const v = JSON.parse(r.choices[0].message.content);
  assert.ok(["Paris", "Lyon"].includes(v.city));
  assert.equal(typeof v.sunny, "boolean");
  assert.equal(r.choices[0].finish_reason, "stop");
  const o = await openai.chat.completions.create({ ...base, max_tokens: 200, response_format: { type: "json_object" } });
  if (o.choices[0].finish_reason === "stop") assert.equal(typeof JSON.parse(o.choices[0].message.content), "object");
});

test("reasoning_effort: high renders differently from none; other values are 400", async () => {
  const none = await post("/tokenize", { messages, reasoning_effort: "none" });
  const high = await post("/tokenize", { messages, reasoning_effort: "high" });
  assert.notDeepEqual(none.body.tokens, high.body.tokens);
  const r = await openai.chat.completions.create({ ...base, reasoning_effort: "high" });
  const m = r.choices[0].message;
  assert.equal(m.reasoning_content, m.reasoning);  // both or neither
  await assert.rejects(openai.chat.completions.create({ ...base, reasoning_effort: "low" }), (e) => e.status === 400);
});

test("logprobs: one entry per token, greedy token is the top alternative", async () => {
  const r = await openai.chat.completions.create({ ...base, logprobs: true, top_logprobs: 3 });
  const entries = r.choices[0].logprobs.content;
  assert.equal(entries.length, r.usage.completion_tokens);
  for (const e of entries) {
    assert.equal(e.top_logprobs.length, 3);
    assert.ok(e.logprob <= 0);
    assert.equal(e.logprob, e.top_logprobs[0].logprob);
    for (let i = 1; i < 3; ++i) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob);
    assert.ok(Array.isArray(e.bytes));
  }
  await assert.rejects(openai.chat.completions.create({ ...base, logprobs: true, top_logprobs: 21 }), (e) => e.status === 400);
});

test("n > 1: n choices, choice 0 equals n = 1, usage sums", async () => {
  const one = await openai.chat.completions.create({ ...base, temperature: 1, seed: 11 });
  const r = await openai.chat.completions.create({ ...base, temperature: 1, seed: 11, n: 3 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(r.choices[0].message.content, one.choices[0].message.content);
  assert.equal(r.usage.prompt_tokens, one.usage.prompt_tokens);
  const stream = await openai.chat.completions.create({ ...base, temperature: 1, seed: 11, n: 3, stream: true });
  const texts = ["", "", ""];
  for await (const c of stream) for (const ch of c.choices) texts[ch.index] += ch.delta.content ?? "";
  assert.deepEqual(texts, r.choices.map((c) => c.message.content));
});

test("errors: OpenAI error objects naming the field", async () => {
  const cases = [
    [{ ...base, temperature: "hot" }, 400, "temperature"],
    [{ ...base, top_p: 0 }, 400, "top_p"],
    [{ ...base, n: 0 }, 400, "n"],
    [{ ...base, max_tokens: 100000 }, 400, "messages"],
    [{ ...base, messages: [] }, 400, null],
    [{ ...base, model: "gpt-4" }, 404, "model"],
    [{ ...base, seed: 1, random_seed: 2 }, 400, "random_seed"],
    [{ ...base, tool_choice: "any" }, 400, "tool_choice"],
    [{ ...base, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://example.com/a.png" } }] }] }, 400, null],
  ];
  for (const [body, status, param] of cases) {
    const r = await post("/v1/chat/completions", body);
    assert.equal(r.status, status, JSON.stringify(body));
    assert.equal(typeof r.body.error.message, "string");
    if (param) assert.equal(r.body.error.param, param, r.body.error.message);
  }
  const overflow = await post("/v1/chat/completions", { ...base, max_tokens: 100000 });
  assert.equal(overflow.body.error.code, "context_length_exceeded");
  const bad = await fetch(`${srv.url}/v1/chat/completions`, { method: "POST", body: "{not json" });
  assert.equal(bad.status, 400);
  const unknown = await post("/v1/chat/completions", { ...base, some_future_field: 1 });
  assert.equal(unknown.status, 200);
  await assert.rejects(openai.chat.completions.create({ ...base, temperature: 5 }), (e) => e.status === 400 && e.param === "temperature");
  assert.equal((await fetch(`${srv.url}/v1/chat/completions`)).status, 405);
  assert.equal((await fetch(`${srv.url}/nope`)).status, 404);
});

// An RGB PNG of a seeded pattern (zlib from node, CRC-32 here), so the image tests need no files of their own.
const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type, data) {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
function png(width, height, seed) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;  // bit depth
  ihdr[9] = 2;  // RGB
  const stride = width * 3 + 1;  // a filter byte (0) per row
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) raw[y * stride + 1 + x * 3 + c] = (x * (5 + seed) + y * 3 * seed + c * 60 + ((x * y * (seed + 7)) % 31)) & 255;
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), pngChunk("IHDR", ihdr), pngChunk("IDAT", zlib.deflateSync(raw)),
                        pngChunk("IEND", Buffer.alloc(0))]);
}
const dataUrl = (buf) => `data:image/png;base64,${buf.toString("base64")}`;
const imagePart = (url) => ({ type: "image_url", image_url: { url } });
// `quatre run --image ...` on the same model: its greedy reply (stdout without the final newline).
function runWithImages(files, prompt, maxTokens) {
  const args = ["run", "--model", modelDir, "-p", prompt, "-n", String(maxTokens), "--temperature", "0"];
  for (const f of files) args.push("--image", f);
  const out = execFileSync(binary, args, { stdio: ["ignore", "pipe", "ignore"] }).toString();
  assert.ok(out.endsWith("\n"), out);
  return out.slice(0, -1);
}

test("images: data URLs equal quatre run --image; two in a message; the same image again equal, another differs", async () => {
  const a = png(60, 45, 1), b = png(90, 70, 2), c = png(60, 45, 3);  // c: a's size (the same [IMG] ids), other pixels
  const files = { a: path.join(dir, "a.png"), b: path.join(dir, "b.png") };
  writeFileSync(files.a, a);
  writeFileSync(files.b, b);
  const ask = (parts, extra = {}) => openai.chat.completions.create({ model: "tiny", temperature: 0, max_tokens: 16, ignore_eos: true,
                                                                       messages: [{ role: "user", content: parts }], ...extra });
  const text = { type: "text", text: "What differs?" };
  const one = await ask([imagePart(dataUrl(a)), text]);
  assert.equal(one.choices[0].message.content, runWithImages([files.a], "What differs?", 16));
  const two = await ask([imagePart(dataUrl(a)), imagePart(dataUrl(b)), text]);
  assert.equal(two.choices[0].message.content, runWithImages([files.a, files.b], "What differs?", 16));
  assert.equal(two.usage.prompt_tokens, one.usage.prompt_tokens + 15);  // b: 90x70 -> 4 x 3 [IMG] + 3 breaks/end
  // [text, image]: the image is laid out first (PROTOCOL §2.6), as quatre run does
  const swapped = await ask([text, imagePart(dataUrl(a))]);
  assert.equal(swapped.choices[0].message.content, one.choices[0].message.content);
  // the same request again (its blocks now come from the prefix cache), streamed: equal; another image: differs
  let streamed = "";
  for await (const ch of await ask([imagePart(dataUrl(a)), text], { stream: true })) streamed += ch.choices[0]?.delta?.content ?? "";
  assert.equal(streamed, one.choices[0].message.content);
  const other = await ask([imagePart(dataUrl(c)), text]);
  assert.equal(other.usage.prompt_tokens, one.usage.prompt_tokens);
  assert.notEqual(other.choices[0].message.content, one.choices[0].message.content);
  // /tokenize sizes images as chat does: 200x30 px is 112x28 after the tiny tower's 112-px cap (4 x 1 [IMG])
  const wide = [imagePart(dataUrl(png(200, 30, 4))), text];
  const tok = await post("/tokenize", { model: "tiny", messages: [{ role: "user", content: wide }] });
  assert.equal((await ask(wide)).usage.prompt_tokens, tok.body.count);
  assert.equal(tok.body.count, one.usage.prompt_tokens - 8 + 5);  // a: 3 x 2 [IMG] + 2 breaks/end
  // bare base64 and the Mistral SDK's image_url string form
  const bare = await ask([{ type: "image_url", image_url: a.toString("base64") }, text]);
  assert.equal(bare.choices[0].message.content, one.choices[0].message.content);
  const m = await mistral.chat.complete({ model: "tiny", temperature: 0, maxTokens: 16,
                                          messages: [{ role: "user", content: [{ type: "image_url", imageUrl: dataUrl(a) }, text] }] });
  assert.ok(one.choices[0].message.content.startsWith(m.choices[0].message.content), "EOS may end the Mistral reply earlier");
});

test("images: 400 naming the part for bad data, remote and file:// URLs; file:// under --allowed-local-media-path works", async () => {
  const a = png(60, 45, 1);
  const file = path.join(dir, "local.png");
  writeFileSync(file, a);
  const body = (url) => ({ model: "tiny", max_tokens: 4, messages: [{ role: "user", content: [{ type: "text", text: "hi" }, imagePart(url)] }] });
  const cases = [
    [dataUrl(Buffer.from("hello, not an image")).replace("image/png", "text/plain"), /not a PNG, JPEG, WebP or GIF/],
    [dataUrl(a.subarray(0, a.length - 40)), /./],                      // truncated
    [dataUrl(png(20000, 1, 1)), /16384/],                               // a side over the limit
    ["data:image/png;base64,@@@", /base64/],
    ["https://example.com/a.png", /--allow-remote-images/],
    [`file://${file}`, /--allowed-local-media-path/],
  ];
  for (const [url, message] of cases) {
    const r = await post("/v1/chat/completions", body(url));
    assert.equal(r.status, 400, url.slice(0, 60));
    assert.equal(r.body.error.param, "messages[0].content[1].image_url", r.body.error.message);
    assert.match(r.body.error.message, message);
  }
  const many = await post("/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: Array(9).fill(imagePart(dataUrl(a))) }] });
  assert.equal(many.status, 400);
  assert.equal(many.body.error.param, "messages");

  const want = await openai.chat.completions.create({ ...body(dataUrl(a)), temperature: 0, ignore_eos: true });
  const { proc, url } = await startServer(["--allowed-local-media-path", dir]);
  const postTo = async (b) => {
    const r = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(b) });
    return { status: r.status, body: await r.json() };
  };
  const ok = await postTo({ ...body(`file://${file}`), temperature: 0, ignore_eos: true });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.choices[0].message.content, want.choices[0].message.content);
  for (const outside of ["file:///etc/hostname", `file://${dir}/../${path.basename(dir)}/../etc/passwd`, `file://${dir}/missing.png`]) {
    const r = await postTo(body(outside));
    assert.equal(r.status, 400, outside);
    assert.equal(r.body.error.param, "messages[0].content[1].image_url");
  }
  proc.kill("SIGKILL");  // (SIGTERM would wait for fetch's idle keep-alive connection)

  // a model without a vision tower
  const textOnly = path.join(dir, "text-only");
  execFileSync(binary, ["gen-model", textOnly, "--preset", "tiny", "--text-only"], { stdio: "ignore" });
  const t = await startServer([], textOnly);
  const r = await fetch(`${t.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify(body(dataUrl(a))) });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /no vision tower/);
  t.proc.kill("SIGKILL");
});

test("images: http URLs are fetched with --allow-remote-images (--allow-private-image-hosts for loopback), refused without", async () => {
  const a = png(60, 45, 1);
  let pngRequests = 0;
  const host = http.createServer((req, res) => {
    if (req.url === "/a.png") {
      pngRequests++;
      res.writeHead(200, { "content-type": "image/png" }).end(a);
    } else if (req.url === "/moved") {
      res.writeHead(302, { location: "/a.png" }).end();
    } else {
      res.writeHead(404).end("no such image");
    }
  });
  await new Promise((resolve) => host.listen(0, "127.0.0.1", resolve));
  const imageUrl = (p) => `http://127.0.0.1:${host.address().port}${p}`;
  const body = (url) => ({ model: "tiny", max_tokens: 8, temperature: 0, ignore_eos: true,
                           messages: [{ role: "user", content: [{ type: "text", text: "hi" }, imagePart(url)] }] });
  const postTo = async (base, b) => {
    const r = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(b) });
    return { status: r.status, body: await r.json() };
  };
  try {
    // without the flag (the suite's server): refused, nothing fetched
    const off = await post("/v1/chat/completions", body(imageUrl("/a.png")));
    assert.equal(off.status, 400);
    assert.equal(off.body.error.param, "messages[0].content[1].image_url");
    assert.match(off.body.error.message, /--allow-remote-images/);

    const want = await post("/v1/chat/completions", body(dataUrl(a)));
    assert.equal(want.status, 200);
    const on = await startServer(["--allow-remote-images", "--allow-private-image-hosts"]);
    const got = await postTo(on.url, body(imageUrl("/a.png")));
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(got.body.choices[0].message.content, want.body.choices[0].message.content);
    assert.equal(got.body.usage.prompt_tokens, want.body.usage.prompt_tokens);
    const twice = { ...body(imageUrl("/moved")) };
    twice.messages[0].content.push(imagePart(imageUrl("/moved")));  // the same URL twice: fetched once
    const before = pngRequests;
    assert.equal((await postTo(on.url, twice)).status, 200);
    assert.equal(pngRequests, before + 1);
    const missing = await postTo(on.url, body(imageUrl("/nope.png")));
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.param, "messages[0].content[1].image_url");
    assert.match(missing.body.error.message, /answered 404/);
    on.proc.kill("SIGKILL");

    // --allow-remote-images alone: loopback is a private address
    const publicOnly = await startServer(["--allow-remote-images"]);
    const refused = await postTo(publicOnly.url, body(imageUrl("/a.png")));
    assert.equal(refused.status, 400);
    assert.match(refused.body.error.message, /loopback address.*--allow-private-image-hosts/);
    publicOnly.proc.kill("SIGKILL");
  } finally {
    host.close();
  }
});

test("text completions: string and token prompts, streaming equals whole, echo", async () => {
  const body = { model: "tiny", prompt: "Once upon a time", temperature: 0, max_tokens: 12 };
  const r = await openai.completions.create(body);
  assert.equal(r.object, "text_completion");
  const tok = await post("/tokenize", { prompt: "Once upon a time" });
  assert.equal(r.usage.prompt_tokens, tok.body.count);
  const byIds = await openai.completions.create({ ...body, prompt: tok.body.tokens });
  assert.equal(byIds.choices[0].text, r.choices[0].text);
  let streamed = "";
  for await (const c of await openai.completions.create({ ...body, stream: true })) streamed += c.choices[0]?.text ?? "";
  assert.equal(streamed, r.choices[0].text);
  const echo = await openai.completions.create({ ...body, echo: true });
  assert.ok(echo.choices[0].text.endsWith(r.choices[0].text));
  assert.ok(echo.choices[0].text.startsWith("Once upon a time"));
  const lp = await openai.completions.create({ ...body, logprobs: 2 });
  assert.equal(lp.choices[0].logprobs.tokens.length, lp.usage.completion_tokens);
  const det = await post("/detokenize", { tokens: tok.body.tokens });
  assert.equal(det.body.prompt, "Once upon a time");
});

test("Mistral SDK: complete and stream agree with the OpenAI SDK; tool choice any", async () => {
  const oa = await openai.chat.completions.create({ ...base, seed: 5 });
  const r = await mistral.chat.complete({ model: "tiny", messages, temperature: 0, maxTokens: 24, randomSeed: 5 });
  assert.equal(r.choices[0].message.content, oa.choices[0].message.content);
  assert.equal(r.usage.promptTokens, oa.usage.prompt_tokens);
  let text = "";
  for await (const ev of await mistral.chat.stream({ model: "tiny", messages, temperature: 0, maxTokens: 24 })) {
    text += ev.data.choices[0]?.delta?.content ?? "";
  }
  assert.equal(text, oa.choices[0].message.content);
  const tools = [weatherTool, timeTool].map((t) => ({ type: "function", function: t.function }));
  const t = await mistral.chat.complete({ model: "tiny", messages, temperature: 0, maxTokens: 200, tools, toolChoice: "any", parallelToolCalls: false });
  assert.equal(t.choices[0].finishReason, "tool_calls");
  for (const c of t.choices[0].message.toolCalls) {
    const args = typeof c.function.arguments === "string" ? c.function.arguments : JSON.stringify(c.function.arguments);
    checkCall({ id: c.id, type: "function", function: { name: c.function.name, arguments: args } });
  }
});

test("metrics: Prometheus text with request counts, latency histograms, token counters and engine gauges", async () => {
  await openai.chat.completions.create(base);
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  assert.match(text, /^quatre_requests_total\{endpoint="chat",status="200"\} [1-9]/m);
  assert.match(text, /^quatre_requests_total\{endpoint="chat",status="400"\} [1-9]/m);
  assert.ok((await metric("quatre_time_to_first_token_seconds_count")) >= 1);
  assert.ok((await metric("quatre_inter_token_latency_seconds_count")) >= 1);
  assert.ok((await metric("quatre_generation_tokens_total")) >= 24);
  for (const g of ["quatre_requests_running", "quatre_requests_waiting", "quatre_kv_cache_usage_ratio", "quatre_prefix_cache_hit_rate"]) {
    assert.ok(Number.isFinite(await metric(g)), g);
  }
  // repeated prompts hit the prefix cache
  assert.ok((await metric("quatre_prefix_cache_hit_rate")) > 0);
});

test("cancellation: a client that goes away frees the engine", async () => {
  const start = await metric("quatre_generation_tokens_total");
  const controller = new AbortController();
  const stream = await openai.chat.completions.create({ ...base, max_tokens: 800, ignore_eos: true, stream: true }, { signal: controller.signal });
  let n = 0;
  try {
    for await (const c of stream) if (++n === 3) controller.abort();
  } catch (e) {
    assert.equal(e.name, "APIUserAbortError");
  }
  let before = await metric("quatre_generation_tokens_total");
  for (let i = 0; i < 50; ++i) {  // within 5 s the engine stops generating for it
    await new Promise((r) => setTimeout(r, 100));
    const now = await metric("quatre_generation_tokens_total");
    if (now === before) break;
    before = now;
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await metric("quatre_generation_tokens_total"), before);
  assert.ok(before - start < 800, `the aborted request ran to its end (${before - start} tokens)`);
  const r = await openai.chat.completions.create(base);
  assert.equal(r.choices.length, 1);
});

test("1,000 idle connections do not starve /health or a chat request", async () => {
  const sockets = [];
  const { port, hostname } = new URL(srv.url);
  await Promise.all(Array.from({ length: 1000 }, () => new Promise((resolve, reject) => {
    const s = net.connect(Number(port), hostname, () => resolve());
    s.on("error", reject);
    sockets.push(s);
  })));
  // half of them slow: a request line trickling in
  for (const s of sockets.slice(0, 500)) s.write("GET /health HTTP/1.1\r\n");
  try {
    const t0 = performance.now();
    assert.equal((await fetch(`${srv.url}/health`)).status, 200);
    const r = await openai.chat.completions.create(base);
    const ms = performance.now() - t0;
    assert.equal(r.choices.length, 1);
    assert.ok(ms < 3000, `took ${ms} ms with 1,000 open connections`);
  } finally {
    for (const s of sockets) s.destroy();
  }
});

// A client's pooled keep-alive connection (Node's agent here, as the SDKs' HTTP clients pool theirs) serves request
// after request; cpp-httplib's default closed it after every fifth, so the client reconnected.
test("keep-alive: one pooled connection serves 30 requests in a row, a chat among them", async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const { port, hostname } = new URL(srv.url);
  const request = (method, pathname, body) => new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path: pathname, method, agent, headers: body ? { "content-type": "application/json" } : {} }, (res) => {
      let text = "";
      res.on("data", (d) => { text += d; });
      res.on("end", () => resolve({ status: res.statusCode, reused: req.reusedSocket, text }));
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
  try {
    const reused = [];
    for (let i = 0; i < 30; i++) {
      const r = i === 15 ? await request("POST", "/v1/chat/completions", base) : await request("GET", "/health");
      assert.equal(r.status, 200, r.text);
      reused.push(r.reused);
    }
    assert.deepEqual(reused, [false, ...Array(29).fill(true)]);
  } finally {
    agent.destroy();
  }
});

test("API key: 401 without it, /health open; CORS headers when asked", async () => {
  const { proc, url } = await startServer(["--api-key", "sekret", "--cors-origin", "https://app.example"]);
  assert.equal((await fetch(`${url}/health`)).status, 200);
  const denied = await fetch(`${url}/v1/models`);
  assert.equal(denied.status, 401);
  assert.equal((await denied.json()).error.type, "authentication_error");
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sekret", maxRetries: 0 });
  assert.equal((await client.models.list()).data[0].id, "tiny");
  await assert.rejects(new OpenAI({ baseURL: `${url}/v1`, apiKey: "wrong", maxRetries: 0 }).models.list(), (e) => e.status === 401);
  const pre = await fetch(`${url}/v1/chat/completions`, { method: "OPTIONS" });
  assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.example");
  proc.kill("SIGTERM");
  const code = await new Promise((r) => proc.on("exit", r));
  assert.equal(code, 0);
  assert.equal((await fetch(`${srv.url}/health`)).headers.get("access-control-allow-origin"), null);  // off by default
});

test("SIGTERM drains a stream in flight, then exits 0", async () => {
  const stream = await openai.chat.completions.create({ ...base, max_tokens: 60, ignore_eos: true, stream: true });
  let n = 0;
  let finish;
  const exited = new Promise((r) => srv.proc.on("exit", r));
  for await (const c of stream) {
    if (++n === 2) srv.proc.kill("SIGTERM");
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(finish, "length");
  assert.equal(await exited, 0);
});
