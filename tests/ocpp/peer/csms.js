// An independent CSMS for the OCPP tests: ocpp-rpc in strict mode (every message validated against the
// official OCPP 2.0.1 and 2.1 JSON schemas). Loopback only. Talks to the test as JSON lines:
//   stdout: {"event":"listening","port"}, {"event":"call",...} for every request a station sends,
//           {"event":"invalid",...} for every message that failed strict validation, {"event":"reply",...}
//   stdin:  {"id":n,"identity":"CP-1","method":"SetChargingProfile","params":{...}} -> a request to the station
// Usage: node csms.js [--password IDENTITY:PASSWORD] [--cert server.pem --key server.key [--ca clients-ca.pem]]
//                     [--protocols ocpp2.1,ocpp2.0.1]   (the CSMS's order of preference; default ocpp2.0.1)
'use strict';
const fs = require('fs');
const https = require('https');
const readline = require('readline');
const { RPCServer, createRPCError, createValidator } = require('ocpp-rpc');

const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const passwords = {};
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--password') { const [id, ...pw] = args[i + 1].split(':'); passwords[id] = pw.join(':'); }
}
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const now = () => new Date().toISOString();

// ocpp-rpc ships the official 2.1 schemas with ids of the form urn:<Action>Request / urn:<Action>Response,
// while its strict mode looks them up as urn:<Action>.req / urn:<Action>.conf: the same schemas, re-keyed.
const schemas21 = require('ocpp-rpc/lib/schemas/ocpp2_1.json').map((s) => ({
  ...s, $id: s.$id.replace(/Request$/, '.req').replace(/Response$/, '.conf'),
}));
const protocols = (opt('--protocols') || 'ocpp2.0.1').split(',');
const server = new RPCServer({
  protocols, strictMode: true, strictModeValidators: [createValidator('ocpp2.1', schemas21)], callTimeoutMs: 10000,
});
const clients = {};

server.auth((accept, reject, handshake) => {
  const sock = handshake.request.socket;
  if (opt('--ca')) {
    // security profile 3: the client certificate is the proof; its subject CN must be the identity
    const cn = sock.authorized && sock.getPeerCertificate().subject.CN;
    return cn === handshake.identity ? accept({}) : reject(401);
  }
  const want = passwords[handshake.identity];
  if (want === undefined) return reject(403);
  if (!handshake.password || handshake.password.toString('utf8') !== want) return reject(401);
  accept({});
});

const answers = {
  BootNotification: () => ({ status: 'Accepted', interval: 120, currentTime: now() }),
  Heartbeat: () => ({ currentTime: now() }),
  StatusNotification: () => ({}),
  TransactionEvent: () => ({}),
  MeterValues: () => ({}),
  NotifyEvent: () => ({}),
  NotifyReport: () => ({}),
  ReportChargingProfiles: () => ({}),
  SecurityEventNotification: () => ({}),
  Authorize: () => ({ idTokenInfo: { status: 'Accepted' } }),
  NotifyDERAlarm: () => ({}),
  NotifyDERStartStop: () => ({}),
  ReportDERControl: () => ({}),
  NotifyEVChargingNeeds: () => ({ status: 'Accepted' }),
};

server.on('client', (client) => {
  clients[client.identity] = client;
  out({ event: 'connected', identity: client.identity, protocol: client.protocol });
  client.on('strictValidationFailure', (e) => out({ event: 'invalid', identity: client.identity, outbound: e.outbound, message: String(e.error && e.error.message), details: e.error && e.error.details }));
  client.on('close', () => { if (clients[client.identity] === client) delete clients[client.identity]; });
  client.handle(({ method, params, messageId }) => {
    out({ event: 'call', identity: client.identity, method, params, messageId });
    const a = answers[method];
    if (!a) throw createRPCError('NotImplemented');
    return a(params);
  });
});

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const req = JSON.parse(line);
  const client = clients[req.identity];
  if (!client) return out({ event: 'reply', id: req.id, error: 'not connected' });
  try {
    out({ event: 'reply', id: req.id, result: await client.call(req.method, req.params) });
  } catch (err) {
    out({ event: 'reply', id: req.id, error: err.rpcErrorCode || String(err.message) });
  }
});
rl.on('close', () => process.exit(0));

(async () => {
  const cert = opt('--cert');
  let port;
  if (cert) {
    const tlsOpts = { cert: fs.readFileSync(cert), key: fs.readFileSync(opt('--key')), minVersion: 'TLSv1.2' };
    if (opt('--ca')) Object.assign(tlsOpts, { ca: fs.readFileSync(opt('--ca')), requestCert: true, rejectUnauthorized: true });
    const tls = https.createServer(tlsOpts);
    tls.on('upgrade', server.handleUpgrade);
    await new Promise((ok) => tls.listen(0, '127.0.0.1', ok));
    port = tls.address().port;
  } else {
    const http = await server.listen(0, '127.0.0.1');
    port = http.address().port;
  }
  out({ event: 'listening', port });
})();
