// The console is served by the query service under /console/ (crates/query/src/console.rs embeds dist/).
// Fixed file names, not content hashes: the Rust side embeds exactly index.html, console.js and
// console.css, and serves them with `Cache-Control: no-cache` so a new binary's page is never stale.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "",
    // One script and one stylesheet: nothing to list on the Rust side but these three files.
    cssCodeSplit: false,
    modulePreload: false,
    reportCompressedSize: true,
    rollupOptions: {
      output: {
        entryFileNames: "console.js",
        chunkFileNames: "console-[name].js",
        assetFileNames: "console[extname]",
      },
    },
  },
});
