#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node, CPU execution provider) side of bench/compare.py: times
// session.run of a BERT exported to ONNX on the given inputs and prints one JSON line.
//
//   node bench/ort_bench.js --model model.onnx --inputs inputs.json [--threads 2] [--warmup 2]
//                           [--iters 10] [--dump out.f32]
//
// inputs.json: {"input_ids": [[...], ...], "token_type_ids": [[...], ...]}, one list per sequence
// (lengths may differ). Sequences are right-padded with 0 to the longest one, attention_mask 1 on
// real tokens, as Hugging Face tokenizers pad. --dump writes the first run's last_hidden_state
// [batch, max_len, hidden] as raw little-endian float32 (padding rows included).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const o = { threads: 2, warmup: 2, iters: 10, model: null, inputs: null, dump: null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in o) || i + 1 >= argv.length) throw new Error(`unknown or incomplete option ${argv[i]}`);
    o[key] = ['threads', 'warmup', 'iters'].includes(key) ? parseInt(argv[i + 1], 10) : argv[i + 1];
  }
  if (!o.model || !o.inputs) throw new Error('--model and --inputs are required');
  return o;
}

function padded(seqs, L) {
  const out = new BigInt64Array(seqs.length * L);
  seqs.forEach((s, b) => s.forEach((v, t) => { out[b * L + t] = BigInt(v); }));
  return out;
}

// Peak RSS of this process in MiB: VmHWM (process.resourceUsage().maxRSS would include the RSS of
// the parent that spawned us, which Linux carries across execve).
function peakRssMiB() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1], 10) / 1024;
  } catch (e) { /* not Linux */ }
  return process.resourceUsage().maxRSS / 1024;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const spec = JSON.parse(fs.readFileSync(o.inputs, 'utf8'));
  const ids = spec.input_ids;
  const types = spec.token_type_ids || ids.map((s) => s.map(() => 0));
  const B = ids.length;
  const L = Math.max(...ids.map((s) => s.length));
  const feeds = {
    input_ids: new ort.Tensor('int64', padded(ids, L), [B, L]),
    attention_mask: new ort.Tensor('int64', padded(ids.map((s) => s.map(() => 1)), L), [B, L]),
    token_type_ids: new ort.Tensor('int64', padded(types, L), [B, L]),
  };

  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(o.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
  });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;

  const times = [];
  let tokens = 0;
  ids.forEach((s) => { tokens += s.length; });
  for (let i = 0; i < o.warmup + o.iters; ++i) {
    const start = process.hrtime.bigint();
    const out = await session.run(feeds);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (i === 0 && o.dump) {
      const h = out.last_hidden_state;
      fs.writeFileSync(o.dump, Buffer.from(h.data.buffer, h.data.byteOffset, h.data.byteLength));
    }
    if (i >= o.warmup) times.push(ms);
  }
  const med = median(times);
  const version = require('onnxruntime-node/package.json').version;
  process.stdout.write(JSON.stringify({
    engine: 'onnxruntime', version, batch: B, seq: L, tokens, padded_tokens: B * L, threads: o.threads,
    mode: 'forward', warmup: o.warmup, iters: o.iters, median_ms: med, min_ms: Math.min(...times),
    times_ms: times, tokens_per_s: tokens * 1000 / med,
    peak_rss_mb: peakRssMiB(), load_ms: loadMs,
  }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`ort_bench: error: ${e.message || e}\n`);
  process.exit(1);
});
