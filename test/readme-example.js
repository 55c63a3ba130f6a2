'use strict';
// README.md's first command and its two-user example, taken from the README
// itself so the page cannot drift from what works. test/readme.test.ts runs
// the example against a server it starts; scripts/check-fresh-clone.sh runs
// the first command in a fresh clone and then this file against it:
//   node test/readme-example.js [PORT]    prints the chat's output lines
const { execFile } = require('child_process');
const { promisify } = require('util');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..');

/** The fenced blocks of a markdown text, with the heading they sit under. */
function blocks(markdown) {
  const out = [];
  let heading = '';
  const re = /^(#+ .*)$|^```(\w*)\n([\s\S]*?)^```$/gm;
  for (let m; (m = re.exec(markdown)); ) {
    if (m[1]) heading = m[1].replace(/^#+ /, '');
    else out.push({ heading, lang: m[2], text: m[3] });
  }
  return out;
}

/**
 * firstCommand: the first line of the README's first shell block, without
 * its comment; curls: the curl lines under "Two users chatting"; chat: the
 * JavaScript block there.
 */
function readmeExample(markdown) {
  const all = blocks(markdown);
  const first = all.find((b) => b.lang === 'sh');
  const chatting = all.filter((b) => b.heading === 'Two users chatting');
  const sh = chatting.find((b) => b.lang === 'sh');
  const js = chatting.find((b) => b.lang === 'js');
  if (!first || !sh || !js) throw new Error('README.md: expected a sh block, and a sh and a js block under "## Two users chatting"');
  return {
    firstCommand: first.text.split('\n')[0].replace(/\s+#.*$/, '').trim(),
    curls: sh.text.split('\n').filter((l) => l.startsWith('curl ')),
    chat: js.text,
  };
}

/**
 * Runs the example against a server on PORT (the README's own is 5222): the
 * curl commands through bash, then the chat script as a user's chat.js in a
 * project of its own, whose node_modules holds switchboard and ws. Returns
 * what the chat printed, line by line.
 */
async function runExample(port = 5222, markdown = fs.readFileSync(path.join(root, 'README.md'), 'utf8')) {
  // Asynchronous: the test runs the server in its own process.
  const run = promisify(execFile);
  const { curls, chat } = readmeExample(markdown);
  const onPort = (s) => (port === 5222 ? s : s.replace(/(localhost|127\.0\.0\.1):5222\b/g, `$1:${port}`));
  const tokens = [];
  for (const cmd of curls) {
    const answer = JSON.parse((await run('bash', ['-c', onPort(cmd)], { encoding: 'utf8' })).stdout);
    if (!answer.ok || !answer.token) throw new Error(`${cmd}: ${JSON.stringify(answer)}`);
    tokens.push(answer.token);
  }
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-readme-'));
  try {
    fs.mkdirSync(path.join(project, 'node_modules'));
    fs.symlinkSync(root, path.join(project, 'node_modules', 'switchboard'));
    fs.symlinkSync(path.dirname(require.resolve('ws/package.json', { paths: [root] })), path.join(project, 'node_modules', 'ws'));
    fs.writeFileSync(path.join(project, 'chat.js'), onPort(chat));
    const { stdout: out } = await run(process.execPath, ['chat.js'], {
      cwd: project,
      encoding: 'utf8',
      env: { ...process.env, ALICE_TOKEN: tokens[0], BOB_TOKEN: tokens[1] },
      timeout: 20_000,
    });
    return out.split('\n').filter((l) => l !== '');
  } finally {
    fs.rmSync(project, { recursive: true, force: true });
  }
}

/** The lines the README's chat prints, whatever order the events race in. */
const EXPECTED_LINES = [
  'bob got "hello bob" from alice',
  /^alice: message \d+ to bob is now sent$/,
  /^alice: message \d+ to bob is now delivered$/,
  /^alice: message \d+ to bob is now read$/,
  /^alice: message \d+ to echo is now sent$/,
  'alice got "echo: ping" from echo',
];

/** Throws unless the lines are the expected ones, each once, with one message's statuses in order. */
function checkLines(lines) {
  const left = [...lines];
  for (const want of EXPECTED_LINES) {
    const i = left.findIndex((l) => (typeof want === 'string' ? l === want : want.test(l)));
    if (i < 0) throw new Error(`the README's chat did not print ${want}; it printed:\n${lines.join('\n')}`);
    left.splice(i, 1);
  }
  if (left.length) throw new Error(`the README's chat printed more than expected:\n${left.join('\n')}`);
  // Other events may interleave, but one message's statuses come in the
  // order the protocol promises: sent, delivered, read (docs/protocol.md).
  const order = lines.filter((l) => /to bob is now/.test(l)).map((l) => l.replace(/^.* is now /, ''));
  if (order.join() !== 'sent,delivered,read') throw new Error(`alice heard bob's statuses as ${order.join(', ')}; the order must be sent, delivered, read`);
}

module.exports = { readmeExample, runExample, checkLines, EXPECTED_LINES };

if (require.main === module) {
  runExample(Number(process.argv[2] || 5222)).then(
    (lines) => {
      for (const l of lines) console.log(l);
      checkLines(lines);
      console.log(`README example: the ${lines.length} lines it should print`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
