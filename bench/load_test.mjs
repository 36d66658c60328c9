// Load generator for `quatre serve` (not a test): N concurrent clients each run streaming chat completions back to
// back for a duration; reports requests/s, failures, time to first token and inter-token latency (p50/p99, from
// the arrival of SSE content chunks as the client reads them: chunks that come in one read are 0 apart), output tokens/s, and the server's RSS, open descriptors and threads over time
// (read from /proc/PID). Node only, no packages.
//
//   node bench/load_test.mjs --binary build/quatre --model DIR [--concurrency 64] [--duration 60] [--max-tokens 64]
//        (starts `quatre serve --port 0` itself, passes --serve-args "..." on, and stops it with SIGTERM at the end)
//   node bench/load_test.mjs --url http://127.0.0.1:8000 --pid PID [...]   (a server that is already running)
//
// Other options: --api-key KEY, --model-name NAME (default: the served one), --temperature T (0.7), --sample-every S (1),
// --json FILE (the whole result: samples and latencies summary). Exit code 1 when any request failed.
import { spawn } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

function parseArgs(argv) {
  const a = { concurrency: 64, duration: 60, maxTokens: 64, temperature: 0.7, sampleEvery: 1, serveArgs: "" };
  const names = { "--binary": "binary", "--model": "model", "--url": "url", "--pid": "pid", "--concurrency": "concurrency",
                  "--duration": "duration", "--max-tokens": "maxTokens", "--api-key": "apiKey", "--model-name": "modelName",
                  "--temperature": "temperature", "--sample-every": "sampleEvery", "--json": "json", "--serve-args": "serveArgs" };
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) throw new Error(`unknown or incomplete option ${argv[i]} (see the header of bench/load_test.mjs)`);
    a[key] = ["concurrency", "duration", "maxTokens", "temperature", "sampleEvery", "pid"].includes(key) ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!a.url && !(a.binary && a.model)) throw new Error("give --binary and --model, or --url (and --pid for process figures)");
  for (const k of ["concurrency", "duration", "maxTokens"]) if (!(a[k] > 0)) throw new Error(`--${k}: expected a positive number`);
  return a;
}

async function startServer(a) {
  const extra = a.serveArgs.split(" ").filter(Boolean);
  const proc = spawn(a.binary, ["serve", "--model", a.model, "--port", "0", ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/ready on (http:\/\/[^ ]+) \((.*)\)/);
      if (m) {
        console.log(`server: ${m[2]}`);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => reject(new Error(`quatre serve exited ${code}`)));
  });
  return { proc, url };
}

// RSS (MiB), open descriptors and threads of a process, from /proc.
function processSample(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (name) => Number((status.match(new RegExp(`^${name}:\\s+(\\d+)`, "m")) ?? [])[1]);
    return { rss_mib: field("VmRSS") / 1024, fds: readdirSync(`/proc/${pid}/fd`).length, threads: field("Threads") };
  } catch {
    return { rss_mib: NaN, fds: NaN, threads: NaN };
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const prompts = ["Tell me about Paris.", "Write a haiku about the sea.", "Explain recursion to a child.", "List three prime numbers.",
                 "What is the capital of Peru?", "Summarise the plot of Hamlet.", "Give me a recipe for pancakes.", "Why is the sky blue?"];

// One streaming chat: resolves with its timings, or { error }.
async function oneRequest(a, stats, i) {
  const t0 = performance.now();
  const headers = { "content-type": "application/json", ...(a.apiKey ? { authorization: `Bearer ${a.apiKey}` } : {}) };
  const body = { messages: [{ role: "user", content: prompts[i % prompts.length] }], max_tokens: a.maxTokens, temperature: a.temperature,
                 stream: true, stream_options: { include_usage: true }, ...(a.modelName ? { model: a.modelName } : {}) };
  try {
    const r = await fetch(`${a.url}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify(body) });
    if (r.status !== 200) return { error: `HTTP ${r.status}: ${(await r.text()).slice(0, 200)}` };
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let first;
    let last;
    let done = false;
    let finish;
    let tokens = 0;
    for (;;) {
      const { value, done: eof } = await reader.read();
      if (eof) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") {
          done = true;
          continue;
        }
        const chunk = JSON.parse(data);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        const choice = chunk.choices[0];
        if (!choice) continue;
        if (choice.finish_reason) finish = choice.finish_reason;
        const d = choice.delta ?? {};
        if (!(d.content || d.reasoning_content || d.tool_calls)) continue;
        const now = performance.now();
        if (first === undefined) stats.ttft.push(now - t0);
        else stats.itl.push(now - last);
        first ??= now;
        last = now;
      }
    }
    if (!done || !finish) return { error: `stream ended without ${done ? "a finish reason" : "[DONE]"}` };
    return { ms: performance.now() - t0, tokens };
  } catch (e) {
    return { error: String(e.cause ?? e) };
  }
}

async function main() {
  const a = parseArgs(process.argv);
  let server;
  if (!a.url) {
    server = await startServer(a);
    a.url = server.url;
    a.pid = server.proc.pid;
  }
  const stats = { ttft: [], itl: [], ok: 0, failed: 0, tokens: 0, errors: new Map() };
  const samples = [];
  const t0 = performance.now();
  const deadline = t0 + a.duration * 1000;
  const sample = () => {
    const s = { t_s: (performance.now() - t0) / 1000, ok: stats.ok, failed: stats.failed, tokens: stats.tokens, ...(a.pid ? processSample(a.pid) : {}) };
    samples.push(s);
    return s;
  };
  sample();
  let lastPrint = 0;
  const sampler = setInterval(() => {
    const s = sample();
    if (s.t_s - lastPrint >= 5) {
      lastPrint = s.t_s;
      console.log(`t=${s.t_s.toFixed(0)}s ok ${s.ok} failed ${s.failed} tokens ${s.tokens}` +
                  (a.pid ? ` rss ${s.rss_mib.toFixed(1)} MiB fds ${s.fds} threads ${s.threads}` : ""));
    }
  }, a.sampleEvery * 1000);
  let counter = 0;
  const client = async () => {
    while (performance.now() < deadline) {
      const r = await oneRequest(a, stats, counter++);
      if (r.error) {
        ++stats.failed;
        stats.errors.set(r.error, (stats.errors.get(r.error) ?? 0) + 1);
      } else {
        ++stats.ok;
        stats.tokens += r.tokens;
      }
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, client));
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  sample();
  stats.ttft.sort((x, y) => x - y);
  stats.itl.sort((x, y) => x - y);
  const proc = samples.filter((s) => Number.isFinite(s.rss_mib));
  const result = {
    url: a.url, concurrency: a.concurrency, duration_s: elapsed, max_tokens: a.maxTokens, requests_ok: stats.ok, requests_failed: stats.failed,
    requests_per_s: stats.ok / elapsed, output_tokens_per_s: stats.tokens / elapsed,
    ttft_ms: { p50: percentile(stats.ttft, 50), p99: percentile(stats.ttft, 99) },
    itl_ms: { p50: percentile(stats.itl, 50), p99: percentile(stats.itl, 99) },
    rss_mib: proc.length ? { first: proc[0].rss_mib, max: Math.max(...proc.map((s) => s.rss_mib)), last: proc[proc.length - 1].rss_mib } : null,
    fds: proc.length ? { first: proc[0].fds, max: Math.max(...proc.map((s) => s.fds)), last: proc[proc.length - 1].fds } : null,
    threads: proc.length ? { first: proc[0].threads, max: Math.max(...proc.map((s) => s.threads)), last: proc[proc.length - 1].threads } : null,
    errors: Object.fromEntries(stats.errors), samples,
  };
  const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : "-");
  console.log(`\n${a.concurrency} clients for ${elapsed.toFixed(1)} s: ${stats.ok} requests ok, ${stats.failed} failed; ` +
              `${f(result.requests_per_s)} requests/s, ${f(result.output_tokens_per_s)} output tokens/s`);
  console.log(`TTFT p50 ${f(result.ttft_ms.p50)} ms, p99 ${f(result.ttft_ms.p99)} ms; ITL p50 ${f(result.itl_ms.p50)} ms, p99 ${f(result.itl_ms.p99)} ms`);
  if (result.rss_mib) {
    console.log(`server RSS ${f(result.rss_mib.first)} -> max ${f(result.rss_mib.max)} -> ${f(result.rss_mib.last)} MiB; ` +
                `fds ${result.fds.first} -> max ${result.fds.max} -> ${result.fds.last}; threads ${result.threads.first} -> max ${result.threads.max} -> ${result.threads.last}`);
  }
  for (const [e, n] of stats.errors) console.log(`error x${n}: ${e}`);
  if (a.json) writeFileSync(a.json, JSON.stringify(result, null, 1));
  if (server) {
    server.proc.kill("SIGTERM");
    await new Promise((r) => server.proc.on("exit", r));
  }
  process.exitCode = stats.failed > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(`load_test: ${e.message}`);
  process.exitCode = 2;
});
