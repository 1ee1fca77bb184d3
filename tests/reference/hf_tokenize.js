#!/usr/bin/env node
// Oracle for io/tokenizer.cpp: encodes every test string with Hugging Face's Rust `tokenizers`
// library (through the @anush008/tokenizers Node binding) and writes the expected ids.
//
//   node hf_tokenize.js STRINGS_FILE OUT_DIR
//
// Setup once: npm install --no-package-lock --prefix tests/reference
//
// STRINGS_FILE: one case per line; '#' starts a comment line, empty lines are skipped. A line with
// a TAB is a pair, split at the first TAB. Escapes (the C++ test decodes them identically):
// \u{HEX} any code point, \t \n \r, \\ a backslash, \e nothing (writes the empty string).
//
// OUT_DIR/variants.json: the normaliser settings of each variant (all share the
//   bert-base-uncased vocabulary): uncased is tokenizer.json as published, the others flip the
//   BertNormalizer options the C++ TokenizerOptions expose.
// OUT_DIR/expected.jsonl: one line per (variant, case, max_len):
//   {"variant", "line" (1-based line in STRINGS_FILE), "source" (that line as written),
//    "max_len" (0 = no truncation), "ids", "type_ids"}
'use strict';
const fs = require('fs');
const path = require('path');

let Tokenizer;
try {
  ({ Tokenizer } = require('@anush008/tokenizers'));
} catch (e) {
  console.error('hf_tokenize.js: @anush008/tokenizers is not installed; run\n' +
                '  npm install --no-package-lock --prefix tests/reference');
  process.exit(2);
}

// Truncation lengths, special tokens included: 32 the usual short one (a pair keeps 29 tokens of
// text, odd: longest-first gives the longer side the extra one), 13 (10, even), 4 and 3 (0 to 2).
const MAX_LENS = [0, 32, 13, 4, 3];

// strip_accents null follows lowercase, as in tokenizers and tokenizer_config.json.
const VARIANT = {
  lowercase: true, strip_accents: null, tokenize_chinese_chars: true, clean_text: true,
};
const VARIANTS = [
  { ...VARIANT, name: 'uncased' },
  { ...VARIANT, name: 'cased', lowercase: false },
  { ...VARIANT, name: 'uncased_keep_accents', strip_accents: false },
  { ...VARIANT, name: 'no_chinese_chars', tokenize_chinese_chars: false },
  { ...VARIANT, name: 'no_clean_text', clean_text: false },
];

function unescapeCase(s, where) {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') { out += s[i]; continue; }
    const c = s[++i];
    if (c === 't') out += '\t';
    else if (c === 'n') out += '\n';
    else if (c === 'r') out += '\r';
    else if (c === '\\') out += '\\';
    else if (c === 'e') { /* empty */ }
    else if (c === 'u' && s[i + 1] === '{') {
      const close = s.indexOf('}', i);
      const hex = close < 0 ? '' : s.slice(i + 2, close);
      const cp = /^[0-9A-Fa-f]{1,6}$/.test(hex) ? parseInt(hex, 16) : -1;
      if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
        throw new Error(`${where}: bad \\u{...} escape`);
      out += String.fromCodePoint(cp);
      i = close;
    } else {
      throw new Error(`${where}: unknown escape \\${c === undefined ? '' : c}`);
    }
  }
  return out;
}

function readCases(file) {
  const cases = [];
  fs.readFileSync(file, 'utf8').split('\n').forEach((raw, idx) => {
    const source = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (source === '' || source.startsWith('#')) return;
    const where = `${file}:${idx + 1}`;
    const tab = source.indexOf('\t');
    const a = unescapeCase(tab < 0 ? source : source.slice(0, tab), where);
    const b = tab < 0 ? null : unescapeCase(source.slice(tab + 1), where);
    cases.push({ line: idx + 1, source, a, b });
  });
  return cases;
}

function makeTokenizer(base, v) {
  const cfg = JSON.parse(JSON.stringify(base));
  cfg.normalizer = {
    type: 'BertNormalizer',
    clean_text: v.clean_text,
    handle_chinese_chars: v.tokenize_chinese_chars,
    strip_accents: v.strip_accents,
    lowercase: v.lowercase,
  };
  return Tokenizer.fromString(JSON.stringify(cfg));
}

async function main() {
  const [stringsFile, outDir] = process.argv.slice(2);
  if (!stringsFile || !outDir) {
    console.error('usage: node hf_tokenize.js STRINGS_FILE OUT_DIR');
    process.exit(2);
  }
  const dataDir = process.env.MINIBRIDGE_DATA || path.resolve(__dirname, '../../../shared/data');
  const tokJson = path.join(dataDir, 'vocab/bert-base-uncased/tokenizer.json');
  const base = JSON.parse(fs.readFileSync(tokJson, 'utf8'));
  const cases = readCases(stringsFile);

  fs.mkdirSync(outDir, { recursive: true });
  const lines = [];
  for (const v of VARIANTS) {
    const tok = makeTokenizer(base, v);
    for (const maxLen of MAX_LENS) {
      if (maxLen > 0) tok.setTruncation(maxLen);
      else tok.disableTruncation();
      for (const c of cases) {
        const enc = c.b === null ? await tok.encode(c.a) : await tok.encode(c.a, c.b);
        lines.push(JSON.stringify({
          variant: v.name, line: c.line, source: c.source, max_len: maxLen,
          ids: enc.getIds(), type_ids: enc.getTypeIds(),
        }));
      }
    }
  }
  fs.writeFileSync(path.join(outDir, 'variants.json'), JSON.stringify(VARIANTS, null, 1) + '\n');
  fs.writeFileSync(path.join(outDir, 'expected.jsonl'), lines.join('\n') + '\n');
  console.log(`hf_tokenize.js: ${cases.length} cases x ${VARIANTS.length} variants x ` +
              `${MAX_LENS.length} lengths -> ${outDir}`);
}

main().catch((e) => { console.error(`hf_tokenize.js: ${e.message}`); process.exit(1); });
