// Builds web/dist/chat.html, the one self-contained file `quatre serve` embeds at `/`: the page's JS
// (marked, highlight.js and KaTeX bundled by esbuild) and CSS (ours, a highlight.js theme, KaTeX's) inlined.
// KaTeX's fonts are left out (the @font-face rules are dropped): math is laid out by KaTeX in the browser's
// own serif fonts, which keeps the page small. Run: npm run build:web
import { build } from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const read = (p) => readFileSync(p, 'utf8');

const js = await build({
  entryPoints: [join(here, 'src/main.js')],
  bundle: true, minify: true, format: 'iife', target: 'es2022', write: false, legalComments: 'none',
});
const katexCss = read(join(root, 'node_modules/katex/dist/katex.min.css')).replace(/@font-face\{[^}]*\}/g, '');
const hljsLight = read(join(root, 'node_modules/highlight.js/styles/github.min.css'));
const hljsDark = read(join(root, 'node_modules/highlight.js/styles/github-dark.min.css'));
const css = await build({
  stdin: { contents: `${read(join(here, 'src/style.css'))}\n${katexCss}\n${hljsLight}\n@media (prefers-color-scheme: dark){${hljsDark}}`, loader: 'css' },
  minify: true, write: false,
});
if (/url\(/.test(css.outputFiles[0].text)) throw new Error('build: the CSS still references a file (url(...)); the page must be self-contained');

// Inline scripts must not contain "</script" (nor styles "</style"): escape it.
const jsText = js.outputFiles[0].text.replace(/<\/script/gi, '<\\/script');
const cssText = css.outputFiles[0].text.replace(/<\/style/gi, '<\\/style');
const html = read(join(here, 'src/index.html'))
  .replace('/*INLINE_CSS*/', () => cssText)
  .replace('/*INLINE_JS*/', () => jsText);
mkdirSync(join(here, 'dist'), { recursive: true });
writeFileSync(join(here, 'dist/chat.html'), html);
console.log(`web/dist/chat.html: ${(html.length / 1024).toFixed(0)} KiB`);
