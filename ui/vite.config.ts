/// <reference types="vitest/config" />
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const web = (p: string) => fileURLToPath(new URL(`./src/web/${p}`, import.meta.url));

/** `vite build --mode web`: the same UI on the web back end (ui/src/web, docs/browser.md). The
 *  generated bindings' Tauri imports are aliased to the web transport, the entry is swapped for
 *  the web one, and the build goes to dist-web (the relay serves it with --web-dir). */
function webEntry(): Plugin {
  return {
    name: "hum-web-entry",
    transformIndexHtml: (html) => html.replace("/src/main.tsx", "/src/web/main.tsx"),
  };
}

// Preact through esbuild's automatic JSX runtime: no framework plugin needed.
export default defineConfig(({ mode }) => ({
  clearScreen: false,
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  server: { port: 5173, strictPort: true },
  build:
    mode === "web"
      ? { outDir: "dist-web", target: "es2022", sourcemap: false, emptyOutDir: true }
      : { outDir: "dist", target: "safari15", sourcemap: false },
  ...(mode === "web"
    ? {
        plugins: [webEntry()],
        resolve: {
          alias: [
            { find: /^@tauri-apps\/api\/core$/, replacement: web("core.ts") },
            { find: /^@tauri-apps\/api\/event$/, replacement: web("event.ts") },
          ],
        },
      }
    : {}),
  test: { environment: "happy-dom", include: ["src/**/*.test.{ts,tsx}"] },
}));
