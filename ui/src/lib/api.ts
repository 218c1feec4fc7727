// Thin helpers over the generated bindings: unwrap results into values or an ApiError.
import type { CommandError, ErrorCode } from "./bindings";

type Result<T> = { status: "ok"; data: T } | { status: "error"; error: CommandError };

export class ApiError extends Error {
  readonly code: ErrorCode;
  constructor(e: CommandError) {
    super(e.message);
    this.code = e.code;
  }
}

/** Awaits a generated command and returns its value, or throws ApiError with the backend's message. */
export async function unwrap<T>(p: Promise<Result<T>>): Promise<T> {
  const r = await p;
  if (r.status === "error") throw new ApiError(r.error);
  return r.data;
}

/** The message to show for any thrown value. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  return "Something went wrong.";
}

/** "500 kbps", "1.25 Mbps", "0 kbps" from bits per second. */
export function formatRate(bps: number): string {
  if (bps >= 1_000_000) {
    const mbps = bps / 1_000_000;
    return `${Number.isInteger(mbps) ? mbps : mbps.toFixed(2).replace(/0$/, "")} Mbps`;
  }
  return `${Math.round(bps / 1000)} kbps`;
}
