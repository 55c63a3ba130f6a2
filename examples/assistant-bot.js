// A bot user for Switchboard: answers "time" with the server's time and
// forwards everything else to an OpenAI-compatible chat endpoint.
//
//   SWITCHBOARD_BOT_URL=http://127.0.0.1:8080/v1/chat/completions \
//   SWITCHBOARD_BOT_MODEL=llama3 node examples/assistant-bot.js [mesibo.conf]
//
// Users message the address "assistant" like any other user.
const { Server } = require('switchboard');

/** Adds the assistant bot to a running server. */
function assistant(server, { url, model = 'gpt-4o-mini', apiKey = '', timeoutMs = 30000 } = {}) {
  const bot = server.bot('assistant');

  bot.hears('time', (message, bot) => {
    bot.reply(message, `It is ${new Date().toISOString()} on the server.`);
  });

  bot.on('message', async (message, bot) => {
    if (!url) return void bot.reply(message, 'No model is configured (set SWITCHBOARD_BOT_URL).');
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: message.text }] }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = await res.json();
      const answer = body?.choices?.[0]?.message?.content;
      if (typeof answer !== 'string') throw new Error('no choices[0].message.content in the answer');
      bot.reply(message, answer);
    } catch (e) {
      bot.reply(message, 'Sorry, I cannot answer right now.');
      throw e; // logged by the server as a bot handler failure
    }
  });
  return bot;
}

module.exports = { assistant };

if (require.main === module) {
  Server.start({ configFile: process.argv[2] }).then((server) => {
    assistant(server, { url: process.env.SWITCHBOARD_BOT_URL, model: process.env.SWITCHBOARD_BOT_MODEL, apiKey: process.env.SWITCHBOARD_BOT_KEY });
    const stop = () => server.stop().then(() => process.exit(0));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  }, (e) => {
    console.error(`${e.code ?? 'E_START'}: ${e.message}`);
    process.exit(1);
  });
}
