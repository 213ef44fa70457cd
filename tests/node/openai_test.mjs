// sluice's HTTP gateway driven by the official `openai` client from npm
// (the version pinned in package-lock.json): `sluice serve` on stories260K,
// then completions and chat completions, whole and streamed, the model
// list, the response headers, and errors thrown as the client's typed errors.
//
// usage: node tests/node/openai_test.mjs BUILD_BIN_DIR TESTDATA_DIR
// Exits 77 (skipped) when the client is not installed: install it with
// `npm ci --prefix tests/node` (the README's first command does).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [bin, testdata] = process.argv.slice(2);
let OpenAI;
try {
  ({ default: OpenAI } = await import('openai'));
} catch {
  console.log('openai_test: skipped: the openai npm package is not installed (run `npm ci --prefix tests/node`)');
  process.exit(77);
}

const KEY = 'node-test-key';
const PROMPT = 'Once upon a time';
const refs = JSON.parse(readFileSync(path.join(testdata, 'refs', 'stories260K.ref.json'), 'utf8'));
const refCase = refs.cases.find((c) => c.prompt === PROMPT);
const WANT = Buffer.from(refCase.greedy_text_hex, 'hex').toString('utf8');

let passed = 0;
let failed = 0;
function check(cond, what) {
  if (cond) passed++;
  else {
    failed++;
    console.error('FAIL:', what);
  }
}

// Starts `sluice serve` and resolves with its port once /health says ready.
async function startServer() {
  const args = ['serve', '-m', path.join(testdata, 'models', 'stories260K.gguf'), '--port', '0', '-t', '1',
    '--loaders', '1', '--chat-template', 'chatml', '--api-key', KEY];
  const proc = spawn(path.join(bin, 'sluice'), args, { stdio: ['ignore', 'inherit', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error('no port: ' + err)), 30000);
    proc.stderr.on('data', (d) => {
      err += d;
      process.stderr.write(d);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.on('exit', (code) => reject(new Error('sluice serve exited: ' + code)));
  });
  for (let i = 0; i < 600; i++) {
    const r = await fetch(`http://127.0.0.1:${port}/health`).catch(() => null);
    if (r && r.status === 200) return { proc, port };
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('the server did not become ready');
}

async function expectError(promise, Type, status, what) {
  try {
    await promise;
    check(false, what + ': no error');
  } catch (e) {
    check(e instanceof Type && e.status === status && typeof e.message === 'string',
      `${what}: ${e && e.constructor && e.constructor.name} ${e && e.status} ${e && e.message}`);
    return e;
  }
}

const { proc, port } = await startServer();
try {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: KEY, maxRetries: 0 });

  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === 'stories260K', 'models: ' + JSON.stringify(models.data));

  // Completions, whole: the reference continuation, and the headers.
  const { data: c, response } = await client.completions
    .create({ model: 'stories260K', prompt: PROMPT, temperature: 0, max_tokens: 64 })
    .withResponse();
  check(c.choices[0].text === WANT, 'completion text: ' + JSON.stringify(c.choices[0].text));
  check(c.choices[0].finish_reason === 'length' && c.usage.completion_tokens === 64, 'completion usage');
  check(response.headers.get('x-sluice-served-by') === 'local', 'served by');

  // Completions, streamed.
  let text = '';
  let finish = null;
  let usage = null;
  const cs = await client.completions.create({
    model: 'stories260K', prompt: PROMPT, temperature: 0, max_tokens: 64, stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of cs) {
    if (chunk.choices.length) {
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  check(text === WANT, 'streamed completion text: ' + JSON.stringify(text));
  check(finish === 'length' && usage && usage.completion_tokens === 64, 'streamed finish and usage');

  // Stop strings.
  const st = await client.completions.create({ prompt: PROMPT, model: 'stories260K', temperature: 0, max_tokens: 64,
    stop: ['girl named L'] });
  check(st.choices[0].text === WANT.slice(0, WANT.indexOf('girl named L')) && st.choices[0].finish_reason === 'stop',
    'stop: ' + JSON.stringify(st.choices[0]));

  // Chat, whole and streamed: the same greedy answer.
  const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Hi' }];
  const chat = await client.chat.completions.create({ model: 'stories260K', messages, temperature: 0, max_tokens: 16 });
  const answer = chat.choices[0].message;
  check(answer.role === 'assistant' && answer.content.length > 0, 'chat answer: ' + JSON.stringify(answer));
  check(['stop', 'length'].includes(chat.choices[0].finish_reason), 'chat finish');
  let streamed = '';
  let role = null;
  let chatUsage = null;
  const ss = await client.chat.completions.create({ model: 'stories260K', messages, temperature: 0, max_tokens: 16,
    stream: true, stream_options: { include_usage: true } });
  for await (const chunk of ss) {
    const d = chunk.choices[0]?.delta;
    if (d?.role) role = d.role;
    if (d?.content) streamed += d.content;
    if (chunk.usage) chatUsage = chunk.usage;
  }
  check(role === 'assistant' && streamed === answer.content, 'streamed chat: ' + JSON.stringify(streamed));
  check(chatUsage && chatUsage.completion_tokens === chat.usage.completion_tokens, 'streamed chat usage');

  // Errors come back as the client's typed errors.
  await expectError(client.completions.create({ model: 'stories260K', prompt: PROMPT, n: 3 }),
    OpenAI.BadRequestError, 400, 'n = 3');
  const e = await expectError(client.completions.create({ model: 'stories260K', prompt: PROMPT, frobnicate: 1 }),
    OpenAI.BadRequestError, 400, 'unknown field');
  check(e && e.param === 'frobnicate' && e.code === 'unknown_parameter', 'error param and code');
  await expectError(client.chat.completions.create({ model: 'stories260K', messages: [] }),
    OpenAI.BadRequestError, 400, 'no messages');
  const wrongKey = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await expectError(wrongKey.completions.create({ model: 'stories260K', prompt: PROMPT }),
    OpenAI.AuthenticationError, 401, 'wrong key');
} finally {
  proc.kill('SIGTERM');
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
