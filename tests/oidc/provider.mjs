// Copied from docs/design/SSO-RESEARCH.md Appendix A (verified there), plus /__test/client.
// A real OpenID Provider (npm `oidc-provider`, certified) for Tacit's tests, on loopback.
//
// Environment (all optional):
//   OP_PORT            port to listen on (0 = any free port; default 0)
//   OP_CLIENT_ID       the static public client (default "tacit-cli")
//   OP_ID_TOKEN_ALG    RS256 | ES256 | EdDSA (default RS256): the client's id_token alg
//   OP_BACKCHANNEL_URI where the provider POSTs logout tokens (e.g. http://127.0.0.1:PORT/v1/oidc/backchannel-logout)
//   OP_ACCOUNTS        JSON {"sub": {"preferred_username": ..., "email": ..., "groups": [...]}}
//   OP_TEST_CONTROL    "1" mounts /__test/* (approve a user code, back-channel logout, rotate keys,
//                      set the client's backchannel_logout_uri after start)
// Prints one line `listening <issuer>` on stdout once it accepts connections.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const PORT = Number(process.env.OP_PORT ?? 0);
const CLIENT_ID = process.env.OP_CLIENT_ID ?? 'tacit-cli';
const ALG = process.env.OP_ID_TOKEN_ALG ?? 'RS256';
const BACKCHANNEL = process.env.OP_BACKCHANNEL_URI;
const ACCOUNTS = JSON.parse(process.env.OP_ACCOUNTS ?? JSON.stringify({
  'sub-alice': { preferred_username: 'alice', email: 'alice@example.com', groups: ['tacit-admins', 'staff'] },
  'sub-bob': { preferred_username: 'bob', email: 'bob@example.com', groups: ['staff'] },
}));

// One signing key per algorithm; the JWKS publishes all three, each with a kid and alg.
function jwk(type, opts, alg) {
  const { privateKey } = generateKeyPairSync(type, opts);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg}-${randomUUID().slice(0, 8)}`, alg, use: 'sig' };
}
function keyset() {
  return [
    jwk('rsa', { modulusLength: 2048 }, 'RS256'),
    jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
    jwk('ed25519', {}, 'EdDSA'),
  ];
}

const client = { // mutable: /__test/client changes it
  client_id: CLIENT_ID,
  application_type: 'native', // loopback redirect with any port (RFC 8252 7.3)
  token_endpoint_auth_method: 'none', // public client: PKCE is required for the code flow
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
  id_token_signed_response_alg: ALG,
  ...(BACKCHANNEL ? { backchannel_logout_uri: BACKCHANNEL, backchannel_logout_session_required: true } : {}),
};

const COOKIE_KEYS = [randomUUID()];
let issuer; // set after listen (the port may be ephemeral)
function makeProvider(url, jwks) {
  return new Provider(url, {
    clients: [client],
    cookies: { keys: COOKIE_KEYS }, // signed cookies stay valid across a key rotation
    jwks: { keys: jwks },
    findAccount: async (_ctx, sub) => ACCOUNTS[sub] && {
      accountId: sub,
      claims: async () => ({ sub, ...ACCOUNTS[sub], email_verified: true, name: ACCOUNTS[sub].preferred_username }),
    },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    // Put the scope claims in the ID token even when an access token is issued too (as
    // Keycloak/Entra/Okta do by default); otherwise they would be userinfo-only.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true }, // built-in login (any login = accountId) + consent pages
      deviceFlow: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: { DeviceCode: 600, IdToken: 300, AccessToken: 300, Interaction: 600, Session: 3600, Grant: 3600 },
    // The default fetch refuses special-use addresses (127.0.0.0/8 included) as SSRF
    // protection, which would stop the logout token reaching a server on loopback.
    fetch: (u, options) => { delete options.dispatcher; return globalThis.fetch(u, options); },
  });
}

// Test control, mounted before the provider's routes.
async function body(ctx) {
  const chunks = [];
  for await (const c of ctx.req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}
function control(provider) {
  return async (ctx, next) => {
    if (process.env.OP_TEST_CONTROL !== '1' || !ctx.path.startsWith('/__test/')) return next();
    const req = await body(ctx);
    if (ctx.path === '/__test/approve') {
      // The user approves a user code (what /device + login + consent would do).
      const normalized = req.user_code.toUpperCase().replace(/\W/g, '');
      const code = await provider.DeviceCode.findByUserCode(normalized, { ignoreExpiration: true });
      if (!code || code.isExpired || code.accountId || code.error) { ctx.status = 404; ctx.body = { error: 'no such pending user code' }; return; }
      if (req.deny) {
        Object.assign(code, { error: 'access_denied', errorDescription: 'End-User denied' });
        await code.save(); ctx.status = 204; return;
      }
      const grant = new provider.Grant({ accountId: req.sub, clientId: code.clientId });
      grant.addOIDCScope(code.params.scope);
      const grantId = await grant.save();
      Object.assign(code, {
        accountId: req.sub, grantId, scope: code.params.scope,
        authTime: Math.floor(Date.now() / 1000), sid: req.sid ?? randomUUID(),
      });
      await code.save();
      ctx.body = { sid: code.sid };
    } else if (ctx.path === '/__test/backchannel-logout') {
      // The IdP logs the user out: sign a logout token and POST it to backchannel_logout_uri.
      const c = await provider.Client.find(req.client_id ?? CLIENT_ID);
      try { await c.backchannelLogout(req.sub, req.sid); ctx.status = 204; } catch (e) { ctx.status = 502; ctx.body = { error: String(e.message) }; }
    } else if (ctx.path === '/__test/client') {
      // Set the client's backchannel_logout_uri once the relying party (which must know the
      // issuer, so starts after the provider) listens. Clients are static configuration, so
      // the provider is rebuilt; the memory adapter keeps every session, grant and code.
      if (req.backchannel_logout_uri) {
        Object.assign(client, { backchannel_logout_uri: req.backchannel_logout_uri, backchannel_logout_session_required: true });
      } else {
        delete client.backchannel_logout_uri;
        delete client.backchannel_logout_session_required;
      }
      install();
      ctx.status = 204;
    } else if (ctx.path === '/__test/rotate') {
      // New signing keys (new kids) first, the old ones still published: tokens issued from
      // now on carry a kid the relying party has not cached. State (memory adapter) is shared.
      current = [...keyset(), ...current];
      install();
      ctx.body = { kids: current.map((k) => k.kid) };
    } else {
      ctx.status = 404;
    }
  };
}

// Two-step start: listen first to learn the port, then build the provider for that issuer.
import { createServer } from 'node:http';
let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
let current;
function install() {
  const provider = makeProvider(issuer, current);
  provider.use(control(provider));
  provider.on('backchannel.error', (_ctx, err) => console.error('backchannel.error', err.message));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  handler = provider.callback();
}
server.listen(PORT, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = keyset();
  install();
  console.log(`listening ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
