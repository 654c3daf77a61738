'use strict';
// wechat-api 1.35.1, unmodified, through the caddy-wechat gateway over
// HTTPS (Caddy's internal CA, trusted through NODE_EXTRA_CA_CERTS).
// Started by sdktest/node_test.go, which passes:
//   GATEWAY    host:port of the gateway's TLS site (for api.setEndpoint)
//   FILE_HOST  file.api.weixin.qq.com:port, the gateway's plain-HTTP site
//              for that host (wechat-api hard-codes http:// there)
//   CONTROL    the fake's control URL (GET /revoke revokes every token)
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const API = require('wechat-api');

const { GATEWAY, FILE_HOST, CONTROL } = process.env;

// Stands in for "file.api.weixin.qq.com -> gateway" in DNS or /etc/hosts,
// through urllib's documented lookup option (api.setOpts).
function lookup(host, opts, cb) {
  if (typeof opts === 'function') { cb = opts; opts = {}; }
  if (host !== 'file.api.weixin.qq.com') return cb(new Error('test: not WeChat: ' + host));
  if (opts && opts.all) return cb(null, [{ address: '127.0.0.1', family: 4 }]);
  cb(null, '127.0.0.1', 4);
}

function newAPI() {
  // Any appid and secret: the gateway ignores them and has its own.
  const api = new API('wx00000000sdktest01', 'sdk-dummy-secret-goes-nowhere');
  api.setEndpoint(GATEWAY);
  api.fileServerPrefix = 'http://' + FILE_HOST + '/cgi-bin/';
  api.setOpts({ lookup, timeout: 20000 });
  return api;
}

function call(api, name, ...args) {
  return promisify(api[name]).apply(api, args);
}

async function revoke() {
  const res = await fetch(CONTROL + '/revoke');
  assert.strictEqual(res.status, 200);
}

test('wechat-api through the gateway, with a revocation half way', async () => {
  const api = newAPI();
  const tok = await promisify(api.getLatestToken).call(api);
  assert.match(tok.accessToken, /^CADDY_WECHAT_PLACEHOLDER_/);

  const img = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sdktest-')), 'a.jpg');
  const imgBytes = crypto.randomBytes(5000);
  fs.writeFileSync(img, imgBytes);
  const imgSHA = crypto.createHash('sha256').update(imgBytes).digest('hex');

  for (const round of [0, 1]) {
    if (round === 1) await revoke();
    const ok = (r, what) => assert.ok(r && !r.errcode, `round ${round}: ${what}: ${JSON.stringify(r)}`);

    ok(await call(api, 'getUser', 'o1'), 'user info');
    ok(await call(api, 'getMenu'), 'menu get');
    ok(await call(api, 'createMenu', { button: [{ type: 'click', name: 'Hi', key: 'K1' }] }), 'menu create');
    ok(await call(api, 'sendTemplate', 'o1', 'T1', 'https://example.com', { first: { value: 'hi' } }), 'template send');
    const up = await call(api, 'uploadMedia', img, 'image');
    assert.strictEqual(up.media_id, 'MEDIA_' + imgSHA.slice(0, 16), 'upload arrived whole');
    const media = await call(api, 'getMedia', up.media_id);
    assert.ok(Buffer.isBuffer(media) && media.length === 1 << 20, `round ${round}: media download: ${media && media.length}`);
    ok(await call(api, 'getFollowers'), 'user list');
    ok(await call(api, 'createTag', 'tag' + round), 'tag create');
    ok(await call(api, 'sendText', 'o1', 'hello'), 'custom message');
    const qr = await call(api, 'createTmpQRCode', 42, 3600);
    assert.strictEqual(qr.ticket, 'QR_TICKET');
    // showqrcode is on mp.weixin.qq.com and needs no token: left alone.
    assert.match(api.showQRCodeURL(qr.ticket), /^https:\/\/mp\.weixin\.qq\.com\/cgi-bin\/showqrcode\?ticket=/);
    ok(await call(api, 'getIp'), 'callback ip');
    // file.api.weixin.qq.com, hard-coded by wechat-api for video.
    ok(await call(api, 'uploadMPVideo', { media_id: up.media_id, title: 't', description: 'd' }), 'file.api uploadvideo');

    const ticket = await promisify(api.getLatestTicket).call(api);
    assert.ok(ticket.ticket, 'getticket');
    const page = 'https://example.com/page?x=1';
    const cfg = await call(api, 'getJsConfig', { url: page, jsApiList: ['scanQRCode'] });
    // The ticket the fake issued, asked of the gateway with no token.
    const fresh = await call(api, 'request', 'https://' + GATEWAY + '/cgi-bin/ticket/getticket?type=jsapi', { dataType: 'json' });
    const raw = `jsapi_ticket=${fresh.ticket}&noncestr=${cfg.nonceStr}&timestamp=${cfg.timestamp}&url=${page}`;
    assert.strictEqual(cfg.signature, crypto.createHash('sha1').update(raw).digest('hex'), 'JS-SDK signature');
  }
});
