import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// The bundle goes into the Python package; FastAPI serves it at `/`.
// `npm run dev` proxies /api to a server started with `loupe serve` or `loupe demo`.
export default defineConfig({
  plugins: [svelte()],
  build: {
    outDir: '../src/loupe/web_dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 800,
  },
  server: {
    proxy: {
      '/api': { target: process.env.LOUPE_API ?? 'http://127.0.0.1:8000', changeOrigin: false },
    },
  },
});
