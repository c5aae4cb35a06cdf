// Builds the console into the Python package (src/flowyard/console/static), which
// `flowyard serve` serves at / (decision 0033). `make ui` runs this; the output is committed.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../src/flowyard/console/static",
    emptyOutDir: true,
    // One entry bundle and one stylesheet: the console is one screen of an ops tool.
    chunkSizeWarningLimit: 800,
    sourcemap: false,
  },
  server: {
    // `npx vite` for development: the API of a local `make run`.
    proxy: { "/api": { target: "http://127.0.0.1:8000", ws: true } },
  },
});
