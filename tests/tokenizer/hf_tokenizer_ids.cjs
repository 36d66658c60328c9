// Checks scripts/make_hf_tokenizer_json.py's tokenizer.json: the Hugging Face tokenizers library (npm `tokenizers`,
// the Rust implementation's Node binding) encodes every line of the tokenizer corpus with it, and the ids must equal
// the JavaScript Tekken encoder's (js_ids.jsonl, js_reference_ids.cjs) line for line. Exit status 1 on a mismatch.
// Not compared: lines holding a special token's text (Hugging Face matches those as the special token; Tekken
// encodes text as text) and lines with U+0085 or U+FEFF, where JavaScript's \s differs from Unicode White_Space
// (tiktoken's, Hugging Face's and quatre's: test_tekken_real.cpp).
//   node tests/tokenizer/hf_tokenizer_ids.cjs CORPUS.jsonl TOKENIZER.json JS_IDS.jsonl
'use strict';
const fs = require('fs');
const path = require('path');

async function main() {
  const [corpusPath, tokenizerPath, jsIdsPath] = process.argv.slice(2);
  if (!corpusPath || !tokenizerPath || !jsIdsPath) {
    console.error('usage: node hf_tokenizer_ids.cjs CORPUS.jsonl TOKENIZER.json JS_IDS.jsonl');
    return 2;
  }
  const repo = path.resolve(__dirname, '..', '..');
  const { Tokenizer } = require(require.resolve('tokenizers', { paths: [repo] }));
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const decoder = new TextDecoder('utf-8', { fatal: false });  // as js_reference_ids.cjs reads raw bytes
  const lines = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0);
  const want = fs.readFileSync(jsIdsPath, 'utf8').split('\n').filter((l) => l.length > 0);
  if (lines.length !== want.length) {
    console.error(`${lines.length} corpus lines but ${want.length} reference lines`);
    return 1;
  }
  const specials = JSON.parse(fs.readFileSync(tokenizerPath, 'utf8')).added_tokens.map((t) => t.content);
  let bad = 0, skipped = 0;
  for (let i = 0; i < lines.length; ++i) {
    const entry = JSON.parse(lines[i]);
    const text = entry.hex !== undefined ? decoder.decode(Buffer.from(entry.hex, 'hex')) : entry.text;
    if (/[\u0085\uFEFF]/.test(text) || specials.some((s) => text.includes(s))) {
      ++skipped;
      continue;
    }
    const got = JSON.stringify(Array.from((await tokenizer.encode(text, null, { addSpecialTokens: false })).getIds()));
    if (got !== want[i]) {
      if (++bad <= 5) console.error(`line ${i + 1}: ${JSON.stringify(text).slice(0, 80)}\n  hf ${got.slice(0, 200)}\n  js ${want[i].slice(0, 200)}`);
    }
  }
  // With special tokens: <s> (id 1), then the text's ids.
  const hello = 'Hello, how are you?';
  const withBos = Array.from((await tokenizer.encode(hello, null, { addSpecialTokens: true })).getIds());
  const plain = Array.from((await tokenizer.encode(hello, null, { addSpecialTokens: false })).getIds());
  if (JSON.stringify(withBos) !== JSON.stringify([1, ...plain])) {
    console.error(`${JSON.stringify(hello)} with special tokens: ${JSON.stringify(withBos)}, expected [1, ...${JSON.stringify(plain)}]`);
    ++bad;
  }
  console.log(`${lines.length - skipped - bad} of ${lines.length - skipped} corpus lines encode alike (${skipped} not compared)`);
  if (lines.length - skipped < 10000) {
    console.error('fewer than 10,000 lines compared');
    return 1;
  }
  return bad === 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
