/**
 * The pages mail links open (docs/email.md): /reset, /invitation and /verify-email, each with ?token=...
 * Plain ES module, no build step; talks only to the gateway's public API and writes text nodes only.
 *
 * The token is read once and removed from the address bar (so it is not left in the history or shown
 * over a shoulder); the pages send no referrer.
 */

const $ = (id) => document.getElementById(id);

function takeToken() {
  const params = new URLSearchParams(window.location.search);
  const token = params.get('token') || '';
  if (token) window.history.replaceState(null, '', window.location.pathname);
  return token;
}

/** POST ``body`` as JSON to ``path``; resolves to the parsed answer (or null), rejects with the
 * gateway's error message. */
async function post(path, body, headers = {}) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
      body: JSON.stringify(body),
      credentials: 'omit',
    });
  } catch {
    throw new Error('The server cannot be reached. Check your connection and try again.');
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : null;
    const failure = new Error(error ? error.message : `The server answered ${response.status}.`);
    failure.code = error ? error.code : '';
    throw failure;
  }
  return data;
}

function say(id, text) {
  $(id).textContent = text;
}

const NO_TOKEN = 'This link is incomplete. Open the link from your mail again, all of it.';

/** A form that sets a password (twice, compared here) and posts it with the token. */
function passwordForm(token, send, done) {
  const form = $('form');
  if (!token) {
    say('error', NO_TOKEN);
    $('submit').disabled = true;
    return;
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    say('error', '');
    const password = $('password').value;
    if (!password) {
      say('error', 'Enter a password.');
      $('password').focus();
      return;
    }
    if (password !== $('confirm').value) {
      say('error', 'The two passwords differ. Type the same password twice.');
      $('confirm').focus();
      return;
    }
    $('submit').disabled = true;
    try {
      const answer = await send(password);
      form.hidden = true;
      await done(answer);
      $('done').hidden = false;
      $('done').focus();
    } catch (error) {
      say('error', error.message);
      $('password').focus();
    } finally {
      $('submit').disabled = false;
    }
  });
}

function resetPage() {
  const token = takeToken();
  passwordForm(
    token,
    (password) => post('/v1/auth/password-reset/confirm', { token, new_password: password }),
    async () => {},
  );
}

function invitationPage() {
  const token = takeToken();
  passwordForm(
    token,
    (password) => {
      const name = $('display-name').value.trim();
      const body = { token, password };
      if (name) body.display_name = name;
      return post('/v1/auth/invitations/accept', body);
    },
    async (answer) => {
      let text = `Your account ${answer.user.email} is ready and your address is confirmed.`;
      try {
        const me = await fetch('/v1/auth/me', {
          headers: { Authorization: `Bearer ${answer.access_token}`, Accept: 'application/json' },
          credentials: 'omit',
        });
        if (me.ok) {
          const who = await me.json();
          text += ` Sign in with this address and the password you chose; organisation: ${who.tenant.name}.`;
        }
      } catch {
        // The account is ready all the same; only the organisation's name is missing from the text.
      }
      say('done-text', text);
    },
  );
}

async function verifyPage() {
  const token = takeToken();
  if (!token) {
    say('status', '');
    say('error', NO_TOKEN);
    return;
  }
  try {
    const answer = await post('/v1/auth/email/verify', { token });
    say('status', `Thank you: ${answer.email} is confirmed.`);
    $('status').className = 'success';
    $('continue').hidden = false;
  } catch (error) {
    say('status', 'Your address could not be confirmed.');
    say('error', error.message);
  }
}

const PAGES = { reset: resetPage, invitation: invitationPage, 'verify-email': verifyPage };
const page = PAGES[document.body.dataset.page];
if (page) page();
