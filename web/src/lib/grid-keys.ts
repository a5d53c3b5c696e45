// The keyboard of the curation grid: moving, selecting, labelling, undo (Z) and
// redo (Shift+Z), both on the server. The task
// kind adds its own keys (web/src/tasks/<kind>: class hotkeys, Enter to score).
import type { KeyBinding } from '../tasks/types';
import type { Grid } from './grid.svelte';
import type { LabelValue } from './schema';

export interface GridKeys {
  grid: Grid;
  /** How far ArrowUp / ArrowDown move: one row of tiles, one item in the dialog. */
  step: number;
  bindings: KeyBinding[];
  detailOpen: boolean;
  setDetailOpen: (open: boolean) => void;
  label: (value: LabelValue | null, what: string) => void;
  accept: () => void;
}

function isTyping(t: EventTarget | null): boolean {
  const el = t as HTMLElement | null;
  if (!el) return false;
  return !!el.closest('input, textarea, select, [contenteditable="true"]');
}

export function onGridKey(e: KeyboardEvent, k: GridKeys): void {
  const { grid } = k;
  if (e.key === 'Escape' && isTyping(e.target)) {
    (e.target as HTMLElement).blur();
    return;
  }
  if (isTyping(e.target) || e.altKey) return;
  // Enter and Space on a focused button or link do what they do (e.g. the case's
  // "Finish and save report"), not the grid's open / select.
  if ((e.key === 'Enter' || e.key === ' ') && (e.target as HTMLElement | null)?.closest?.('button, a[href]')) return;
  const key = e.key.toLowerCase();
  const mod = e.ctrlKey || e.metaKey;
  const n = grid.items.length;
  const extend = { extend: e.shiftKey };

  if (mod && key === 'z') return void (e.preventDefault(), e.shiftKey ? grid.redo() : grid.undo());
  if (mod && key === 'a') {
    e.preventDefault();
    grid.selectAll();
    return;
  }
  if (mod) return;
  const own = k.bindings.find((b) => b.key === key);
  if (own && own.run() !== false) return void e.preventDefault();
  switch (e.key) {
    case 'ArrowRight':
      e.preventDefault();
      return grid.moveTo(grid.focus + 1, extend);
    case 'ArrowLeft':
      e.preventDefault();
      return grid.moveTo(grid.focus - 1, extend);
    case 'ArrowDown':
      e.preventDefault();
      return grid.moveTo(Math.min(n - 1, grid.focus + k.step), extend);
    case 'ArrowUp':
      e.preventDefault();
      return grid.moveTo(Math.max(0, grid.focus - k.step), extend);
    case 'Home':
      e.preventDefault();
      return grid.moveTo(0, extend);
    case 'End':
      e.preventDefault();
      return grid.moveTo(n - 1, extend);
    case 'Enter':
      e.preventDefault();
      k.setDetailOpen(!!grid.focused);
      return;
    case 'Escape':
      if (k.detailOpen) k.setDetailOpen(false);
      else grid.clearSelection();
      return;
    case ' ':
      if (grid.focused) {
        e.preventDefault();
        const s = new Set(grid.selected);
        if (s.has(grid.focused.id)) s.delete(grid.focused.id);
        else s.add(grid.focused.id);
        grid.selected = s;
      }
      return;
    case 'Delete':
    case 'Backspace':
      e.preventDefault();
      return void k.label(null, 'clear label');
  }
  if (key === 'z') return void (e.shiftKey ? grid.redo() : grid.undo());
  if (key === '0') return void k.label({ kind: 'unsure' }, 'unsure');
  if (key === 'x') return void k.label({ kind: 'skip' }, 'skip');
  if (key === 'a') return void k.accept();
}
