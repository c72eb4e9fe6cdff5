// Calls signed APIs through a Tollgate node with Alibaba's own Node.js client
// (aliyun-api-gateway), unchanged, and checks each answer. Driven by
// cmd/tollgate/alibaba_e2e_test.go, which passes the node and the app in the environment.
'use strict';

const assert = require('assert');
const Client = require('aliyun-api-gateway').Client;

const gateway = process.env.GATEWAY; // http://127.0.0.1:PORT
const host = process.env.GROUP_HOST; // weather.localhost: *.localhost does not resolve everywhere
const client = new Client(process.env.APP_KEY, process.env.APP_SECRET);

async function main() {
  const hostHeader = {host: host};

  // GET with a query.
  let r = await client.get(`${gateway}/cities/paris?days=3&unit=c`, {headers: hostHeader});
  assert.strictEqual(r.method, 'GET');
  assert.strictEqual(r.path, '/v2/weather/paris');
  assert.deepStrictEqual(r.query, {days: ['3'], unit: ['c']});
  console.log('ok get with query');

  // POST JSON (the client adds Content-MD5).
  r = await client.post(`${gateway}/orders?dry=true`, {
    headers: Object.assign({'content-type': 'application/json'}, hostHeader),
    data: {item: 'book', qty: 2}, // the client JSON-encodes it
  });
  assert.strictEqual(r.method, 'POST');
  assert.strictEqual(r.body, '{"item":"book","qty":2}');
  console.log('ok post json');

  // POST form: the form parameters are part of the signed resource.
  r = await client.post(`${gateway}/login?src=app`, {
    headers: Object.assign({'content-type': 'application/x-www-form-urlencoded'}, hostHeader),
    data: {user: 'ann', pin: '1234'},
  });
  assert.strictEqual(r.method, 'POST');
  assert.match(r.body, /user=ann/);
  console.log('ok post form');

  // An extra signed header.
  r = await client.get(`${gateway}/cities/rome`, {
    headers: hostHeader,
    signHeaders: {'x-custom-tag': 'blue'},
  });
  assert.strictEqual(r.headers['X-Custom-Tag'][0], 'blue');
  console.log('ok extra signed header');

  // A wrong secret is refused with the server's string-to-sign.
  const forged = new Client(process.env.APP_KEY, 'not-the-secret-at-all');
  try {
    await forged.get(`${gateway}/cities/paris`, {headers: hostHeader});
    assert.fail('a forged signature was accepted');
  } catch (err) {
    assert.strictEqual(err.code, 403);
    assert.match(err.data.headers['x-ca-error-message'], /^Invalid Signature, Server StringToSign:/);
  }
  console.log('ok forged refused');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
