// Type declarations for @herald/client, written by hand to match src/.

/** The JSON a frame's `data` may hold. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Any server frame; the specific ones below narrow it by `type`. */
export interface Frame {
  type: string;
  id?: string | number;
  [field: string]: unknown;
}

export interface WelcomeFrame extends Frame {
  type: "welcome";
  conn: string;
  user: string | null;
  node: string;
  heartbeat_ms: number;
}

export interface JoinedFrame extends Frame {
  type: "joined";
  room: string;
  users: string[];
  count: number;
  seq: number;
  epoch: string;
  /** Present only when the join carried `since` (every rejoin after a reconnect). */
  recovered?: boolean;
}

export interface LeftFrame extends Frame {
  type: "left";
  room: string;
}

export interface MessageFrame<T = Json> extends Frame {
  type: "message";
  room: string;
  from: string;
  data: T;
  seq: number;
  ts: number;
}

export interface DirectFrame<T = Json> extends Frame {
  type: "direct";
  from: string;
  data: T;
  ts: number;
}

export interface BroadcastFrame<T = Json> extends Frame {
  type: "broadcast";
  data: T;
  ts: number;
}

export interface UserFrame extends Frame {
  type: "user_joined" | "user_left";
  room: string;
  user: string;
}

export interface TypingFrame extends Frame {
  type: "typing";
  room: string;
  user: string;
  typing: boolean;
}

export interface ErrorFrame extends Frame {
  type: "error";
  code: string;
  message: string;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

/** What the client needs of a WebSocket class: the browser's, Node's global one, or `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type WhileDisconnected = "wait" | "reject";

export interface ReconnectOptions {
  /** Cap of the first delay, in ms. Default 500. */
  baseMs?: number;
  /** Largest cap, in ms. Default 30000. */
  maxMs?: number;
  /** How long a connection must last before the backoff starts over, in ms. Default 5000. */
  resetAfterMs?: number;
  /** A source of randomness in [0, 1), for tests. Default Math.random. */
  random?: () => number;
}

export interface HeraldClientOptions {
  /** A fixed token, sent as `?token=`. */
  token?: string;
  /** Called before every connect and reconnect; its token wins over `token`. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Default `globalThis.WebSocket`. In Node 20: `import WebSocket from "ws"`. */
  WebSocket?: WebSocketConstructor;
  /** Backoff settings, or `false` to close instead of reconnecting. */
  reconnect?: ReconnectOptions | false;
  /** Default timeout of a request, in ms, counted from the call. Default 10000. */
  requestTimeoutMs?: number;
  /** An attempt not welcomed within this is given up and retried with backoff. Default 15000. */
  connectTimeoutMs?: number;
  /** What a request made while not connected does. Default "wait". */
  whileDisconnected?: WhileDisconnected;
  /** Most requests waiting for a connection. Default 100. */
  maxPending?: number;
  /** Half-open detection: margin after heartbeat_ms before a probe ping, and the probe's timeout. */
  heartbeat?: { marginMs?: number; probeTimeoutMs?: number };
  /** startTyping(): at most one `typing: true` per throttleMs (3000), `false` after idleMs (5000) without a call. */
  typing?: { throttleMs?: number; idleMs?: number };
  /** Where `online`/`offline` events come from; default `globalThis` in a browser, `null` (none) elsewhere. */
  network?: Pick<EventTarget, "addEventListener" | "removeEventListener"> | null;
}

export interface RequestOptions {
  timeoutMs?: number;
  whileDisconnected?: WhileDisconnected;
  /** Send again after a lost connection. Default: true for join, leave, presence, status, ping. */
  retry?: boolean;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface ConnectedInfo {
  conn: string;
  user: string;
  node: string;
  heartbeatMs: number | null;
}

export type ClientEvents = {
  state: (state: ConnectionState) => void;
  connecting: () => void;
  connected: (info: ConnectedInfo) => void;
  disconnected: (info: CloseInfo) => void;
  reconnecting: (info: { attempt: number; delayMs: number }) => void;
  closed: (info: Partial<CloseInfo>) => void;
  authError: (info: CloseInfo) => void;
  error: (error: HeraldError) => void;
  direct: (frame: DirectFrame) => void;
  broadcast: (frame: BroadcastFrame) => void;
  frame: (frame: Frame) => void;
}

export type RoomEvents = {
  message: (frame: MessageFrame, meta: { replayed: boolean }) => void;
  user_joined: (frame: UserFrame) => void;
  user_left: (frame: UserFrame) => void;
  typing: (frame: TypingFrame) => void;
  joined: (frame: JoinedFrame) => void;
  left: (frame: LeftFrame) => void;
  reset: (info: { room: string; seq: number; epoch: string | null }) => void;
  gap: (info: { room: string; from: number; to: number }) => void;
  error: (error: HeraldError) => void;
}

export class Emitter<Events extends { [E in keyof Events]: (...args: any[]) => void } = Record<string, (...args: any[]) => void>> {
  on<E extends keyof Events & string>(event: E, fn: Events[E]): () => void;
  once<E extends keyof Events & string>(event: E, fn: Events[E]): () => void;
  off<E extends keyof Events & string>(event: E, fn?: Events[E]): void;
  emit<E extends keyof Events & string>(event: E, ...args: Parameters<Events[E]>): boolean;
  listenerCount(event: keyof Events & string): number;
}

export class HeraldClient extends Emitter<ClientEvents> {
  constructor(url: string, options?: HeraldClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** From `welcome` (or `authed`); null before the first connection. */
  readonly user: string | null;
  readonly conn: string | null;
  readonly node: string | null;
  readonly heartbeatMs: number | null;
  readonly rooms: ReadonlyMap<string, Room>;
  typingOptions: { throttleMs: number; idleMs: number };

  /** Resolves with `welcome` at the first connection; rejects on an auth error (code "AUTH") or close() (code "CLOSED"). */
  connect(): Promise<WelcomeFrame>;
  close(): void;
  room(name: string): Room;

  request<R extends Frame = Frame>(frame: { type: string; [field: string]: unknown }, options?: RequestOptions): Promise<R>;
  direct(to: string, data: Json, options?: RequestOptions): Promise<void>;
  status(users: Iterable<string>, options?: RequestOptions): Promise<Record<string, boolean>>;
  presence(room: string, options?: RequestOptions): Promise<{ users: string[]; count: number }>;
  /** Resolves with the round trip in ms. */
  ping(options?: RequestOptions): Promise<number>;
}

export class Room extends Emitter<RoomEvents> {
  readonly name: string;
  /** Live: the same Set, kept current. Empty in a namespace with presence = false. */
  readonly users: Set<string>;
  readonly count: number;
  readonly seq: number;
  readonly epoch: string | null;
  /** True while the current connection is in the room. */
  readonly joined: boolean;

  join(options?: RequestOptions): Promise<JoinedFrame>;
  leave(options?: RequestOptions): Promise<LeftFrame>;
  /** Resolves with the message's seq. */
  publish(data: Json, options?: { echo?: boolean; timeoutMs?: number; whileDisconnected?: WhileDisconnected }): Promise<number>;
  /** Never rejects: true on the server's ack, false otherwise. */
  typing(on?: boolean): Promise<boolean>;
  startTyping(): void;
  stopTyping(): void;
}

export class HeraldError extends Error {
  constructor(code: string, message: string, frame?: ErrorFrame);
  /** A Herald error code (NOT_IN_ROOM, FORBIDDEN, RATE_LIMITED, ...) or one of ClientCodes. */
  code: string;
  /** The server's `error` frame, when the error came from one. */
  frame?: ErrorFrame;
  /** For code "AUTH": the close code (4001, 4002 or 4003) and reason. */
  closeCode?: number;
  reason?: string;
  /** For a rejoin refused after a reconnect: the room. */
  room?: string;
  static fromFrame(frame: ErrorFrame): HeraldError;
}

export const ClientCodes: {
  readonly TIMEOUT: "TIMEOUT";
  readonly CLOSED: "CLOSED";
  readonly DISCONNECTED: "DISCONNECTED";
  readonly CONNECTION_LOST: "CONNECTION_LOST";
  readonly TOO_MANY_PENDING: "TOO_MANY_PENDING";
  readonly AUTH: "AUTH";
  readonly TOKEN: "TOKEN";
  readonly CONNECT: "CONNECT";
};

export const AUTH_CLOSE_CODES: readonly [4001, 4002, 4003];

export class Backoff {
  constructor(options?: { baseMs?: number; maxMs?: number; random?: () => number });
  baseMs: number;
  maxMs: number;
  attempt: number;
  cap(attempt?: number): number;
  next(): number;
  reset(): void;
}

export const DEFAULT_BACKOFF: Readonly<{ baseMs: number; maxMs: number }>;
