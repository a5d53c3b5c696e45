// Short messages at the bottom of the screen; errors stay until dismissed.
export interface Toast {
  id: number;
  kind: 'info' | 'error' | 'success';
  text: string;
}

export const toasts = $state({ list: [] as Toast[] });
let next = 1;

export function toast(text: string, kind: Toast['kind'] = 'info', ms = 3500): void {
  const id = next++;
  toasts.list.push({ id, kind, text });
  if (kind !== 'error') setTimeout(() => dismiss(id), ms);
}

export function dismiss(id: number): void {
  toasts.list = toasts.list.filter((t) => t.id !== id);
}
