// The volume editor's tool state and view list (shared by VolumeEditor and Tools).
import type { Niivue } from '@niivue/niivue';

export type ViewKey = 'multi' | 'axial' | 'coronal' | 'sagittal' | 'render';

export interface EditorState {
  view: ViewKey;
  /** Add the 3-D render as a fourth tile of the multiplanar view. */
  render3d: boolean;
  /** A key of WINDOWS (nv.ts). */
  window: string;
  /** Opacity of the label overlay (the drawing), 0..1. */
  opacity: number;
  /** Whether dragging on a slice draws (otherwise it moves the crosshair). */
  drawing: boolean;
  /** The pen's label value; 0 erases. */
  pen: number;
  /** Closed outlines are filled. */
  filled: boolean;
  penSize: number;
  interactive: boolean;
}

export const VIEWS: { key: ViewKey; name: string; sliceType: (nv: Niivue) => Niivue['sliceTypeAxial'] }[] = [
  { key: 'multi', name: 'Three views', sliceType: (nv) => nv.sliceTypeMultiplanar },
  { key: 'axial', name: 'Axial', sliceType: (nv) => nv.sliceTypeAxial },
  { key: 'coronal', name: 'Coronal', sliceType: (nv) => nv.sliceTypeCoronal },
  { key: 'sagittal', name: 'Sagittal', sliceType: (nv) => nv.sliceTypeSagittal },
  { key: 'render', name: '3-D', sliceType: (nv) => nv.sliceTypeRender },
];

/** The editor's keys, for the help list. */
export const KEYS: [string, string][] = [
  ['1–9', 'pen of class 1–9'],
  ['E / 0', 'eraser'],
  ['D', 'drawing on/off'],
  ['F', 'filled pen'],
  ['[ ]', 'pen size'],
  ['Z, Ctrl+Z', 'undo'],
  ['G', 'grow-cut'],
  ['W', 'next window preset'],
  ['V', 'next view'],
  ['R', '3-D render tile'],
  ['I', 'interactive mode'],
  ['Enter', 'accept (interactive)'],
  ['Ctrl+S', 'submit correction'],
];
