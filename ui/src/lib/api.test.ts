import { describe, expect, it } from "vitest";
import { ApiError, formatRate, unwrap } from "./api";

describe("formatRate", () => {
  it("uses kbps below a megabit and Mbps above", () => {
    expect(formatRate(0)).toBe("0 kbps");
    expect(formatRate(500_000)).toBe("500 kbps");
    expect(formatRate(1_250_000)).toBe("1.25 Mbps");
    expect(formatRate(1_500_000)).toBe("1.5 Mbps");
    expect(formatRate(5_000_000)).toBe("5 Mbps");
  });
});

describe("unwrap", () => {
  it("returns data or throws the backend's message and code", async () => {
    await expect(unwrap(Promise.resolve({ status: "ok" as const, data: 3 }))).resolves.toBe(3);
    const err = unwrap(
      Promise.resolve({
        status: "error" as const,
        error: { code: "invalid_input" as const, message: "Bad." },
      }),
    );
    await expect(err).rejects.toBeInstanceOf(ApiError);
    await expect(err).rejects.toMatchObject({ code: "invalid_input", message: "Bad." });
  });
});
