// @herald/client: the browser and Node client of Herald.
//
// Plain ES modules with relative imports and no dependencies, so this
// directory can be served to a browser as it is (`<script type="module">`
// importing `./index.js`), published to npm as it is, and imported by Node
// 18+ with a WebSocket implementation passed in. There is no build step.

export { HeraldClient, AUTH_CLOSE_CODES } from "./client.js";
export { Room } from "./room.js";
export { Backoff, DEFAULT_BACKOFF } from "./backoff.js";
export { Emitter } from "./emitter.js";
export { HeraldError, ClientCodes } from "./errors.js";
