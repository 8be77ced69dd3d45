// Preloaded into kinesis-local (`node -r ./loopback.js main.js`): it calls listen(port) with no
// host, which binds every interface, and has no setting for it. Give every listen without a host
// the loopback interface instead. With SHARDLINE_EXIT_ON_STDIN_EOF=1, also exit when stdin closes,
// so no emulator outlives the test run that started it.
'use strict';
const net = require('net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  } else if (args[0] !== null && typeof args[0] === 'object' && !args[0].host && !args[0].path) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
if (process.env.SHARDLINE_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
