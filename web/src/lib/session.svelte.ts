// Who is logged in, and the server's facts (/api/info) the menus are built from.
import { api, setCsrf, setUnauthorizedHandler, type Info, type User } from './api';
import { currentLocation, navigate } from './router.svelte';

export const session = $state({
  user: null as User | null,
  info: null as Info | null,
  ready: false,
  /** Set while a request waits for the user to log in again (session expired). */
  reauth: false,
});

let waiters: (() => void)[] = [];

/** Called by the API wrapper on 401: show the login dialog, wait for a new session. */
function needLogin(): Promise<void> {
  if (!session.user) {
    // Not logged in at all: go to the login page and come back afterwards.
    const here = currentLocation();
    if (!here.startsWith('/login') && !here.startsWith('/register')) {
      navigate(`/login?next=${encodeURIComponent(here)}`, { replace: true });
    }
    return new Promise(() => {}); // the page that asked is being left
  }
  session.reauth = true;
  return new Promise((resolve) => waiters.push(resolve));
}
setUnauthorizedHandler(needLogin);

export function loggedIn(user: User, csrfToken: string): void {
  setCsrf(csrfToken);
  session.user = user;
  session.reauth = false;
  const w = waiters;
  waiters = [];
  for (const resolve of w) resolve();
}

export async function boot(): Promise<void> {
  try {
    session.info = await api.get('/api/info');
  } catch {
    /* the pages show their own errors */
  }
  try {
    const me = await api.get('/api/auth/me', { noAuthRetry: true });
    loggedIn(me.user, me.csrf_token);
  } catch {
    session.user = null;
  }
  session.ready = true;
}

export async function logout(): Promise<void> {
  try {
    await api.post('/api/auth/logout', { noAuthRetry: true });
  } finally {
    session.user = null;
    setCsrf('');
    navigate('/login', { replace: true });
  }
}
