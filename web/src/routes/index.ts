// The pages of the app: one row per URL pattern, with the page component and how
// its props come from the URL. App.svelte shows the row that matches.
import type { Component } from 'svelte';
import ExportPage from './ExportPage.svelte';
import History from './History.svelte';
import Login from './Login.svelte';
import MapPage from './MapPage.svelte';
import Members from './Members.svelte';
import Models from './Models.svelte';
import NewProject from './NewProject.svelte';
import ProjectPage from './ProjectPage.svelte';
import Projects from './Projects.svelte';
import Viewer from './Viewer.svelte';

type Params = Record<string, string>;

interface PageRoute {
  name: string;
  pattern: RegExp;
  // Each row is type-checked by page(); the table itself holds any page.
  page: Component<any>;
  props: (params: Params) => Record<string, unknown>;
  /** Shown without a session (login, registration). */
  public: boolean;
}

function page<P extends Record<string, unknown>>(
  name: string,
  pattern: RegExp,
  component: Component<P>,
  props: (params: Params) => P,
  { public: isPublic = false } = {},
): PageRoute {
  return { name, pattern, page: component, props, public: isPublic };
}

const none = () => ({});
const project = (p: Params) => ({ projectId: Number(p.id) });

export const ROUTES: PageRoute[] = [
  page('login', /^\/login$/, Login, () => ({ mode: 'login' as const }), { public: true }),
  page('register', /^\/register$/, Login, () => ({ mode: 'register' as const }), { public: true }),
  page('projects', /^\/$/, Projects, none),
  page('history', /^\/history$/, History, none),
  page('new-project', /^\/projects\/new$/, NewProject, none),
  page('members', /^\/projects\/(?<id>\d+)\/members$/, Members, project),
  page('models', /^\/projects\/(?<id>\d+)\/models$/, Models, project),
  page('map', /^\/projects\/(?<id>\d+)\/map$/, MapPage, project),
  page('export', /^\/projects\/(?<id>\d+)\/export$/, ExportPage, project),
  page('viewer', /^\/projects\/(?<id>\d+)\/items\/(?<item>\d+)\/view$/, Viewer, (p) => ({
    projectId: Number(p.id),
    itemId: Number(p.item),
  })),
  page('project', /^\/projects\/(?<id>\d+)$/, ProjectPage, project),
];

export interface PageMatch {
  name: string;
  page: PageRoute['page'];
  props: Record<string, unknown>;
  public: boolean;
  /** Changes when another page or another object (project, item) is shown. */
  key: string;
}

/** The page for a path, or null when none matches. */
export function matchPage(path: string): PageMatch | null {
  for (const r of ROUTES) {
    const m = path.match(r.pattern);
    if (!m) continue;
    const params = { ...(m.groups ?? {}) };
    return { name: r.name, page: r.page, props: r.props(params), public: r.public, key: `${r.name} ${JSON.stringify(params)}` };
  }
  return null;
}
