// A small history-API router: the server answers every non-/api path with
// index.html, so URLs like /projects/3?status=unlabelled survive a reload.

/** Where the browser is; routes/index.ts says which page that is. */
export interface Route {
  path: string;
  query: URLSearchParams;
}

function parse(): Route {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

export const router = $state({ route: parse() });

export function navigate(to: string, { replace = false } = {}): void {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState({}, '', to);
  else history.pushState({}, '', to);
  router.route = parse();
  window.scrollTo(0, 0);
}

/** Change the query string of the current page without a new history entry. */
export function setQuery(values: Record<string, string | number | null | undefined>): void {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(values)) {
    if (v === null || v === undefined || v === '') q.delete(k);
    else q.set(k, String(v));
  }
  const s = q.toString();
  history.replaceState({}, '', location.pathname + (s ? `?${s}` : ''));
  router.route = parse();
}

export function currentLocation(): string {
  return location.pathname + location.search;
}

window.addEventListener('popstate', () => {
  router.route = parse();
});

/** Let plain <a href="/..."> links route in the page (ctrl/middle-click still open tabs). */
export function interceptLinks(e: MouseEvent): void {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (!href || !href.startsWith('/') || href.startsWith('/api/')) return;
  e.preventDefault();
  navigate(href);
}
