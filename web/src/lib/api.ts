// The one place the browser talks to the API.
//
// Types come from `api-types.ts`, generated from the server's OpenAPI schema
// (`npm run gen:api`), never written by hand. This wrapper adds the CSRF header
// to writes, turns `{"detail": {"code", "message"}}` into an `ApiError`, and on
// 401 asks the app to log in again, then retries the request: the page the
// user was on stays mounted, so nothing typed is lost.
import type { components, paths } from './api-types';

export type Schemas = components['schemas'];
export type Item = Schemas['ItemPublic'];
export type Project = Schemas['ProjectPublic'];
export type Case = Schemas['CasePublic'];
export type User = Schemas['UserPublic'];
export type Member = Schemas['MemberPublic'];
export type Info = Schemas['InfoPublic'];
export type Job = Schemas['JobPublic'];
export type UploadReport = Schemas['IngestReportPublic'];
export type ModelVersion = Schemas['ModelVersionPublic'];
export type Prediction = Schemas['PredictionPublic'];
export type Report = Schemas['ReportPublic'];
export type LabelImportReport = Schemas['LabelImportReport'];
export type LabelImportRow = Schemas['LabelImportRow'];
export type ExportCreate = Schemas['ExportCreate'];

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
type Op<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
/** The API paths that accept method M. */
export type PathsFor<M extends Method> = {
  [P in keyof paths]: paths[P][M] extends undefined ? never : P;
}[keyof paths];

type Json<T> = T extends { content: { 'application/json': infer J } } ? J : never;
type Responses<O> = O extends { responses: infer R } ? R : never;
export type ResponseOf<P extends keyof paths, M extends Method> =
  Responses<Op<P, M>> extends infer R
    ? R extends { 200: infer A }
      ? Json<A>
      : R extends { 201: infer B }
        ? Json<B>
        : R extends { 202: infer C }
          ? Json<C>
          : unknown
    : never;
type BodyOf<O> = O extends { requestBody: { content: { 'application/json': infer B } } }
  ? B
  : O extends { requestBody?: { content: { 'application/json': infer B } } }
    ? B
    : never;
type ParamsOf<O, K extends 'path' | 'query'> = O extends { parameters: infer P }
  ? P extends Record<K, infer X>
    ? X
    : P extends Partial<Record<K, infer Y>>
      ? Y
      : never
  : never;

export interface Options<P extends keyof paths, M extends Method> {
  path?: ParamsOf<Op<P, M>, 'path'>;
  query?: ParamsOf<Op<P, M>, 'query'>;
  body?: BodyOf<Op<P, M>>;
  signal?: AbortSignal;
  /** Do not open the login screen on 401 (the login screen's own calls). */
  noAuthRetry?: boolean;
}

export interface ErrorDetail {
  code: string;
  message: string;
  [extra: string]: unknown;
}

/** An error answer of the API; `message` is the server's `detail.message`. */
export class ApiError extends Error {
  status: number;
  code: string;
  detail: ErrorDetail;
  constructor(status: number, detail: ErrorDetail) {
    super(detail.message);
    this.status = status;
    this.code = detail.code;
    this.detail = detail;
  }
}

let csrfToken = '';
export function setCsrf(token: string): void {
  csrfToken = token;
}

export function csrf(): string {
  if (csrfToken) return csrfToken;
  const m = document.cookie.match(/(?:^|;\s*)loupe_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

/** Set by the app: show the login screen and resolve once logged in again. */
let onUnauthorized: (() => Promise<void>) | null = null;
export function setUnauthorizedHandler(fn: () => Promise<void>): void {
  onUnauthorized = fn;
}

export function fillPath(template: string, params: Record<string, unknown> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    if (params[k] === undefined) throw new Error(`missing path parameter ${k} for ${template}`);
    return encodeURIComponent(String(params[k]));
  });
}

export function queryString(query: Record<string, unknown> | undefined): string {
  if (!query) return '';
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function errorFrom(res: Response): Promise<ApiError> {
  let detail: ErrorDetail = { code: 'http_' + res.status, message: `${res.status} ${res.statusText}` };
  try {
    const body = await res.json();
    if (body && typeof body.detail === 'object' && body.detail?.message) detail = body.detail;
    else if (body && typeof body.detail === 'string') detail = { code: detail.code, message: body.detail };
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(res.status, detail);
}

/** Fired on `window` after cases were reopened here: pages reload their cases. */
export const CASES_CHANGED = 'loupe:cases-changed';

/**
 * A label change hit a finished case (409 `case_finished`): ask whether to reopen
 * it and, if so, reopen every case named in the error. True when reopened (the
 * caller retries the request).
 */
async function reopenFinishedCases(err: ApiError): Promise<boolean> {
  const ids = err.detail.case_ids;
  const projectId = err.detail.project_id;
  if (!Array.isArray(ids) || !ids.length || typeof projectId !== 'number') return false;
  const question =
    ids.length === 1
      ? 'This case is finished. Reopen it to change labels?'
      : `These ${ids.length} cases are finished. Reopen them to change labels?`;
  if (!window.confirm(question)) return false;
  for (const id of ids) await send('POST', `/api/projects/${projectId}/cases/${Number(id)}/reopen`);
  window.dispatchEvent(new CustomEvent(CASES_CHANGED, { detail: { projectId, caseIds: ids } }));
  return true;
}

/**
 * Send a request; on a lost session, log in again and retry once; on a finished
 * case, offer to reopen it and retry once.
 */
export async function send(
  method: string,
  url: string,
  init: { body?: BodyInit; json?: unknown; signal?: AbortSignal; noAuthRetry?: boolean } = {},
): Promise<Response> {
  let relogged = false;
  let reopened = false;
  for (;;) {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = csrf();
    let body = init.body;
    if (init.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    let res: Response;
    try {
      res = await fetch(url, { method, headers, body, signal: init.signal, credentials: 'same-origin' });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw new ApiError(0, { code: 'network', message: 'The server cannot be reached. Check your connection and try again.' });
    }
    if (res.ok) return res;
    const err = await errorFrom(res);
    const lostSession = res.status === 401 || err.code === 'csrf_failed';
    if (lostSession && !init.noAuthRetry && onUnauthorized && !relogged) {
      relogged = true;
      await onUnauthorized();
      continue;
    }
    if (err.code === 'case_finished' && !reopened) {
      reopened = true;
      if (await reopenFinishedCases(err)) continue;
    }
    throw err;
  }
}

async function call<P extends keyof paths, M extends Method>(
  method: M,
  path: P,
  opts: Options<P, M> = {},
): Promise<ResponseOf<P, M>> {
  const url =
    fillPath(path as string, opts.path as Record<string, unknown>) +
    queryString(opts.query as Record<string, unknown>);
  const res = await send(method.toUpperCase(), url, {
    json: opts.body,
    signal: opts.signal,
    noAuthRetry: opts.noAuthRetry,
  });
  if (res.status === 204) return undefined as ResponseOf<P, M>;
  return (await res.json()) as ResponseOf<P, M>;
}

/** Typed calls: `api.get('/api/projects/{project_id}', { path: { project_id: 1 } })`. */
export const api = {
  get: <P extends PathsFor<'get'>>(path: P, opts?: Options<P, 'get'>) => call('get', path, opts),
  post: <P extends PathsFor<'post'>>(path: P, opts?: Options<P, 'post'>) => call('post', path, opts),
  put: <P extends PathsFor<'put'>>(path: P, opts?: Options<P, 'put'>) => call('put', path, opts),
  patch: <P extends PathsFor<'patch'>>(path: P, opts?: Options<P, 'patch'>) => call('patch', path, opts),
  delete: <P extends PathsFor<'delete'>>(path: P, opts?: Options<P, 'delete'>) => call('delete', path, opts),
};

/** Human text for any thrown value: the API's message when there is one. */
export function messageOf(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function thumbnailUrl(projectId: number, itemId: number): string {
  return `/api/projects/${projectId}/items/${itemId}/thumbnail`;
}
export function fileUrl(projectId: number, itemId: number): string {
  return `/api/projects/${projectId}/items/${itemId}/file`;
}
/** The DeepZoom descriptor of a 2-D item; its tiles are under `.../tiles/`. */
export function dziUrl(projectId: number, itemId: number): string {
  return `/api/projects/${projectId}/items/${itemId}/dzi`;
}

/** Which items an export holds (the query of the CSV / ZIP links). */
export interface ExportFilter {
  case_id?: number | null;
  /** ISO date (YYYY-MM-DD): labelled on or after. */
  since?: string;
  /** ISO date: labelled on or before (the server includes that day). */
  until?: string;
  labelled_only?: boolean;
}

function filterQuery(f: ExportFilter): Record<string, unknown> {
  return {
    case_id: f.case_id ?? undefined,
    since: f.since || undefined,
    until: f.until || undefined,
    labelled_only: f.labelled_only ? 'true' : undefined,
  };
}

/** The streamed CSV export: a plain link (the browser downloads it, with the session cookie). */
export function exportCsvUrl(projectId: number, f: ExportFilter = {}): string {
  return fillPath('/api/projects/{project_id}/export.csv', { project_id: projectId }) + queryString(filterQuery(f));
}

/** The dataset ZIP streamed while it is built (small sets; big ones go through a job). */
export function exportZipUrl(
  projectId: number,
  f: ExportFilter & { include_images?: boolean; split_seed?: number; split?: number[] } = {},
): string {
  return (
    fillPath('/api/projects/{project_id}/export.zip', { project_id: projectId }) +
    queryString({
      ...filterQuery(f),
      include_images: f.include_images ? 'true' : undefined,
      split_seed: f.split_seed || undefined,
      split: f.split?.join(','),
    })
  );
}

/** The file written by a finished export job. */
export function exportDownloadUrl(jobId: number): string {
  return fillPath('/api/exports/{job_id}/download', { job_id: jobId });
}

/**
 * Import labels from a CSV (multipart): `dryRun` only reports what would change.
 * Errors (a file without a key column, a file too big) come back as `ApiError`.
 */
export async function importLabels(
  projectId: number,
  file: File,
  { dryRun, overwrite }: { dryRun: boolean; overwrite: boolean },
): Promise<LabelImportReport> {
  const form = new FormData();
  form.append('file', file, file.name);
  form.append('dry_run', String(dryRun));
  form.append('overwrite', String(overwrite));
  const res = await send(
    'POST',
    fillPath('/api/projects/{project_id}/labels/import', { project_id: projectId }),
    { body: form },
  );
  return (await res.json()) as LabelImportReport;
}

export const TERMINAL = new Set(['done', 'failed', 'cancelled']);

/**
 * Follow a job's progress (server-sent events): `onJob` gets every `progress`
 * event and the final job at `end`, after which the stream is closed (an open
 * EventSource would reconnect). Returns a function that stops following.
 */
export function followJob(jobId: number, onJob: (job: Job, ended: boolean) => void): () => void {
  const source = new EventSource(`/api/jobs/${jobId}/events`);
  let closed = false;
  const close = () => {
    closed = true;
    source.close();
  };
  source.addEventListener('progress', (e) => {
    if (!closed) onJob(JSON.parse((e as MessageEvent).data) as Job, false);
  });
  source.addEventListener('end', (e) => {
    const data = JSON.parse((e as MessageEvent).data) as Job | null;
    close();
    if (data) onJob(data, true);
    else onJob({ id: jobId, status: 'cancelled', progress: 0, message: 'the job is gone' } as Job, true);
  });
  source.onerror = () => {
    // A dropped connection: ask once for the job's state, and keep following if it
    // still runs (EventSource reconnects by itself).
    if (closed) return;
    void api
      .get('/api/jobs/{job_id}', { path: { job_id: jobId } })
      .then((job) => {
        if (TERMINAL.has(job.status) && !closed) {
          close();
          onJob(job, true);
        }
      })
      .catch(() => undefined);
  };
  return close;
}

/** Ask the user to log in again (for requests not made through `send`, e.g. XHR uploads). */
export function reauthenticate(): Promise<void> {
  return onUnauthorized ? onUnauthorized() : Promise.resolve();
}
