// The labels of the item open in the segmentation editor: points, scribbles and
// the label mask, with a local undo stack and debounced auto-saving. Saves go
// one at a time (each answer carries the next version for optimistic locking);
// a 409 (someone saved meanwhile) reloads the server's version number and
// extracted points and retries once with this user's human labels.
// Brush edits are sent as the box around what changed since the last save (PUT
// .../mask/region) while it is under half the image: on a big slide a stroke is a
// few kilobytes instead of the whole mask. Undoing a stroke costs what it changed too:
// its undo step keeps the old bytes of the 256 x 256 tiles it wrote into (LabelMask's
// copy-on-write record), puts them back, and saves that box by the same region route.
import { ApiError, messageOf } from '../../lib/api';
import { decodeMask, encodeMask, LabelMask, union, type MaskUndo, type Rect } from './mask';
import {
  acceptMask,
  extractPoints,
  getAnnotation,
  maskUrl,
  putAnnotation,
  putMask,
  putMaskRegion,
  type ExtractOptions,
  type SegAnnotation,
  type SegPoint,
  type SegScribble,
} from './segment-api';

/** How long after the last edit the labels are saved. */
const SAVE_DELAY_MS = 600;
const UNDO_DEPTH = 30;

interface Snapshot {
  points: SegPoint[];
  scribbles: SegScribble[];
  /** The whole mask before a whole-mask replacement (accepting the prediction). */
  mask: Uint8Array | null;
  /** What a brush/eraser stroke changed in the mask (its tiles' old bytes). */
  maskEdit: MaskUndo | null;
}

export type SaveState = 'idle' | 'pending' | 'saving' | 'saved' | 'error';

export class SegSession {
  readonly projectId: number;
  readonly itemId: number;
  width = $state(0);
  height = $state(0);
  version = $state(0);
  points = $state<SegPoint[]>([]);
  scribbles = $state<SegScribble[]>([]);
  hasMask = $state(false);
  origin = $state<SegAnnotation['origin']>(null);
  /** Bumped whenever `mask` was replaced or restored, so the view repaints all of it
   * (brush strokes repaint their own box and do not bump it). */
  maskRev = $state(0);
  mask: LabelMask | null = null;
  saveState = $state<SaveState>('idle');
  error = $state('');
  undoDepth = $state(0);
  /** Called after each successful save of labels or mask (e.g. to start live training). */
  onsaved: () => void = () => {};
  /** Called when an undo changed the pixels of `rect` alone, for the view to repaint them
   * (as it does a stroke's box; a whole restore bumps `maskRev` instead). */
  onmaskrestored: (rect: Rect) => void = () => {};

  private undoStack: Snapshot[] = [];
  /** The undo step of the brush/eraser stroke in progress (beginStroke .. endStroke). */
  private stroke: Snapshot | null = null;
  private labelsDirty = false;
  /** The box of the mask edits not yet saved; `all` after an undo restored a snapshot. */
  private maskDirty: Rect | 'all' | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private chain: Promise<void> = Promise.resolve();

  constructor(projectId: number, itemId: number) {
    this.projectId = projectId;
    this.itemId = itemId;
  }

  /** Load the annotation (and the mask when there is one); `fallback` is the image size if the server gives none. */
  async load(fallback: { width: number; height: number }): Promise<void> {
    const a = await getAnnotation(this.projectId, this.itemId);
    this.apply(a);
    if (!this.width || !this.height) {
      this.width = fallback.width;
      this.height = fallback.height;
    }
    await this.reloadMask();
  }

  private apply(a: SegAnnotation): void {
    this.version = a.version;
    if (a.width && a.height) {
      this.width = a.width;
      this.height = a.height;
    }
    this.points = a.points ?? [];
    this.scribbles = a.scribbles ?? [];
    this.hasMask = a.has_mask;
    this.origin = a.origin;
  }

  async reloadMask(): Promise<void> {
    if (!this.hasMask) {
      this.mask = null;
      this.maskRev++;
      return;
    }
    const res = await fetch(maskUrl(this.projectId, this.itemId, this.version), { credentials: 'same-origin' });
    if (!res.ok) throw new Error(`the mask could not be loaded (${res.status})`);
    this.mask = await decodeMask(await res.blob(), this.width, this.height);
    this.maskRev++;
  }

  /**
   * Remember the current labels before a change (the local undo stack); `withMask` keeps
   * a copy of the whole mask too, for whole-mask replacements only (a stroke keeps its
   * tiles instead: beginStroke).
   */
  checkpoint(withMask = false): void {
    this.push(withMask);
  }

  private push(withMask: boolean): Snapshot {
    const s: Snapshot = {
      points: this.points.map((p) => ({ ...p })),
      scribbles: this.scribbles.map((s) => ({ ...s, path: s.path.map((q) => [q[0], q[1]] as [number, number]) })),
      mask: withMask && this.mask ? this.mask.snapshot() : null,
      maskEdit: null,
    };
    this.undoStack.push(s);
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
    this.undoDepth = this.undoStack.length;
    return s;
  }

  /** A brush/eraser stroke starts: one undo step, recording the mask tiles it changes. */
  beginStroke(): void {
    this.endStroke(null); // (one left open by a lost pointer-up)
    this.stroke = this.push(false);
    this.mask?.beginUndo();
  }

  /** The stroke ended, having changed the pixels in `changed` (repainted by the view). */
  endStroke(changed: Rect | null): void {
    const s = this.stroke;
    this.stroke = null;
    if (s) s.maskEdit = this.mask?.endUndo() ?? null;
    if (changed) this.maskEdited(changed);
  }

  undo(): boolean {
    this.endStroke(null);
    const s = this.undoStack.pop();
    this.undoDepth = this.undoStack.length;
    if (!s) return false;
    this.points = s.points;
    this.scribbles = s.scribbles;
    this.labelsDirty = true;
    if (s.mask && this.mask) {
      this.mask.data = s.mask;
      this.maskRev++;
      this.markMaskDirty('all'); // the snapshot may differ anywhere
    } else if (s.maskEdit && this.mask) {
      // A stroke's tiles: only its box changes back, and is saved like a stroke's box
      // (a stroke on a fresh mask goes back to zeros there: the server keeps an
      // all-background mask, which is what the editor shows too).
      const rect = this.mask.restore(s.maskEdit);
      this.markMaskDirty(rect);
      this.onmaskrestored(rect);
    }
    this.schedule();
    return true;
  }

  addPoint(p: Omit<SegPoint, 'source'>): void {
    this.checkpoint();
    this.points = [...this.points, { ...p, source: 'human' }];
    this.changed();
  }

  addScribble(s: SegScribble): void {
    if (s.path.length < 1) return;
    this.checkpoint();
    this.scribbles = [...this.scribbles, s];
    this.changed();
  }

  /** Remove the points and scribbles within `radius` px of (x, y); true when some were. */
  eraseAt(x: number, y: number, radius: number): boolean {
    const near = (px: number, py: number) => Math.hypot(px - x, py - y) <= radius;
    const points = this.points.filter((p) => !near(p.x, p.y));
    const scribbles = this.scribbles.filter((s) => !s.path.some(([px, py]) => near(px, py)));
    if (points.length === this.points.length && scribbles.length === this.scribbles.length) return false;
    this.points = points;
    this.scribbles = scribbles;
    this.changed();
    return true;
  }

  /** The mask to paint into, made empty when the item has none yet. */
  editableMask(): LabelMask {
    if (!this.mask) {
      this.mask = new LabelMask(this.width, this.height);
      // Its zeros are what the stroke's undo goes back to (all-zero tiles cost nothing).
      if (this.stroke) this.mask.beginUndo();
    }
    return this.mask;
  }

  /** The brush or eraser changed the pixels in `rect` (the view has repainted them). */
  maskEdited(rect: Rect): void {
    this.markMaskDirty(rect);
    this.schedule();
  }

  private markMaskDirty(rect: Rect | 'all' | null): void {
    if (!rect || this.maskDirty === 'all') return;
    this.maskDirty = rect === 'all' ? 'all' : union(this.maskDirty, rect);
  }

  private changed(): void {
    this.labelsDirty = true;
    this.schedule();
  }

  private schedule(): void {
    this.saveState = 'pending';
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), SAVE_DELAY_MS);
  }

  /** Save what changed now (also before leaving the page or running a server action). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.chain = this.chain.then(() => this.save());
    return this.chain;
  }

  private async save(): Promise<void> {
    if (!this.labelsDirty && !this.maskDirty) {
      if (this.saveState === 'pending') this.saveState = 'saved';
      return;
    }
    this.saveState = 'saving';
    this.error = '';
    try {
      if (this.labelsDirty) {
        this.labelsDirty = false;
        await this.retryOnConflict(() =>
          putAnnotation(this.projectId, this.itemId, { version: this.version, points: this.points, scribbles: this.scribbles }),
        );
        this.onsaved();
      }
      if (this.maskDirty && this.mask) {
        const dirty = this.maskDirty;
        this.maskDirty = null;
        try {
          await this.saveMask(this.mask, dirty);
        } catch (e) {
          this.markMaskDirty(dirty); // sent again with the next save
          throw e;
        }
        this.origin = 'human';
        this.onsaved();
      }
      this.saveState = this.timer ? 'pending' : 'saved';
    } catch (e) {
      this.saveState = 'error';
      this.error = `Not saved: ${messageOf(e)}`;
    }
  }

  /**
   * Send the edited box alone when it is under half the image, else the whole mask.
   * The server pastes a region into its mask, or into zeros when it has none: the local
   * mask starts as zeros too (editableMask), so both agree outside the box.
   */
  private async saveMask(mask: LabelMask, dirty: Rect | 'all'): Promise<void> {
    if (dirty !== 'all' && dirty.width * dirty.height * 2 < mask.width * mask.height) {
      const png = await encodeMask(mask.crop(dirty));
      await this.retryOnConflict(() => putMaskRegion(this.projectId, this.itemId, this.version, dirty, png));
      return;
    }
    const png = await encodeMask(mask);
    await this.retryOnConflict(() => putMask(this.projectId, this.itemId, this.version, png));
  }

  private async retryOnConflict(put: () => Promise<SegAnnotation>): Promise<void> {
    let a: SegAnnotation;
    try {
      a = await put();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 409)) throw e;
      const fresh = await getAnnotation(this.projectId, this.itemId);
      this.version = fresh.version;
      a = await put();
    }
    this.version = a.version;
    this.hasMask = a.has_mask;
    this.origin = a.origin;
    // The server's copy of the points: extracted ones may have been replaced meanwhile.
    if (!this.labelsDirty) {
      this.points = a.points ?? this.points;
      this.scribbles = a.scribbles ?? this.scribbles;
    }
  }

  async extract(opts: ExtractOptions = {}): Promise<number> {
    await this.flush();
    this.checkpoint();
    const a = await extractPoints(this.projectId, this.itemId, opts);
    this.apply(a);
    return a.points.filter((p) => p.source === 'extracted').length;
  }

  async accept(threshold: number): Promise<void> {
    await this.flush();
    this.checkpoint(true);
    const a = await acceptMask(this.projectId, this.itemId, threshold);
    this.apply(a);
    await this.reloadMask();
  }

  close(): void {
    if (this.timer) void this.flush();
  }
}
