/**
 * The OpenTier web chat page (docs/web.md): sign in, collections, uploads with progress and the
 * ingestion job's status, chat over the WebSocket /v1/chat/ws with streamed tokens and citations, stop,
 * and the conversation list. Plain ES modules, no build step; talks only to the gateway's public API.
 *
 * Tokens live in this module's memory only (never in storage): reloading the page signs out. Text from
 * the model or from documents reaches the page only as text nodes (markdown.js); nothing here assigns
 * markup.
 */

import { renderMarkdown, renderPlain } from './markdown.js';

const $ = (id) => document.getElementById(id);

// -- the session: tokens in memory, refreshed before they expire ------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const session = { access: null, refresh: null, user: null, timer: 0, refreshing: null };

function adopt(tokens) {
  session.access = tokens.access_token;
  session.refresh = tokens.refresh_token;
  session.user = tokens.user;
  clearTimeout(session.timer);
  // Refresh a little before the access token expires; a failure ends the session.
  const seconds = Math.max(5, Math.min(tokens.expires_in - 30, tokens.expires_in * 0.8));
  session.timer = setTimeout(() => refreshTokens().catch(refreshFailed), seconds * 1000);
}

/** A refused refresh ends the session; a network failure is tried again a little later. */
function refreshFailed(error) {
  if (session.access === null) return;
  if (error.status === 0) {
    clearTimeout(session.timer);
    session.timer = setTimeout(() => refreshTokens().catch(refreshFailed), 15000);
  } else {
    sessionEnded(error);
  }
}

function refreshTokens() {
  if (!session.refresh) return Promise.reject(new ApiError(401, 'unauthenticated', 'You are signed out.'));
  if (!session.refreshing) {
    const refresh = session.refresh;
    session.refreshing = request('POST', '/v1/auth/refresh', { json: { refresh_token: refresh }, auth: false })
      .then((tokens) => {
        if (session.refresh === refresh) adopt(tokens);
      })
      .finally(() => {
        session.refreshing = null;
      });
  }
  return session.refreshing;
}

/** Refresh after a 401; a refused refresh ends the session (and is thrown to the caller too). */
async function refreshOrEnd() {
  try {
    await refreshTokens();
  } catch (err) {
    refreshFailed(err);
    throw err;
  }
}

function errorOf(status, body) {
  const error = body && body.error;
  return new ApiError(
    status,
    (error && error.code) || `http_${status}`,
    (error && error.message) || `The gateway answered ${status}.`,
  );
}

/** A JSON call of the gateway's API; a 401 refreshes the tokens once and tries again. */
async function request(method, path, { json, auth = true, retried = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) headers.Authorization = `Bearer ${session.access}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', 'The gateway cannot be reached; check your connection and try again.');
  }
  if (response.status === 401 && auth && !retried && session.refresh) {
    await refreshOrEnd();
    return request(method, path, { json, auth, retried: true });
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw errorOf(response.status, body);
  return body;
}

function sessionEnded(error) {
  if (session.access === null) return;
  signOut(`Your session ended (${error.message}). Please sign in again.`);
}

// -- small helpers ----------------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function announce(text) {
  const status = $('chat-status');
  status.textContent = '';
  // A fresh text node, so that the same words are announced again.
  setTimeout(() => {
    status.textContent = text;
  }, 50);
}

function shortDate(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

// -- page state -------------------------------------------------------------------------------------

const state = {
  collections: [],
  collectionId: '',
  collectionsLoaded: false,
  conversationId: null,
  conversations: [],
  turn: null,
  ws: null,
  wsReady: null,
};
const answers = new WeakMap(); // <article> → Answer, for the citation buttons inside it

// -- signing in and out -----------------------------------------------------------------------------

async function onSignIn(event) {
  event.preventDefault();
  const email = $('signin-email').value.trim();
  const password = $('signin-password').value;
  const tenant = $('signin-tenant').value.trim();
  const error = $('signin-error');
  error.textContent = '';
  if (!email || !password) {
    error.textContent = 'Enter your email and password.';
    (email ? $('signin-password') : $('signin-email')).focus();
    return;
  }
  const submit = $('signin-submit');
  submit.disabled = true;
  try {
    const body = { email, password };
    if (tenant) body.tenant = tenant;
    adopt(await request('POST', '/v1/auth/login', { json: body, auth: false }));
  } catch (err) {
    error.textContent =
      err.code === 'unauthenticated' ? 'The email or the password is wrong.' : `Sign-in failed: ${err.message}`;
    submit.disabled = false;
    $('signin-password').focus();
    return;
  }
  submit.disabled = false;
  $('signin-password').value = '';
  showApp();
}

function showApp() {
  const user = session.user || {};
  $('who').textContent = `Signed in as ${user.display_name || user.email || ''}`.trim();
  $('signin-view').hidden = true;
  $('app-view').hidden = false;
  $('account').hidden = false;
  document.body.classList.add('signed-in');
  newChat();
  loadCollections().catch((err) => {
    $('collection-error').textContent = `The collections could not be loaded: ${err.message}`;
  });
  loadConversations();
  $('message').focus();
}

function signOut(message = '') {
  const refresh = session.refresh;
  clearTimeout(session.timer);
  Object.assign(session, { access: null, refresh: null, user: null, refreshing: null });
  if (state.ws) state.ws.close(1000, 'signed out');
  Object.assign(state, { ws: null, wsReady: null, collectionsLoaded: false });
  Object.assign(state, { collections: [], collectionId: '', conversationId: null, conversations: [] });
  state.turn = null;
  $('messages').replaceChildren(emptyNote());
  $('uploads').replaceChildren();
  $('conversations').replaceChildren();
  setComposing(false);
  document.body.classList.remove('signed-in', 'sidebar-open');
  $('menu-toggle').setAttribute('aria-expanded', 'false');
  $('app-view').hidden = true;
  $('account').hidden = true;
  $('signin-view').hidden = false;
  $('signin-error').textContent = message;
  $('signin-email').focus();
  if (refresh) {
    request('POST', '/v1/auth/logout', { json: { refresh_token: refresh }, auth: false }).catch(() => {});
  }
}

// -- collections ------------------------------------------------------------------------------------

async function loadCollections(select) {
  const found = [];
  let token = null;
  do {
    const query = new URLSearchParams({ page_size: '200' });
    if (token) query.set('page_token', token);
    const page = await request('GET', `/v1/collections?${query}`);
    found.push(...page.collections);
    token = page.next_page_token;
  } while (token && found.length < 2000);
  state.collections = found;
  const wanted = select ?? state.collectionId;
  const menu = $('collection');
  const none = element('option', '', 'No collection (chat without documents)');
  none.value = '';
  menu.replaceChildren(
    none,
    ...found.map((collection) => {
      const count = `${collection.document_count} document${collection.document_count === 1 ? '' : 's'}`;
      const option = element('option', '', `${collection.name} (${count})`);
      option.value = collection.id;
      return option;
    }),
  );
  // The first time, the first collection; later, what was picked, "No collection" included.
  const known = wanted === '' ? state.collectionsLoaded : found.some((collection) => collection.id === wanted);
  state.collectionsLoaded = true;
  pickCollection(known ? wanted : found.length ? found[0].id : '');
}

function pickCollection(id) {
  state.collectionId = id;
  $('collection').value = id;
  const collection = state.collections.find((c) => c.id === id);
  $('upload-target').textContent = collection
    ? `Files are added to “${collection.name}”.`
    : 'Pick or create a collection to upload files.';
  $('file-input').disabled = !collection;
  $('dropzone').classList.toggle('disabled', !collection);
}

async function onCreateCollection(event) {
  event.preventDefault();
  const input = $('collection-name');
  const error = $('collection-error');
  error.textContent = '';
  const name = input.value.trim();
  if (!name) {
    error.textContent = 'Give the collection a name.';
    input.focus();
    return;
  }
  try {
    const created = await request('POST', '/v1/collections', { json: { name } });
    input.value = '';
    await loadCollections(created.id);
    announce(`Collection ${created.name} created.`);
  } catch (err) {
    error.textContent = err.code === 'already_exists' ? `A collection named “${name}” exists already.` : err.message;
    input.focus();
  }
}

// -- uploads ----------------------------------------------------------------------------------------

function uploadFiles(files) {
  if (!state.collectionId) {
    $('collection-error').textContent = 'Pick or create a collection before uploading files.';
    return;
  }
  for (const file of files) uploadOne(file, state.collectionId);
}

function uploadRow(file) {
  const row = element('li', 'upload');
  const name = element('span', 'upload-name', file.name);
  const progress = element('progress');
  progress.max = 1;
  progress.value = 0;
  progress.setAttribute('aria-label', `Upload of ${file.name}`);
  const status = element('span', 'upload-status', 'Waiting…');
  row.append(name, progress, status);
  $('uploads').prepend(row);
  return {
    row,
    progress,
    show(text, kind = '') {
      status.textContent = text;
      row.dataset.state = kind;
    },
  };
}

/** POST the file as multipart with XMLHttpRequest, whose upload events give the progress. */
function sendFile(file, collectionId, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1/collections/${encodeURIComponent(collectionId)}/documents`);
    xhr.setRequestHeader('Authorization', `Bearer ${session.access}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener('error', () =>
      reject(new ApiError(0, 'network', 'the upload was interrupted (the file may be too large)')),
    );
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'the upload was stopped')));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

async function uploadOne(file, collectionId) {
  const row = uploadRow(file);
  row.show('Uploading 0%', 'uploading');
  try {
    const progress = (share) => {
      row.progress.value = share;
      row.show(`Uploading ${Math.round(share * 100)}%`, 'uploading');
    };
    let answer = await sendFile(file, collectionId, progress);
    if (answer.status === 401 && session.refresh) {
      await refreshOrEnd();
      answer = await sendFile(file, collectionId, progress);
    }
    if (answer.status !== 202) throw errorOf(answer.status, answer.body);
    row.progress.value = 1;
    await followJob(answer.body.job, row, file.name);
  } catch (err) {
    row.show(`Failed: ${err.message}`, 'failed');
    announce(`Upload of ${file.name} failed.`);
  }
}

const JOB_WORDS = { queued: 'Queued', running: 'Processing' };

async function followJob(job, row, filename) {
  let delay = 250;
  while (!job.finished) {
    const share = job.progress === null ? '' : ` ${Math.round(job.progress * 100)}%`;
    row.show(`${JOB_WORDS[job.status] || 'Processing'}${share}`, 'processing');
    await sleep(delay);
    delay = Math.min(2000, delay * 1.5);
    if (session.access === null) return;
    job = await request('GET', `/v1/jobs/${encodeURIComponent(job.id)}`);
  }
  if (job.status === 'succeeded' && job.counts.failed === 0) {
    row.show(job.counts.unchanged > 0 && job.counts.created + job.counts.updated === 0 ? 'Ready (unchanged)' : 'Ready', 'done');
    announce(`${filename} is ready.`);
  } else if (job.status === 'cancelled') {
    row.show('Cancelled', 'failed');
  } else {
    const reason = (job.error && job.error.message) || (await documentFailure(job.collection_id, filename));
    row.show(`Failed: ${reason}`, 'failed');
    announce(`${filename} could not be processed.`);
  }
  loadCollections().catch(() => {});
}

/** Why the document `source` of a collection failed, as the gateway tells it. */
async function documentFailure(collectionId, source) {
  try {
    const query = new URLSearchParams({ status: 'failed', page_size: '200' });
    const page = await request('GET', `/v1/collections/${encodeURIComponent(collectionId)}/documents?${query}`);
    const document_ = page.documents.find((d) => d.source === source);
    if (document_ && document_.error) return document_.error.message;
  } catch {
    // the generic reason below
  }
  return 'the document could not be processed';
}

// -- conversations ----------------------------------------------------------------------------------

async function loadConversations() {
  const error = $('conversations-error');
  try {
    const page = await request('GET', '/v1/conversations?page_size=50');
    error.textContent = '';
    state.conversations = page.conversations;
  } catch (err) {
    error.textContent = `The conversations could not be loaded: ${err.message}`;
    return;
  }
  const list = $('conversations');
  list.replaceChildren(
    ...state.conversations.map((conversation) => {
      const item = element('li');
      const button = element('button', 'conversation');
      button.type = 'button';
      button.dataset.id = conversation.id;
      button.append(
        element('span', 'conversation-title', conversation.title || 'Untitled conversation'),
        element('span', 'conversation-date', shortDate(conversation.updated_at || conversation.created_at)),
      );
      if (conversation.id === state.conversationId) button.setAttribute('aria-current', 'true');
      item.append(button);
      return item;
    }),
  );
  if (!state.conversations.length) list.append(element('li', 'hint', 'No conversations yet.'));
}

function markCurrentConversation() {
  for (const button of $('conversations').querySelectorAll('button.conversation')) {
    if (button.dataset.id === state.conversationId) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
}

async function openConversation(id) {
  if (state.turn) {
    announce('Stop the answer before opening another conversation.');
    return;
  }
  let found;
  try {
    found = await request('GET', `/v1/conversations/${encodeURIComponent(id)}`);
  } catch (err) {
    $('conversations-error').textContent = `The conversation could not be opened: ${err.message}`;
    return;
  }
  state.conversationId = id;
  const messages = $('messages');
  messages.replaceChildren();
  for (const message of found.messages) {
    if (message.role === 'user') {
      addUserMessage(message.content);
    } else if (message.role === 'assistant') {
      const answer = addAnswer();
      answer.text = message.content;
      for (const citation of message.citations) answer.citations.set(citation.source_number, citation);
      answer.finish(message.status || 'complete', message.error);
    }
  }
  if (!found.messages.length) messages.append(emptyNote());
  const [collection] = found.conversation.collection_ids;
  if (collection && state.collections.some((c) => c.id === collection)) pickCollection(collection);
  markCurrentConversation();
  closeSidebar();
  messages.focus();
  announce(`Opened ${found.conversation.title || 'the conversation'}, ${found.messages.length} messages.`);
}

function newChat() {
  if (state.turn) return;
  state.conversationId = null;
  $('messages').replaceChildren(emptyNote());
  markCurrentConversation();
  closeSidebar();
  $('message').focus();
}

function emptyNote() {
  const note = element('p', 'empty', 'Ask a question about your documents.');
  note.id = 'empty-chat';
  return note;
}

// -- messages and answers ---------------------------------------------------------------------------

function addMessageFrame(role, heading) {
  const empty = $('empty-chat');
  if (empty) empty.remove();
  const article = element('article', `message ${role}`);
  article.append(element('h3', 'message-role', heading));
  const body = element('div', 'message-body');
  const meta = element('div', 'message-meta');
  article.append(body, meta);
  $('messages').append(article);
  return { article, body, meta };
}

function addUserMessage(text) {
  const { body, article } = addMessageFrame('user', 'You');
  body.append(renderPlain(text));
  article.scrollIntoView({ block: 'end' });
}

const STATUS_WORDS = { cancelled: 'Stopped', failed: 'Failed', interrupted: 'Connection lost', in_progress: 'Unfinished' };

class Answer {
  constructor(frame) {
    Object.assign(this, frame);
    this.text = '';
    this.citations = new Map();
    this.status = 'streaming';
    this.error = null;
    this.notes = [];
    this.pending = false;
    answers.set(this.article, this);
    this.article.setAttribute('aria-busy', 'true');
  }

  citationLabel(n) {
    const citation = this.citations.get(n);
    if (!citation) return null;
    const page = citation.page === null || citation.page === undefined ? '' : `, page ${citation.page}`;
    return `Source ${n}: ${citation.title || citation.source}${page}`;
  }

  render() {
    this.pending = false;
    const content = renderMarkdown(this.text, { cite: (n) => this.citationLabel(n) });
    this.body.replaceChildren(content);
    if (this.status === 'streaming') this.body.append(element('span', 'cursor', '▍'));
    const meta = [];
    if (this.citations.size) {
      const list = element('ol', 'sources');
      list.setAttribute('aria-label', 'Sources');
      for (const [n, citation] of [...this.citations.entries()].sort((a, b) => a[0] - b[0])) {
        const item = element('li');
        const button = element('button', 'source-link');
        button.type = 'button';
        button.dataset.source = String(n);
        const page = citation.page === null || citation.page === undefined ? '' : ` · page ${citation.page}`;
        button.textContent = `[${n}] ${citation.title || citation.source}${page}`;
        item.append(button);
        list.append(item);
      }
      meta.push(list);
    }
    for (const note of this.notes) meta.push(element('p', 'note', note));
    if (STATUS_WORDS[this.status]) {
      const detail = this.error && this.error.message ? `: ${this.error.message}` : '';
      meta.push(element('p', `badge ${this.status}`, `${STATUS_WORDS[this.status]}${detail}`));
    }
    this.meta.replaceChildren(...meta);
  }

  /** Render at the next frame (many tokens arrive between two frames). */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      if (this.pending) this.render();
      const log = $('messages');
      if (log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
    });
  }

  finish(status, error = null) {
    this.status = status;
    if (error) this.error = error;
    this.article.setAttribute('aria-busy', 'false');
    this.article.dataset.status = status;
    this.render();
  }
}

function addAnswer() {
  return new Answer(addMessageFrame('assistant', 'OpenTier'));
}

// -- the source dialog ------------------------------------------------------------------------------

function openSource(citation, opener) {
  const dialog = $('source-dialog');
  $('source-title').textContent = `[${citation.source_number}] ${citation.title || citation.source}`;
  const meta = [];
  if (citation.title && citation.source && citation.source !== citation.title) meta.push(citation.source);
  if (citation.page !== null && citation.page !== undefined) meta.push(`page ${citation.page}`);
  if (citation.heading_path && citation.heading_path.length) meta.push(citation.heading_path.join(' › '));
  $('source-meta').textContent = meta.join(' · ');
  $('source-text').replaceChildren(renderPlain(citation.text));
  dialog.addEventListener(
    'close',
    () => {
      if (opener && opener.isConnected) opener.focus();
    },
    { once: true },
  );
  dialog.showModal();
  $('source-close').focus();
}

function onMessagesClick(event) {
  const button = event.target.closest('button.cite, button.source-link');
  if (!button) return;
  const answer = answers.get(button.closest('article'));
  const citation = answer && answer.citations.get(Number(button.dataset.source));
  if (citation) openSource(citation, button);
}

// -- chat over the WebSocket ------------------------------------------------------------------------

const CLOSE_REASONS = {
  1001: 'the gateway is restarting',
  1009: 'the message was too large',
  1011: 'the gateway had an internal error',
  4401: 'your session is no longer valid',
  4403: 'your account may not chat',
  4408: 'the page read the answer too slowly',
  4429: 'too many requests; wait a moment',
};

function connect() {
  if (state.wsReady) return state.wsReady;
  const url = new URL('/v1/chat/ws', window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('access_token', session.access);
  const ws = new WebSocket(url);
  state.ws = ws;
  state.wsReady = new Promise((resolve, reject) => {
    ws.addEventListener('message', (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (data.type === 'hello') resolve(ws);
      else if (data.type === 'error' && data.seq === undefined) ws.refusal = data;
      else onServerMessage(data);
    });
    ws.addEventListener('close', (event) => {
      if (state.ws === ws) {
        state.ws = null;
        state.wsReady = null;
      }
      const reason = (ws.refusal && ws.refusal.message) || CLOSE_REASONS[event.code] || 'the connection was lost';
      const error = new ApiError(0, (ws.refusal && ws.refusal.code) || `close_${event.code}`, reason);
      reject(error);
      onClosed(error);
    });
  });
  state.wsReady.catch(() => {});
  return state.wsReady;
}

function setComposing(composing) {
  $('send').disabled = composing;
  $('stop').disabled = !composing;
}

async function ask(text) {
  if (state.turn) return;
  addUserMessage(text);
  const answer = addAnswer();
  answer.render();
  const turn = { answer, started: false, cancelRequested: false };
  state.turn = turn;
  setComposing(true);
  announce('Answering…');
  let ws;
  try {
    ws = await connect();
  } catch (err) {
    if (state.turn !== turn) return;
    if (err.code !== 'unauthenticated' || !session.refresh) {
      endTurn('failed', { message: err.message });
      return;
    }
    try {
      await refreshOrEnd();
      ws = await connect();
    } catch (again) {
      endTurn('failed', { message: again.message });
      return;
    }
  }
  if (state.turn !== turn) return;
  const start = { type: 'start', message: text, collection_ids: state.collectionId ? [state.collectionId] : [] };
  if (state.conversationId) start.conversation_id = state.conversationId;
  ws.send(JSON.stringify(start));
}

function stop() {
  const turn = state.turn;
  if (!turn) return;
  $('stop').disabled = true;
  announce('Stopping…');
  turn.cancelRequested = true;
  // Before `started` the server has no turn to cancel yet: the cancel goes out when it starts.
  if (turn.started && state.ws) state.ws.send(JSON.stringify({ type: 'cancel' }));
}

function endTurn(status, error = null) {
  const turn = state.turn;
  if (!turn) return;
  state.turn = null;
  turn.answer.finish(status, error);
  setComposing(false);
  const words = {
    complete: 'Answer complete.',
    cancelled: 'Answer stopped.',
    failed: `The answer failed${error && error.message ? `: ${error.message}` : '.'}`,
    interrupted: `The connection was lost${error && error.message ? `: ${error.message}` : '.'}`,
  };
  announce(words[status] || 'Answer ended.');
}

function onServerMessage(event) {
  const turn = state.turn;
  if (event.type === 'heartbeat' || event.type === 'pong') return;
  if (!turn) {
    if (event.type === 'error') announce(event.message);
    return;
  }
  const { answer } = turn;
  switch (event.type) {
    case 'started':
      turn.started = true;
      state.conversationId = event.conversation_id;
      answer.article.dataset.messageId = event.assistant_message_id;
      if (turn.cancelRequested && state.ws) state.ws.send(JSON.stringify({ type: 'cancel' }));
      if (event.conversation_created) loadConversations().then(markCurrentConversation);
      break;
    case 'retrieval':
      answer.notes = event.source_count ? [] : ['No passage of the collection matched the question.'];
      answer.schedule();
      break;
    case 'citation':
      answer.citations.set(event.source_number, event);
      answer.schedule();
      break;
    case 'token':
      answer.text += event.text;
      answer.schedule();
      break;
    case 'quota':
      answer.notes.push(
        `${event.scope === 'tenant' ? "Your organisation's" : 'Your'} token quota for this ${event.period} is used up.`,
      );
      answer.schedule();
      break;
    case 'error':
      answer.error = event;
      // Refused before it started: no `done` follows.
      if (!turn.started) endTurn('failed', event);
      break;
    case 'done':
      endTurn(event.status, answer.error);
      loadConversations().catch(() => {});
      break;
    default:
      break;
  }
}

function onClosed(error) {
  if (state.turn) endTurn('interrupted', { message: error.message });
}

function onSubmit(event) {
  event.preventDefault();
  const box = $('message');
  const text = box.value.trim();
  if (!text || state.turn) return;
  box.value = '';
  ask(text);
}

function onComposerKey(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  } else if (event.key === 'Escape' && state.turn) {
    event.preventDefault();
    stop();
  }
}

// -- layout on small screens ------------------------------------------------------------------------

function toggleSidebar() {
  const open = !document.body.classList.contains('sidebar-open');
  document.body.classList.toggle('sidebar-open', open);
  $('menu-toggle').setAttribute('aria-expanded', String(open));
  if (open) $('collection').focus();
}

function closeSidebar() {
  if (!document.body.classList.contains('sidebar-open')) return;
  const inside = $('sidebar').contains(document.activeElement);
  document.body.classList.remove('sidebar-open');
  $('menu-toggle').setAttribute('aria-expanded', 'false');
  if (inside) $('menu-toggle').focus();
}

// -- wiring -----------------------------------------------------------------------------------------

function wire() {
  $('signin-form').addEventListener('submit', onSignIn);
  $('sign-out').addEventListener('click', () => signOut('You are signed out.'));
  $('collection').addEventListener('change', (event) => pickCollection(event.target.value));
  $('collection-form').addEventListener('submit', onCreateCollection);
  $('file-input').addEventListener('change', (event) => {
    uploadFiles([...event.target.files]);
    event.target.value = '';
  });
  const zone = $('dropzone');
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    uploadFiles([...event.dataTransfer.files]);
  });
  // A file dropped beside the zone must not make the browser leave the page to show it.
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => event.preventDefault());
  $('conversations').addEventListener('click', (event) => {
    const button = event.target.closest('button.conversation');
    if (button) openConversation(button.dataset.id);
  });
  $('new-chat').addEventListener('click', newChat);
  $('messages').addEventListener('click', onMessagesClick);
  $('composer').addEventListener('submit', onSubmit);
  $('message').addEventListener('keydown', onComposerKey);
  $('stop').addEventListener('click', stop);
  $('menu-toggle').addEventListener('click', toggleSidebar);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && document.body.classList.contains('sidebar-open')) closeSidebar();
  });
  $('signin-email').focus();
}

wire();
