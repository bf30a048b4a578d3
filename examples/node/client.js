#!/usr/bin/env node
// Calls a pipeserve server from Node.js and prints one JSON object with the answers.
//
//   node client.js [TARGET] [--full] [TEXT ...]
//   node client.js [TARGET] --embed [--full] [TEXT ...]
//   ... [--token TOKEN] [--tls] [--tls-ca PEM] [--tls-cert PEM --tls-key PEM]
//
// TARGET defaults to $PIPESERVE_TARGET, else 127.0.0.1:50051. --full prints every value of
// the Forward tensors instead of the first few. --embed calls Embed instead (a server with a
// bare encoder, such as the bundled MiniLM) and prints the sentence embeddings, in float32 and
// float16. --token (default $PIPESERVE_TOKEN) is sent as a bearer token with every call; --tls
// (implied by the others) uses TLS, trusting the system's CAs or --tls-ca, with a client
// certificate for mutual TLS. The .proto is loaded at run time: no codegen.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'protos', 'pipeserve', 'v1', 'pipeserve.proto');
const DEADLINE_MS = 30_000;
const HEAD = 6; // Forward values printed per tensor without --full
const CONCURRENCY = 4; // requests of one split call in flight at once

// --- Loading the contract ------------------------------------------------------------------

const definition = protoLoader.loadSync(PROTO, {
  includeDirs: [path.join(__dirname, '..', '..', 'protos')], // google/rpc/status.proto
  keepCase: true, // field names as in the .proto: input_ids, not inputIds
  longs: Number, // int64 ids and shapes as plain numbers (all well below 2**53)
  enums: String, // 'DTYPE_FLOAT16', not 2
  defaults: true, // unset fields read as their zero value, as in every other language
  oneofs: true, // a oneof's name says which member is set: answer.outcome === 'status'
});
const { Inference } = grpc.loadPackageDefinition(definition).pipeserve.v1;

// --- Tensors: raw little-endian bytes + dtype + shape --------------------------------------

// IEEE 754 half precision to a JS number (Node 20 has no Float16Array).
function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// Decodes a Tensor message into { dtype, shape, values } with values a flat row-major array.
function decodeTensor({ dtype, shape, data }) {
  if (os.endianness() !== 'LE') throw new Error('this example assumes a little-endian machine');
  // `data` is a Buffer that usually views the middle of the received message, at a byteOffset
  // a Float32Array may not start at: copy the bytes into a fresh, aligned ArrayBuffer.
  const bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  const count = shape.reduce((a, b) => a * b, 1);
  let values;
  if (dtype === 'DTYPE_FLOAT32') values = Array.from(new Float32Array(bytes));
  else if (dtype === 'DTYPE_FLOAT16') values = Array.from(new Uint16Array(bytes), halfToNumber);
  else if (dtype === 'DTYPE_INT32') values = Array.from(new Int32Array(bytes));
  else if (dtype === 'DTYPE_INT64') values = Array.from(new BigInt64Array(bytes), Number);
  else throw new Error(`unknown tensor dtype ${dtype}`);
  if (values.length !== count) {
    throw new Error(`tensor has ${values.length} ${dtype} values; shape [${shape}] needs ${count}`);
  }
  return { dtype, shape, values };
}

// --- Calls -----------------------------------------------------------------------------------

// The channel's credentials and each call's metadata (the bearer token), from the options.
function connection({ token, tls, tlsCa, tlsCert, tlsKey }) {
  const read = (file) => (file ? fs.readFileSync(file) : null);
  const credentials =
    tls || tlsCa || tlsCert || tlsKey
      ? grpc.credentials.createSsl(read(tlsCa), read(tlsKey), read(tlsCert))
      : grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return { credentials, metadata };
}

// A unary call as a promise; `metadata` (the token) goes with it.
function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// The server takes at most max_items_per_request inputs in one request (ModelInfo says how many,
// asked once): a longer list of texts goes as several requests, CONCURRENCY at a time. Resolves
// to their responses in input order; a failed request fails the whole call.
let limits = null;
async function inRequests(client, method, texts, toRequest, metadata) {
  limits ??= await unary(client, 'ModelInfo', {}, metadata);
  const size = limits.max_items_per_request || texts.length;
  const chunks = [];
  for (let i = 0; i < texts.length; i += size) chunks.push(texts.slice(i, i + size));
  const responses = new Array(chunks.length);
  let next = 0;
  async function sender() {
    while (next < chunks.length) {
      const index = next++;
      responses[index] = await unary(client, method, toRequest(chunks[index]), metadata);
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, chunks.length) }, sender));
  return responses;
}

// Decoded tensors of several requests as one: rows one after the other, the per-token outputs
// ([items, tokens, ...], padded with zeros to the longest item of their request) padded with
// zeros to the longest of all.
function joinTensors(tensors) {
  const { dtype, shape } = tensors[0];
  const width = Math.max(...tensors.map((t) => t.shape[1] ?? 0));
  const values = [];
  for (const t of tensors) {
    const rowSize = t.shape.slice(1).reduce((a, b) => a * b, 1);
    const tail = t.shape.slice(2).reduce((a, b) => a * b, 1); // values per token
    for (let row = 0; row < t.shape[0]; row += 1) {
      values.push(...t.values.slice(row * rowSize, (row + 1) * rowSize));
      if (t.shape.length > 1) values.push(...new Array((width - t.shape[1]) * tail).fill(0));
    }
  }
  const rows = tensors.reduce((n, t) => n + t.shape[0], 0);
  return { dtype, shape: [rows, ...(shape.length > 1 ? [width] : []), ...shape.slice(2)], values };
}

// Sends every [id, request] on one ClassifyStream call; resolves to the answers by id (they may
// come back in any order). A refused request answers with its google.rpc.Status, shown here as
// { error: { code, message } }.
function classifyStream(client, requests, metadata) {
  return new Promise((resolve, reject) => {
    const byId = {};
    const call = client.ClassifyStream(metadata, { deadline: Date.now() + DEADLINE_MS });
    call.on('data', (answer) => {
      byId[answer.id] =
        answer.outcome === 'status'
          ? { error: { code: answer.status.code, message: answer.status.message } }
          : { results: answer.response.results.map((r) => r.labels) };
    });
    call.on('error', reject);
    call.on('end', () => resolve(byId));
    for (const [id, request] of requests) call.write({ id, request });
    call.end(); // half-close: the server answers what it got, then ends the stream
  });
}

async function forward(client, texts, outputDtype, full, metadata) {
  const toRequest = (chunk) => ({
    inputs: chunk.map((text) => ({ text })),
    outputs: ['logits', 'last_hidden_state'],
    output_dtype: outputDtype,
  });
  const responses = await inRequests(client, 'Forward', texts, toRequest, metadata);
  const outputs = {};
  for (const { name } of responses[0].outputs) {
    const named = (response) => response.outputs.find((output) => output.name === name);
    const tensors = responses.map((response) => decodeTensor(named(response).tensor));
    const { dtype, shape, values } = joinTensors(tensors);
    outputs[name] = { dtype, shape, ...(full ? { values } : { head: values.slice(0, HEAD) }) };
  }
  return { sequence_lengths: responses.flatMap((r) => r.sequence_lengths), outputs };
}

// Sentence embeddings: one Tensor of shape [texts, dimension], as raw little-endian bytes.
async function embed(client, texts, outputDtype, full, metadata) {
  const toRequest = (chunk) => ({ inputs: chunk, output_dtype: outputDtype });
  const responses = await inRequests(client, 'Embed', texts, toRequest, metadata);
  const { dtype, shape, values } = joinTensors(responses.map((r) => decodeTensor(r.embeddings)));
  const rows = [];
  for (let i = 0; i < shape[0]; i += 1) rows.push(values.slice(i * shape[1], (i + 1) * shape[1]));
  return {
    dtype,
    shape,
    sequence_lengths: responses.flatMap((r) => r.sequence_lengths),
    ...(full ? { embeddings: rows } : { head: rows.map((row) => row.slice(0, HEAD)) }),
  };
}

// The command line: flags anywhere, the first other argument the target, the rest the texts.
function parseArgs(args) {
  const options = { full: false, embed: false, token: process.env.PIPESERVE_TOKEN, tls: false };
  const valued = {
    '--token': 'token',
    '--tls-ca': 'tlsCa',
    '--tls-cert': 'tlsCert',
    '--tls-key': 'tlsKey',
  };
  const positional = [];
  for (let i = 0; i < args.length; i += 1) {
    if (args[i] === '--full') options.full = true;
    else if (args[i] === '--embed') options.embed = true;
    else if (args[i] === '--tls') options.tls = true;
    else if (args[i] in valued) {
      if (i + 1 === args.length) throw new Error(`${args[i]} needs a value`);
      options[valued[args[i]]] = args[(i += 1)];
    } else positional.push(args[i]);
  }
  options.target = positional[0] || process.env.PIPESERVE_TARGET || '127.0.0.1:50051';
  options.texts = positional.length > 1 ? positional.slice(1) : [
    "I've been waiting for a HuggingFace course my whole life.",
    'I hate this so much!',
  ];
  return options;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const { target, texts, full } = options;
  const { credentials, metadata } = connection(options);
  const client = new Inference(target, credentials, {
    'grpc.max_receive_message_length': 64 * 1024 * 1024, // hidden states grow fast
  });
  try {
    if (options.embed) {
      const embedded = {
        target,
        embed: {
          float32: await embed(client, texts, 'DTYPE_FLOAT32', full, metadata),
          float16: await embed(client, texts, 'DTYPE_FLOAT16', full, metadata),
        },
      };
      console.log(JSON.stringify(embedded, null, full ? 0 : 2));
      return;
    }
    const asInputs = (chunk) => ({ inputs: chunk.map((text) => ({ text })) });
    const tokenized = await inRequests(client, 'Tokenize', texts, asInputs, metadata);
    const classified = await inRequests(
      client,
      'Classify',
      texts,
      (chunk) => ({ ...asInputs(chunk), all_labels: true }), // every label, best first
      metadata,
    );
    const stream = await classifyStream(
      client,
      [
        ...texts.map((text, i) => [`text-${i}`, { inputs: [{ text }] }]),
        ['empty', { inputs: [{ text: '' }] }], // refused: shows a per-request error
      ],
      metadata,
    );
    const result = {
      target,
      // Each encoding padded to the longest of its request.
      tokenize: tokenized.flatMap((response) =>
        response.encodings.map(({ input_ids, attention_mask }) => ({ input_ids, attention_mask })),
      ),
      classify: classified.flatMap((response) => response.results.map((r) => r.labels)),
      // The server's stage times of the (first) Classify request, in milliseconds (every
      // response has them), and how many requests the texts took.
      classify_timings: classified[0].timings,
      classify_requests: classified.length,
      classify_stream: stream,
      forward: {
        float32: await forward(client, texts, 'DTYPE_FLOAT32', full, metadata),
        float16: await forward(client, texts, 'DTYPE_FLOAT16', full, metadata),
      },
    };
    console.log(JSON.stringify(result, null, full ? 0 : 2));
  } finally {
    client.close();
  }
}

module.exports = { decodeTensor, halfToNumber }; // for tests: require('./client.js')

if (require.main === module) {
  main().catch((error) => {
    // A grpc-js error carries the status code number and the server's message.
    const code = error.code !== undefined ? `code ${error.code}: ` : '';
    console.error(`error: ${code}${error.details || error.message}`);
    process.exit(1);
  });
}
