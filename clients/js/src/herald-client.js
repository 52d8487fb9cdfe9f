// The whole client as one module name, for pages that serve this directory
// as it is and import `./herald-client.js` (the demo does): a browser follows
// the relative imports of index.js from here, so no bundle is needed.

export * from "./index.js";
