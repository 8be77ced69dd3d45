// Start kinesalite on the loopback interface only (its CLI binds every interface) and print
// {"port": N} on stdout once it listens. Streams change state at once (createStreamMs: 0 ...).
// With SHARDLINE_EXIT_ON_STDIN_EOF=1 it exits when its stdin closes, so a test run that dies
// leaves no emulator behind.
'use strict';
const kinesalite = require('kinesalite');

const server = kinesalite({
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: Number(process.env.KINESALITE_SHARD_LIMIT || 200),
});
server.listen(Number(process.env.KINESALITE_PORT || 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
if (process.env.SHARDLINE_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => process.exit(0));
