// The curation grid's state: the loaded items (keyset pages of 200), the
// focused tile, the selection, labelling with optimistic locking, and undo / redo
// (on the server: a whole request is one step, whatever the filter shows now).
import { api, ApiError, messageOf, type Item } from './api';
import type { LabelValue } from './schema';
import { toast } from './toast.svelte';

export const PAGE = 200;

export interface Filter {
  case_id?: number;
  status?: string;
  label?: string;
  flagged?: boolean;
  predicted?: string;
  search?: string;
  flag_reason?: string;
  origin?: string;
  min_confidence?: number;
  max_confidence?: number;
  /** id (default, keyset pages) | confidence | -confidence | uncertainty | -uncertainty (offset pages) */
  sort?: string;
}

/** The sorts the item list offers, in the order the filters show them. */
export const SORTS: { value: string; text: string }[] = [
  { value: '', text: 'Upload order' },
  { value: 'confidence', text: 'Least confident first' },
  { value: '-confidence', text: 'Most confident first' },
  { value: '-uncertainty', text: 'Most uncertain first' },
  { value: 'uncertainty', text: 'Least uncertain first' },
];

/** The draft filters and the sort kept in the URL's query (FiltersNav writes them). */
export function draftFilter(q: URLSearchParams): Filter {
  const num = (k: string) => {
    const v = q.get(k);
    return v === null || v === '' || Number.isNaN(Number(v)) ? undefined : Number(v);
  };
  return {
    predicted: q.get('predicted') ?? undefined,
    flag_reason: q.get('reason') ?? undefined,
    origin: q.get('origin') ?? undefined,
    min_confidence: num('minconf'),
    max_confidence: num('maxconf'),
    sort: q.get('sort') ?? undefined,
  };
}

/** Whether a filter pages by offset (a sort other than the id order). */
function sorted(filter: Filter): boolean {
  return !!filter.sort && filter.sort !== 'id';
}

type Annotation = NonNullable<Item['annotation']>;

/** Bulk accept of more items than this asks for confirmation first. */
export const CONFIRM_ACCEPT_OVER = 50;

/** How the toast names the change an undo / redo reverted (its audit source). */
const CHANGE_NAMES: Record<string, string> = {
  api: 'label',
  batch: 'batch label',
  accept: 'accept drafts',
};

function same(a: Annotation | null, b: LabelValue | null): boolean {
  if (!a || !b) return !a && !b;
  if (a.kind !== b.kind) return false;
  if (b.kind === 'class') return a.label === b.label;
  if (b.kind === 'scores') return JSON.stringify(a.scores) === JSON.stringify(b.scores);
  return true;
}

/** Most ids an `ids` selection loads (the by-ids endpoint's limit). */
export const MAX_IDS = 5000;

/**
 * A list of item ids shown instead of the filtered list: a queue pull, similar
 * items, a click or a lasso on the map. `label` says where it came from.
 */
export interface IdsSelection {
  ids: number[];
  label: string;
}

/** The map page hands a selection to the project page through sessionStorage. */
export function handOffIds(projectId: number, sel: IdsSelection): void {
  sessionStorage.setItem(`loupe.ids.${projectId}`, JSON.stringify(sel));
}

export function takeHandedIds(projectId: number): IdsSelection | null {
  const raw = sessionStorage.getItem(`loupe.ids.${projectId}`);
  if (!raw) return null;
  try {
    const sel = JSON.parse(raw) as IdsSelection;
    return Array.isArray(sel.ids) ? { ids: sel.ids.map(Number), label: String(sel.label ?? '') } : null;
  } catch {
    return null;
  }
}

export class Grid {
  projectId: number;
  /** Set while the grid shows an ids selection rather than the filtered list. */
  selection: IdsSelection | null = $state(null);
  items: Item[] = $state([]);
  count: number | null = $state(null);
  nextAfter: number | null = $state(null);
  /** Sorted lists page by offset: whether the last page was full. */
  moreSorted = $state(false);
  loading = $state(false);
  error = $state('');
  focus = $state(0);
  anchor = 0;
  selected: Set<number> = $state(new Set());
  filter: Filter = {};
  userId = 0;
  private generation = 0;

  constructor(projectId: number) {
    this.projectId = projectId;
  }

  get focused(): Item | undefined {
    return this.items[this.focus];
  }

  indexOf(id: number): number {
    return this.items.findIndex((i) => i.id === id);
  }

  /** Show exactly these items, in this order (the filters are left aside until `load`). */
  async loadIds(ids: number[], label: string): Promise<void> {
    const want = [...new Set(ids)].slice(0, MAX_IDS);
    this.selection = { ids: want, label };
    const gen = ++this.generation;
    this.loading = true;
    this.error = '';
    try {
      const data = await this.fetchIds(want);
      if (gen !== this.generation) return;
      this.items = data;
      this.count = data.length;
      this.nextAfter = null;
      this.moreSorted = false;
      this.focus = 0;
      this.anchor = 0;
      this.selected = new Set();
    } catch (e) {
      if (gen === this.generation) this.error = messageOf(e);
    } finally {
      if (gen === this.generation) this.loading = false;
    }
  }

  /** The neighbours of these items (cosine on the features), the queries first. */
  async loadSimilar(ids: number[], what: string, k = 100): Promise<void> {
    try {
      const res = await api.post('/api/projects/{project_id}/similar', {
        path: { project_id: this.projectId },
        body: { item_ids: ids, k, combine: 'mean' },
      });
      await this.loadIds([...ids, ...res.items.map((i) => i.id)], `Similar to ${what}`);
    } catch (e) {
      toast(messageOf(e), 'error');
    }
  }

  private async fetchIds(ids: number[]): Promise<Item[]> {
    if (!ids.length) return [];
    const res = await api.post('/api/projects/{project_id}/items/by-ids', {
      path: { project_id: this.projectId },
      body: { item_ids: ids },
    });
    return res.data;
  }

  async load(filter: Filter): Promise<void> {
    this.filter = filter;
    this.selection = null;
    const gen = ++this.generation;
    this.loading = true;
    this.error = '';
    try {
      const page = await api.get('/api/projects/{project_id}/items', {
        path: { project_id: this.projectId },
        // the first screen's thumbnails come inline: one request instead of one per tile
        query: { ...filter, limit: PAGE, count: true, inline_thumbnails: true },
      });
      if (gen !== this.generation) return;
      this.items = page.data;
      this.count = page.count ?? null;
      this.nextAfter = page.next_after_id ?? null;
      this.moreSorted = sorted(filter) && page.data.length === PAGE;
      this.focus = Math.min(this.focus, Math.max(0, this.items.length - 1));
      this.selected = new Set();
    } catch (e) {
      if (gen === this.generation) this.error = messageOf(e);
    } finally {
      if (gen === this.generation) this.loading = false;
    }
  }

  /** The next keyset page (scrolling near the end). */
  async loadMore(): Promise<void> {
    if (this.selection) return; // an ids selection is loaded whole
    const bySort = sorted(this.filter);
    if (this.loading || (bySort ? !this.moreSorted : this.nextAfter === null)) return;
    const gen = this.generation;
    this.loading = true;
    try {
      const at = bySort ? { offset: this.items.length } : { after_id: this.nextAfter };
      const page = await api.get('/api/projects/{project_id}/items', {
        path: { project_id: this.projectId },
        query: { ...this.filter, limit: PAGE, ...at, count: false },
      });
      if (gen !== this.generation) return;
      const known = new Set(this.items.map((i) => i.id));
      this.items.push(...page.data.filter((i) => !known.has(i.id)));
      this.nextAfter = page.next_after_id ?? null;
      this.moreSorted = bySort && page.data.length === PAGE;
    } catch (e) {
      this.error = messageOf(e);
    } finally {
      if (gen === this.generation) this.loading = false;
    }
  }

  /** Items created after the last one loaded (uploads finishing), when the list is complete. */
  async loadNewer(): Promise<void> {
    // a sorted list has no "after the last id": new items show on the next reload
    if (this.selection || this.loading || this.nextAfter !== null || sorted(this.filter)) return;
    const gen = this.generation;
    const last = this.items.length ? this.items[this.items.length - 1].id : 0;
    try {
      const page = await api.get('/api/projects/{project_id}/items', {
        path: { project_id: this.projectId },
        query: { ...this.filter, limit: PAGE, after_id: last, count: true },
      });
      if (gen !== this.generation) return;
      const known = new Set(this.items.map((i) => i.id));
      this.items.push(...page.data.filter((i) => !known.has(i.id)));
      this.nextAfter = page.next_after_id ?? null;
      if (this.count !== null) this.count = Math.max(this.count, this.items.length);
    } catch {
      /* the next refresh tries again */
    }
  }

  replace(item: Item): void {
    const i = this.indexOf(item.id);
    if (i >= 0) this.items[i] = item;
  }

  async refreshItem(id: number): Promise<Item | null> {
    try {
      const item = await api.get('/api/projects/{project_id}/items/{item_id}', {
        path: { project_id: this.projectId, item_id: id },
      });
      this.replace(item);
      return item;
    } catch {
      return null;
    }
  }

  // --- focus and selection ---

  moveTo(index: number, { extend = false } = {}): void {
    if (!this.items.length) return;
    const i = Math.max(0, Math.min(this.items.length - 1, index));
    this.focus = i;
    if (extend) this.selectRange(this.anchor, i);
    else {
      this.anchor = i;
      if (this.selected.size) this.selected = new Set();
    }
    if (i >= this.items.length - 40) void this.loadMore();
  }

  click(index: number, e: { shiftKey: boolean; ctrlKey: boolean; metaKey: boolean }): void {
    if (e.shiftKey) {
      this.focus = index;
      this.selectRange(this.anchor, index, e.ctrlKey || e.metaKey);
    } else if (e.ctrlKey || e.metaKey) {
      const id = this.items[index].id;
      const s = new Set(this.selected);
      if (!s.size && this.items[this.focus] && this.focus !== index) s.add(this.items[this.focus].id);
      if (s.has(id)) s.delete(id);
      else s.add(id);
      this.selected = s;
      this.focus = index;
      this.anchor = index;
    } else {
      this.focus = index;
      this.anchor = index;
      this.selected = new Set();
    }
  }

  selectRange(a: number, b: number, add = false): void {
    const [lo, hi] = a < b ? [a, b] : [b, a];
    const s = add ? new Set(this.selected) : new Set<number>();
    for (let i = lo; i <= hi; i++) s.add(this.items[i].id);
    this.selected = s;
  }

  selectIndices(indices: number[], add = false): void {
    const s = add ? new Set(this.selected) : new Set<number>();
    for (const i of indices) if (this.items[i]) s.add(this.items[i].id);
    this.selected = s;
  }

  selectAll(): void {
    this.selected = new Set(this.items.map((i) => i.id));
  }

  clearSelection(): void {
    this.selected = new Set();
  }

  /** What a key applies to: the selection, or else the focused tile. */
  targets(): Item[] {
    if (this.selected.size) return this.items.filter((i) => this.selected.has(i.id));
    const f = this.focused;
    return f ? [f] : [];
  }

  // --- labelling ---

  private chain: Promise<unknown> = Promise.resolve();

  /**
   * Label one item (PUT with its version) or many (the batch endpoint). Calls are
   * queued: keys pressed faster than the server answers apply in order, each
   * with the version the previous one produced.
   */
  apply(targets: Item[], value: LabelValue | null, _what: string): Promise<boolean> {
    const ids = targets.map((t) => t.id);
    const run = this.chain.then(() => this.applyNow(ids, value));
    this.chain = run.catch(() => false);
    return run;
  }

  private async applyNow(ids: number[], value: LabelValue | null): Promise<boolean> {
    const byId = new Map(this.items.map((i) => [i.id, i] as const));
    const targets = ids.map((id) => byId.get(id)).filter((i): i is Item => !!i);
    const todo = targets.filter((t) => !same(t.annotation ?? null, value));
    if (!todo.length) return true;
    try {
      if (todo.length === 1 && value) {
        const t = todo[0];
        const item = await api.put('/api/projects/{project_id}/items/{item_id}/label', {
          path: { project_id: this.projectId, item_id: t.id },
          body: { ...value, version: t.version },
        });
        this.replace(item);
      } else {
        await this.batch(todo, value);
      }
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.code === 'stale_version') {
        for (const t of todo) await this.refreshItem(t.id);
        toast(`${e.message}. The tile now shows the current label.`, 'error');
      } else toast(messageOf(e), 'error');
      return false;
    }
  }

  private async batch(todo: Item[], value: LabelValue | null): Promise<void> {
    const versions: Record<string, number> = {};
    for (const t of todo) versions[t.id] = t.version;
    const res = await api.post('/api/projects/{project_id}/labels/batch', {
      path: { project_id: this.projectId },
      body: {
        item_ids: todo.map((t) => t.id),
        kind: value ? value.kind : null,
        label: value && value.kind === 'class' ? value.label : null,
        scores: value && value.kind === 'scores' ? value.scores : null,
        versions,
      },
    });
    const now = new Date().toISOString();
    for (const t of todo) {
      const v = res.versions[String(t.id)];
      if (v === undefined) continue;
      const i = this.indexOf(t.id);
      if (i < 0) continue;
      this.items[i] = {
        ...this.items[i],
        version: v,
        annotation: value
          ? {
              kind: value.kind,
              label: value.kind === 'class' ? value.label : null,
              scores: value.kind === 'scores' ? value.scores : null,
              data: null,
              note: null,
              origin: 'human',
              version: v,
              updated_by: this.userId,
              updated_at: now,
            }
          : null,
      };
    }
    if (res.conflicts.length) {
      for (const c of res.conflicts) await this.refreshItem(c.item_id);
      toast(
        `${res.conflicts.length} item(s) were changed by someone else meanwhile and kept their label: ${res.conflicts[0].message}`,
        'error',
      );
    }
  }

  /**
   * Accept the model's drafts of these items as their human labels (items without a
   * draft are left alone). One item: POST .../accept with its version; more: the
   * batch endpoint (asking first when there are many). Undo (Z) undoes it in one step.
   */
  accept(targets: Item[]): Promise<number> {
    const ids = targets.filter((t) => t.draft).map((t) => t.id);
    if (
      ids.length > CONFIRM_ACCEPT_OVER &&
      !confirm(`Accept the model's drafts of ${ids.length} items as their labels?`)
    )
      return Promise.resolve(0);
    const run = this.chain.then(() => this.acceptNow(ids));
    this.chain = run.catch(() => 0);
    return run;
  }

  private async acceptNow(ids: number[]): Promise<number> {
    const byId = new Map(this.items.map((i) => [i.id, i] as const));
    const todo = ids.map((id) => byId.get(id)).filter((i): i is Item => !!i && !!i.draft);
    if (!todo.length) {
      toast('No model draft to accept here yet: train a model first.', 'error');
      return 0;
    }
    try {
      let applied = todo.length;
      if (todo.length === 1) {
        const t = todo[0];
        const item = await api.post('/api/projects/{project_id}/items/{item_id}/accept', {
          path: { project_id: this.projectId, item_id: t.id },
          body: { version: t.version, model_version_id: t.draft!.model_version_id },
        });
        this.replace(item);
      } else {
        const versions: Record<string, number> = {};
        for (const t of todo) versions[t.id] = t.version;
        const res = await api.post('/api/projects/{project_id}/predictions/accept', {
          path: { project_id: this.projectId },
          body: { item_ids: todo.map((t) => t.id), versions },
        });
        applied = res.applied.length;
        const changed = todo.filter((t) => res.versions[String(t.id)] !== undefined).map((t) => t.id);
        const conflicted = res.conflicts.map((c) => c.item_id);
        await this.refreshMany([...changed, ...conflicted]);
        if (res.conflicts.length) {
          toast(
            `${res.conflicts.length} item(s) kept their label: ${res.conflicts[0].message}`,
            'error',
          );
        }
      }
      return applied;
    } catch (e) {
      if (e instanceof ApiError && e.code === 'stale_version') {
        for (const t of todo) await this.refreshItem(t.id);
        toast(`${e.message}. The tile now shows the current label.`, 'error');
      } else toast(messageOf(e), 'error');
      return 0;
    }
  }

  /** Re-read these items (after a batch change done on the server). */
  async refreshMany(ids: number[]): Promise<void> {
    const want = new Set(ids);
    if (!want.size) return;
    // The listing is cheaper than one request per item: re-read the pages that hold them.
    const loaded = this.items.filter((i) => want.has(i.id));
    if (loaded.length <= 5) {
      await Promise.all(loaded.map((i) => this.refreshItem(i.id)));
      return;
    }
    await this.reloadLoaded();
  }

  /**
   * Re-read everything loaded (e.g. new drafts after a training) and keep the
   * focus and the selection where they are.
   */
  async reloadLoaded(): Promise<void> {
    const gen = this.generation;
    if (this.selection) {
      try {
        const data = await this.fetchIds(this.selection.ids);
        if (gen !== this.generation) return;
        const byId = new Map(data.map((i) => [i.id, i] as const));
        this.items = this.items.map((i) => byId.get(i.id) ?? i);
      } catch (e) {
        this.error = messageOf(e);
      }
      return;
    }
    const want = Math.min(1000, Math.max(PAGE, this.items.length));
    try {
      const page = await api.get('/api/projects/{project_id}/items', {
        path: { project_id: this.projectId },
        query: { ...this.filter, limit: want, count: true },
      });
      if (gen !== this.generation) return;
      const focusedId = this.focused?.id;
      this.items = page.data;
      this.count = page.count ?? null;
      this.nextAfter = page.next_after_id ?? null;
      this.moreSorted = sorted(this.filter) && page.data.length === want;
      const i = focusedId === undefined ? -1 : this.indexOf(focusedId);
      this.focus = i >= 0 ? i : Math.min(this.focus, Math.max(0, this.items.length - 1));
      const present = new Set(this.items.map((x) => x.id));
      this.selected = new Set([...this.selected].filter((id) => present.has(id)));
    } catch (e) {
      this.error = messageOf(e);
    }
  }

  /** Undo my latest change in this project on the server (Z). */
  undo(): Promise<void> {
    return this.revert('undo');
  }

  /** Re-apply the change I undid last (Shift+Z). */
  redo(): Promise<void> {
    return this.revert('redo');
  }

  private revert(action: 'undo' | 'redo'): Promise<void> {
    const run = this.chain.then(() => this.revertNow(action));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async revertNow(action: 'undo' | 'redo'): Promise<void> {
    const params = { path: { project_id: this.projectId }, body: {} };
    try {
      const res =
        action === 'undo'
          ? await api.post('/api/projects/{project_id}/undo', params)
          : await api.post('/api/projects/{project_id}/redo', params);
      // The items may be hidden by the filter, or match it again: re-read the list.
      if (res.applied.length || res.conflicts.length) await this.reloadLoaded();
      const n = res.applied.length;
      const what = CHANGE_NAMES[res.what] ?? res.what;
      toast(`${action === 'undo' ? 'Undid' : 'Redid'}: ${n} label${n === 1 ? '' : 's'} (${what})`, 'success');
      if (res.conflicts.length) {
        toast(
          `${res.conflicts.length} item(s) were changed since and kept their label: ${res.conflicts[0].message}`,
          'error',
        );
      }
    } catch (e) {
      if (e instanceof ApiError && e.code === 'conflict') toast(`Nothing to ${action}`);
      else toast(messageOf(e), 'error');
    }
  }
}
