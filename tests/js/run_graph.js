// Run a TF.js graph model on raw float32 inputs with the pure-JS CPU backend (the oracle for
// frad's reader).  Usage: node run_graph.js model.json inputs.f32 N H W C outputs.f32 [node ...]
// Inputs are N x H x W x C float32 (NHWC, little-endian); the outputs of the requested nodes
// (default: the model's output) are written one after the other as float32.
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfconv = require('@tensorflow/tfjs-converter');

async function main() {
  const [modelPath, inputPath, n, h, w, c, outPath, ...nodes] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const doc = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of doc.weightsManifest) {
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelPath), p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tfconv.loadGraphModel(tf.io.fromMemory({
    modelTopology: doc.modelTopology, weightSpecs: specs, weightData, format: doc.format,
    generatedBy: doc.generatedBy, convertedBy: doc.convertedBy, userDefinedMetadata: doc.userDefinedMetadata,
  }));
  const raw = fs.readFileSync(inputPath);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const x = tf.tensor4d(data, [Number(n), Number(h), Number(w), Number(c)]);
  let outs = nodes.length ? model.execute(x, nodes) : model.execute(x);
  if (!Array.isArray(outs)) outs = [outs];
  const parts = [];
  const shapes = [];
  for (const o of outs) {
    parts.push(Buffer.from((await o.data()).buffer));
    shapes.push(o.shape);
  }
  fs.writeFileSync(outPath, Buffer.concat(parts));
  process.stdout.write(JSON.stringify({ shapes, tfjs: tf.version_core, backend: tf.getBackend() }) + '\n');
}

main().catch((e) => { console.error(e && e.stack ? e.stack : String(e)); process.exit(1); });
