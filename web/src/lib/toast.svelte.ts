// Short messages at the bottom of the screen; errors stay until dismissed or until
// the user moves to another page (App.svelte calls clearErrors).
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

/** Drop the error messages (they belong to the page the user left). */
export function clearErrors(): void {
  toasts.list = toasts.list.filter((t) => t.kind !== 'error');
}

export function dismiss(id: number): void {
  toasts.list = toasts.list.filter((t) => t.id !== id);
}
