// The client libraries people use with the gateway, run in a browser page of
// the gateway's origin by test/browser: Apollo Client (HttpLink for queries
// and mutations, GraphQLWsLink over graphql-ws for subscriptions) and the
// legacy subscriptions-transport-ws client, graphql-sse (subscriptions
// over Server-Sent Events, where websockets are blocked), and HttpLink
// alone (subscriptions over multipart HTTP, @defer), and AG-UI's own client
// (@ag-ui/client's HttpAgent, as CopilotKit uses it). Bundled into
// test/browser/testdata/clients/clients.js (see README.md beside it).
import { ApolloClient, InMemoryCache, HttpLink, gql } from '@apollo/client/core';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { generatePersistedQueryIdsFromManifest } from '@apollo/persisted-query-lists';
import { createClient } from 'graphql-ws';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import { createClient as createSSEClient } from 'graphql-sse';
import { HttpAgent } from '@ag-ui/client';

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

// agui runs AG-UI's HttpAgent against /agui on one thread (the session):
// a streamed reply, a tool call, a call that waits for approval (the run
// ends with an interrupt; the next run resumes it with the approval), and a
// reply whose connection is cut after its first text: running the agent
// again goes on from what it has. It returns what the agent saw.
async function agui({ user, session }) {
  let cut = false; // cut the next response after its first text
  const cutting = async (url, init) => {
    const resp = await fetch(url, init);
    if (!cut) return resp;
    cut = false;
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let seen = '';
    let cutNow = false;
    const body = new ReadableStream({
      async pull(c) {
        if (cutNow) { reader.cancel(); c.close(); return; } // the connection ends mid-run
        const { value, done } = await reader.read();
        if (done) { c.close(); return; }
        seen += dec.decode(value, { stream: true });
        c.enqueue(value); // read by the agent, then the cut
        cutNow = seen.includes('TEXT_MESSAGE_CONTENT');
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: resp.status, headers: resp.headers });
  };
  const agent = new HttpAgent({ url: '/agui', threadId: session, fetch: cutting });
  const props = { forwardedProps: { userId: user } };
  const runs = [];
  const runOnce = async (params) => {
    const events = [];
    let error = '';
    try {
      const r = await agent.runAgent({ ...props, ...params }, { onEvent: ({ event }) => { events.push(event); } });
      void r;
    } catch (e) {
      error = String(e && e.message ? e.message : e);
    }
    // The turn's reply: its assistant messages after the last user message
    // (a new one after each tool call).
    const lastUser = agent.messages.map((m) => m.role).lastIndexOf('user');
    const said = agent.messages.slice(lastUser + 1).filter((m) => m.role === 'assistant');
    const summary = {
      types: events.map((e) => e.type),
      threadId: (events[0] && events[0].threadId) || '',
      outcome: (events.find((e) => e.type === 'RUN_FINISHED') || {}).outcome || null,
      tools: events.filter((e) => e.type === 'TOOL_CALL_START').map((e) => e.toolCallName),
      results: events.filter((e) => e.type === 'TOOL_CALL_RESULT').map((e) => e.content),
      deltas: events.filter((e) => e.type === 'TEXT_MESSAGE_CONTENT').map((e) => e.delta),
      reply: said.map((m) => m.content || '').join(''),
      replyId: said.length ? said[said.length - 1].id : '',
      interrupts: agent.pendingInterrupts.map((i) => ({ id: i.id, reason: i.reason, toolCallId: i.toolCallId || '' })),
      error,
    };
    runs.push(summary);
    return summary;
  };
  const say = (id, text) => agent.addMessage({ id, role: 'user', content: text });

  say('m1', 'stream this reply please');
  await runOnce({});
  say('m2', 'convert 5 km to mi');
  await runOnce({});
  say('m3', 'remind me to water the plants');
  const waiting = await runOnce({});
  await runOnce({ resume: waiting.interrupts.map((i) => ({ interruptId: i.id, status: 'resolved', payload: { approved: true } })) });
  say('m4', 'stream another reply please');
  cut = true;
  await runOnce({});
  await runOnce({}); // the same thread again: a reconnect
  const replies = []; // each turn's reply as the agent shows it
  for (const m of agent.messages) {
    if (m.role === 'user') replies.push('');
    else if (m.role === 'assistant') replies[replies.length - 1] += m.content || '';
  }
  return { runs, replies, roles: agent.messages.map((m) => m.role) };
}

window.dacaClients = { run, persisted, httpOnly, trusted, agui };
