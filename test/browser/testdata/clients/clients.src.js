// The client libraries people use with the gateway, run in a browser page of
// the gateway's origin by test/browser: Apollo Client (HttpLink for queries
// and mutations, GraphQLWsLink over graphql-ws for subscriptions) and the
// legacy subscriptions-transport-ws client, graphql-sse (subscriptions
// over Server-Sent Events, where websockets are blocked), and HttpLink
// alone (subscriptions over multipart HTTP, @defer). Bundled into
// test/browser/testdata/clients/clients.js (see README.md beside it).
import { ApolloClient, InMemoryCache, HttpLink, gql } from '@apollo/client/core';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { generatePersistedQueryIdsFromManifest } from '@apollo/persisted-query-lists';
import { createClient } from 'graphql-ws';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import { createClient as createSSEClient } from 'graphql-sse';

const SUB_TEXT = 'subscription($s: ID) { conversationUpdated(sessionId: $s) { eventId sessionId userMessage assistantReply } }';
const SUB = gql(SUB_TEXT);

async function openSubscriptions() {
  const text = await (await fetch('/metrics')).text();
  const m = text.match(/daca_gateway_open_subscriptions\{topic="conversations"\} (\d+)/);
  return m ? Number(m[1]) : 0;
}

function first(observable, name) {
  return new Promise((resolve, reject) => {
    const sub = observable.subscribe({
      next: (v) => { resolve(v); sub.unsubscribe(); },
      error: (e) => reject(new Error(name + ': ' + (e && e.message ? e.message : JSON.stringify(e)))),
    });
  });
}

function within(ms, p, what) {
  return Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout: ' + what)), ms))]);
}

async function run({ user, session }) {
  const wsURL = location.origin.replace(/^http/, 'ws') + '/graphql';
  const http = new ApolloClient({ link: new HttpLink({ uri: '/graphql' }), cache: new InMemoryCache() });
  const health = await http.query({ query: gql`{ health { status authMode } }`, fetchPolicy: 'no-cache' });

  const before = await openSubscriptions();
  const wsClient = createClient({ url: wsURL });
  const modern = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });
  const legacy = new SubscriptionClient(wsURL, { reconnect: false });
  const modernEvent = first(modern.subscribe({ query: SUB, variables: { s: session } }), 'GraphQLWsLink');
  const legacyEvent = first(legacy.request({ query: SUB, variables: { s: session } }), 'subscriptions-transport-ws');
  const sse = createSSEClient({ url: location.origin + '/graphql' });
  const sseEvent = new Promise((resolve, reject) => {
    const dispose = sse.subscribe({ query: SUB_TEXT, variables: { s: session } }, {
      next: (v) => { resolve(v); dispose(); },
      error: (e) => reject(new Error('graphql-sse: ' + (e && e.message ? e.message : JSON.stringify(e)))),
      complete: () => {},
    });
  });

  // Both subscriptions are open on the gateway before the turn is sent.
  const deadline = Date.now() + 20000;
  while ((await openSubscriptions()) < before + 3) {
    if (Date.now() > deadline) throw new Error('subscriptions did not open');
    await new Promise((r) => setTimeout(r, 50));
  }
  const sent = await http.mutate({
    mutation: gql`mutation($in: SendMessageInput!) { sendMessage(input: $in) { reply sessionId status } }`,
    variables: { in: { userId: user, text: 'hello from Apollo', sessionId: session } },
  });
  const [m, l, e] = await within(30000, Promise.all([modernEvent, legacyEvent, sseEvent]), 'events');
  await wsClient.dispose();
  legacy.close();
  sse.dispose();
  return { health: health.data.health, sent: sent.data.sendMessage, modern: m.data.conversationUpdated, legacy: l.data.conversationUpdated,
    sse: e.data.conversationUpdated };
}

async function sha256(text) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// persisted runs a query twice through Apollo's automatic persisted
// queries link (hashed queries over GET), from two clients, and returns the
// requests each made: the first sends the hash, is told the query is not
// found, and sends it; the second sends the hash alone.
async function persisted({ user }) {
  const requests = [];
  const client = () => {
    const tag = [];
    requests.push(tag);
    const fetchLogged = (uri, opts) => {
      const u = new URL(uri, location.origin);
      tag.push({ method: (opts && opts.method) || 'GET', hashOnly: !u.searchParams.get('query') && !(opts && opts.body && opts.body.includes('"query"')) });
      return fetch(uri, opts);
    };
    const link = createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(new HttpLink({ uri: '/graphql', fetch: fetchLogged }));
    return new ApolloClient({ link, cache: new InMemoryCache() });
  };
  const query = gql`query Persisted($u: ID!) { memory(userId: $u) { userId userSummary } }`;
  const first = await client().query({ query, variables: { u: user }, fetchPolicy: 'no-cache' });
  const second = await client().query({ query, variables: { u: user }, fetchPolicy: 'no-cache' });
  return { first: first.data.memory, second: second.data.memory, requests };
}

// httpOnly uses Apollo Client's plain HttpLink for everything: a
// subscription over multipart HTTP (Apollo's protocol, no websocket link)
// that receives the turn's event, and a query with @defer whose deferred
// fragment (a session's messages) arrives after the session list; it
// returns the event, the result Apollo merged, and the Accept headers and
// response types the link saw.
async function httpOnly({ user, session }) {
  const seen = [];
  const fetchLogged = async (uri, opts) => {
    const resp = await fetch(uri, opts);
    seen.push({ accept: (opts && opts.headers && (opts.headers.accept || opts.headers.Accept)) || '', type: resp.headers.get('content-type') || '' });
    return resp;
  };
  const client = new ApolloClient({ link: new HttpLink({ uri: '/graphql', fetch: fetchLogged }), cache: new InMemoryCache() });
  const before = await openSubscriptions();
  const event = first(client.subscribe({ query: SUB, variables: { s: session } }), 'HttpLink subscription');
  const deadline = Date.now() + 20000;
  while ((await openSubscriptions()) < before + 1) {
    if (Date.now() > deadline) throw new Error('the multipart subscription did not open');
    await new Promise((r) => setTimeout(r, 50));
  }
  const sent = await client.mutate({
    mutation: gql`mutation($in: SendMessageInput!) { sendMessage(input: $in) { reply sessionId status } }`,
    variables: { in: { userId: user, text: 'hello over multipart', sessionId: session } },
  });
  const ev = await within(30000, event, 'the multipart event');
  const deferred = await client.query({
    query: gql`query Sessions($u: ID!) { sessions(userId: $u) { sessionId ... @defer(label: "messages") { messages(last: 2) { content } } } }`,
    variables: { u: user }, fetchPolicy: 'no-cache',
  });
  return { sent: sent.data.sendMessage, event: ev.data.conversationUpdated, sessions: deferred.data.sessions, seen };
}

// trusted runs, against a gateway that runs only trusted documents,
// Apollo's persisted-query link with ids from a persisted query manifest
// (@apollo/persisted-query-lists, as apps built with Apollo's
// generate-persisted-query-manifest do): the query is sent by id alone and
// answered; the same client's operation that is not in the manifest, sent
// whole by a plain HttpLink, is refused.
async function trusted({ manifest, user }) {
  const bodies = [];
  const fetchLogged = (uri, opts) => { bodies.push((opts && opts.body) || ''); return fetch(uri, opts); };
  const link = createPersistedQueryLink(generatePersistedQueryIdsFromManifest({ loadManifest: () => manifest }))
    .concat(new HttpLink({ uri: '/graphql', fetch: fetchLogged }));
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  const r = await client.query({ query: gql`query TrustedMemory($u: ID!) { memory(userId: $u) { userId userSummary } }`, variables: { u: user }, fetchPolicy: 'no-cache' });
  let refused = '';
  try {
    await new ApolloClient({ link: new HttpLink({ uri: '/graphql' }), cache: new InMemoryCache() })
      .query({ query: gql`query NotListed { health { status } }`, fetchPolicy: 'no-cache' });
  } catch (e) {
    refused = JSON.stringify((e.graphQLErrors || []).map((g) => g.extensions && g.extensions.code));
  }
  return { memory: r.data.memory, sentText: bodies.some((b) => b.includes('"query"')), requests: bodies.length, refused };
}

window.dacaClients = { run, persisted, httpOnly, trusted };
