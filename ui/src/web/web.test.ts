// The web transport's pure parts: command dispatch and its typed errors (also through the
// generated bindings, with @tauri-apps/api/core swapped for the web one as the web build does),
// the event bus, the relay connection's frame routing, the mesh rule and payloads, links.
import { describe, expect, it, vi } from "vitest";
import { BROWSER_LIMITS, dispatch, inviteCode, isCommandError, normaliseRelayUrl, notInBrowser, checkDisplayName, toCommandError } from "./dispatch";
import { emit, listen, listenerCount, once } from "./event";
import { loginMessage, relayName, RelayConnection, RelayError, hex, unhex } from "./protocol";
import { candidatePayload, fromNewConnection, offersTo, sessionId, ufrag } from "./mesh";
import { channelOf, defaultRelayUrl, WebBackend } from "./backend";
import { applyLayers, isUserId, PathMove, SfuConnection, SIMULCAST, sfuTracks, trackOwner } from "./sfu";
import { cameraError, cameraView, pausedKey, RemoteVideos, remoteVideoId } from "./video";

const [SIMULCAST_Q, SIMULCAST_H, SIMULCAST_F] = SIMULCAST;

vi.mock("@tauri-apps/api/core", async () => await import("./core"));
vi.mock("@tauri-apps/api/event", async () => await import("./event"));

/** The rejection of `p` (a CommandError for dispatch). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e) => e as { code: string; message: string },
  );

describe("dispatch", () => {
  it("runs the handler of a command with its arguments", async () => {
    const seen: unknown[] = [];
    const r = await dispatch({ echo: (a) => (seen.push(a), a.x * 2) }, "echo", { x: 21 });
    expect(r).toBe(42);
    expect(seen).toEqual([{ x: 21 }]);
  });

  it("refuses a command the browser cannot do with a typed error naming why", async () => {
    const e = await failure(dispatch({}, "video_sources_list"));
    expect(isCommandError(e)).toBe(true);
    expect(e.message).toMatch(/^Not available in the browser: the browser chooses the camera/);
    const quality = await failure(dispatch({}, "live_quality", { layer: "low" }));
    expect(quality.message).toBe("Not available in the browser: livestreams are not in the browser yet. The desktop app has it.");
    const unknown = await failure(dispatch({}, "something_new"));
    expect(unknown.message).toContain("`something_new`");
    // Not an Error: the bindings' typedError rethrows Errors instead of returning them.
    expect(e instanceof Error).toBe(false);
  });

  it("does not treat Object.prototype names as commands", async () => {
    const e = await failure(dispatch({}, "toString"));
    expect(isCommandError(e)).toBe(true);
  });

  it("turns what handlers throw into CommandErrors", async () => {
    const thrown = (x: unknown) => failure(dispatch({ f: () => Promise.reject(x) }, "f"));
    expect(await thrown(new RelayError("invite_join", "not_found", "no such invite"))).toEqual({ code: "not_found", message: "no such invite" });
    expect(await thrown(new RelayError("channel_join", "channel_full", "full"))).toEqual({ code: "rejected", message: "full" });
    expect(await thrown(new RelayError("x", "closed", "gone"))).toEqual({ code: "relay_unavailable", message: "gone" });
    expect(await thrown(new Error("boom"))).toEqual({ code: "internal", message: "boom" });
    expect(await thrown(notInBrowser("x"))).toEqual(notInBrowser("x"));
    expect(toCommandError("s")).toEqual({ code: "internal", message: "s" });
  });

  it("every desktop-only command the back end leaves out has a reason, and none is also handled", () => {
    const b = new WebBackend(new Map() as unknown as Storage, undefined).handlers();
    for (const cmd of Object.keys(BROWSER_LIMITS)) expect(b[cmd], cmd).toBeUndefined();
  });
});

describe("server administration on the web back end", () => {
  /** A backend "connected" to a fake relay that answers from `replies` and records requests. */
  function connectedBackend(replies: Record<string, (f: Record<string, unknown>) => unknown>) {
    const sent: { type: string; fields: Record<string, unknown> }[] = [];
    const relay = {
      closed: false,
      request: async (type: string, fields: Record<string, unknown> = {}) => {
        sent.push({ type, fields });
        const r = replies[type];
        if (!r) throw new RelayError(type, "bad_request", `unexpected ${type}`);
        return r(fields);
      },
      close: () => {},
    };
    const b = new WebBackend(new Map() as unknown as Storage, undefined);
    Object.assign(b as unknown as Record<string, unknown>, { relay, status: { state: "connected", user_id: "aa", display_name: "me", node: "ws://relay.test/ws" } });
    return { h: b.handlers(), sent };
  }

  it("bans, unban, rename, delete and leave speak the relay's requests", async () => {
    const { h, sent } = connectedBackend({
      ban_list: () => ({ server: 3, users: [{ id: "bb", display_name: "zed" }, { id: "cc", display_name: "Amy" }] }),
      member_unban: () => ({}),
      server_rename: () => ({}),
      server_delete: () => ({}),
      server_leave: () => ({}),
    });
    expect(await h.server_bans({ server: 3 })).toEqual([
      { user_id: "cc", display_name: "Amy" },
      { user_id: "bb", display_name: "zed" },
    ]);
    await h.member_unban({ server: 3, userId: "bb" });
    await h.server_rename({ server: 3, nameText: "  Crew " });
    await h.server_delete({ server: 3 });
    await h.server_leave({ server: 4 });
    expect(sent).toEqual([
      { type: "ban_list", fields: { server: 3 } },
      { type: "member_unban", fields: { server: 3, user: "bb" } },
      { type: "server_rename", fields: { server: 3, name: "Crew" } },
      { type: "server_delete", fields: { server: 3 } },
      { type: "server_leave", fields: { server: 4 } },
    ]);
    const blank = await failure(dispatch(h, "server_rename", { server: 3, nameText: " " }));
    expect(blank.code).toBe("invalid_input");
    expect(sent.length).toBe(5);
    const refused = connectedBackend({});
    const e = await failure(dispatch(refused.h, "member_unban", { server: 3, userId: "bb" }));
    expect(isCommandError(e)).toBe(true);
  });
});

describe("the generated bindings on the web back end", () => {
  it("return the browser's refusal as a typed error the UI shows", async () => {
    const { commands } = await import("../lib/bindings");
    const r = await commands.videoSourcesList();
    expect(r.status).toBe("error");
    if (r.status === "error") expect(r.error.message).toMatch(/not available in the browser/i);
    // No camera access here (no navigator.mediaDevices): the camera button's sentence.
    const cam = await commands.cameraSet(true);
    expect(cam.status === "error" && cam.error).toEqual({ code: "device", message: expect.stringMatching(/^Camera: the browser was not allowed/) });
    const ptt = await commands.voiceSettingsSet({
      transmit_mode: "push_to_talk",
      ptt_shortcut: "F8",
      sensitivity_dbfs: -45,
      noise_suppression: true,
      input_device: null,
      output_device: null,
      user_volumes: {},
    });
    expect(ptt.status === "error" && ptt.error.message).toMatch(/push-to-talk needs a global hotkey/);
    const desk = await failure(commands.desktopSettingsGet());
    expect(desk.message).toMatch(/start on login and the tray/);
    expect(await commands.traySync({ channel: null, muted: false, deafened: false, relay_on: false })).toBe(false);
  });

  it("answer without a relay where nothing needs one", async () => {
    const { commands } = await import("../lib/bindings");
    const s = await commands.settingsGet();
    expect(s.status === "ok" && s.data.relay_url).toMatch(/^ws:\/\/.*\/ws$/);
    const set = await commands.relayUrlSet("ftp://x");
    expect(set.status === "error" && set.error.code).toBe("invalid_input");
    const st = await commands.relayStatus();
    expect(st).toEqual({ status: "ok", data: { state: "offline" } });
    const list = await commands.serversList();
    expect(list).toEqual({ status: "ok", data: [] });
    const join = await commands.channelJoin(5);
    expect(join.status === "error" && join.error.code).toBe("relay_unavailable");
  });

  it("events reach listeners through the same bus", async () => {
    const { events } = await import("../lib/bindings");
    const got: unknown[] = [];
    const un = await events.relayStatusChanged.listen((e) => got.push(e.payload));
    await emit("relay-status-changed", { status: { state: "stopped" } });
    un();
    await emit("relay-status-changed", { status: { state: "offline" } });
    expect(got).toEqual([{ status: { state: "stopped" } }]);
  });
});

describe("event bus", () => {
  it("delivers, unlistens, and once fires once", async () => {
    const got: unknown[] = [];
    const un = await listen("t", (e) => got.push(e.payload));
    await once("t", (e) => got.push(["once", e.payload]));
    await emit("t", 1);
    await emit("t", 2);
    un();
    await emit("t", 3);
    expect(got).toEqual([1, ["once", 1], 2]);
    expect(listenerCount("t")).toBe(0);
  });
});

describe("protocol", () => {
  it("signs the context string then the nonce (51 bytes)", () => {
    const m = loginMessage("5e".repeat(32));
    expect(m.length).toBe(51);
    expect(hex(m.slice(0, 19))).toBe("68756d2d72656c61792d6c6f67696e2d763100");
    expect(() => unhex("zz")).toThrow();
  });

  it("binds the login to the relay we dialed (v2: context, name length, name, nonce)", () => {
    expect(relayName("ws://Relay.Example:9000/ws")).toBe("relay.example:9000");
    expect(relayName("wss://relay.example/ws")).toBe("relay.example");
    const m = loginMessage("07".repeat(32), "relay.example:9000");
    expect(m.length).toBe(19 + 2 + 18 + 32);
    expect(new TextDecoder().decode(m.slice(0, 19))).toBe("hum-relay-login-v2\0");
    expect(Array.from(m.slice(19, 21))).toEqual([0, 18]);
    expect(new TextDecoder().decode(m.slice(21, 39))).toBe("relay.example:9000");
    expect(hex(m.slice(39))).toBe("07".repeat(32));
    expect(hex(loginMessage("07".repeat(32), "relay.example:9001"))).not.toBe(hex(m));
  });

  it("matches replies and errors to requests by id, events to onEvent", async () => {
    const r = new RelayConnection("ws://x/ws");
    const sent: string[] = [];
    (r as unknown as { ws: { send: (s: string) => void } }).ws = { send: (s) => sent.push(s) };
    const events: unknown[] = [];
    r.onEvent = (e) => events.push(e);
    const a = r.request("server_list");
    const b = r.request("invite_join", { code: "abcdef" });
    expect(sent.map((s) => JSON.parse(s))).toEqual([
      { id: 1, type: "server_list" },
      { id: 2, type: "invite_join", code: "abcdef" },
    ]);
    r.frame({ type: "error", re: 2, code: "not_found", message: "no such invite" });
    r.frame({ type: "event", event: { type: "roster_join" } });
    r.frame({ type: "reply", re: 1, reply: { type: "servers", servers: [] } });
    r.frame({ type: "reply", re: 99, reply: {} });
    expect(await a).toEqual({ type: "servers", servers: [] });
    const err = await b.catch((e) => e);
    expect(err).toBeInstanceOf(RelayError);
    expect([err.code, err.request]).toEqual(["not_found", "invite_join"]);
    expect(events).toEqual([{ type: "roster_join" }]);
  });
});

describe("mesh and links", () => {
  it("an offer with another SDP session id comes from a new connection; an ICE restart does not", () => {
    const sdp = (id: string, version: number, frag: string) =>
      `v=0\r\no=- ${id} ${version} IN IP4 0.0.0.0\r\ns=-\r\na=ice-ufrag:${frag}\r\n`;
    expect(sessionId(sdp("8071932341856421521", 2, "a"))).toBe("8071932341856421521");
    expect(sessionId("v=0\r\ns=-\r\n")).toBe(null);
    // An ICE restart: same session, newer version, new credentials.
    expect(fromNewConnection(sdp("42", 2, "a"), sdp("42", 3, "b"))).toBe(false);
    expect(fromNewConnection(sdp("42", 2, "a"), sdp("43", 2, "a"))).toBe(true);
    // Nothing negotiated yet, or an SDP without an origin: applied as it is.
    expect(fromNewConnection(undefined, sdp("43", 2, "a"))).toBe(false);
    expect(fromNewConnection(sdp("42", 2, "a"), "v=0\r\n")).toBe(false);
  });

  it("the smaller id offers", () => {
    expect(offersTo("0a", "0b")).toBe(true);
    expect(offersTo("0b", "0a")).toBe(false);
  });

  it("ICE candidates as protocol payloads", () => {
    expect(candidatePayload(null)).toEqual({ kind: "end_of_candidates" });
    const c = { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "u" } as RTCIceCandidate;
    expect(candidatePayload(c)).toEqual({ kind: "ice", candidate: c.candidate, sdp_mid: "0", sdp_mline_index: 0, username_fragment: "u" });
    expect(candidatePayload({ candidate: "" } as RTCIceCandidate)).toBeNull();
    expect(ufrag("v=0\r\na=ice-ufrag:abcd\r\n")).toBe("abcd");
  });

  it("invite codes from links, relay addresses, names", () => {
    expect(inviteCode("k7Qm2xRtZp")).toBe("k7Qm2xRtZp");
    expect(inviteCode("hum://invite/k7Qm2xRtZp")).toBe("k7Qm2xRtZp");
    expect(inviteCode("https://hum.example.org/invite/k7Qm2xRtZp")).toBe("k7Qm2xRtZp");
    expect(inviteCode("../../x")).toBeNull();
    expect(normaliseRelayUrl("wss://hum.example.org")).toBe("wss://hum.example.org/ws");
    expect(() => normaliseRelayUrl("http://x/ws")).toThrow();
    expect(() => checkDisplayName("  ")).toThrow();
    expect(checkDisplayName(" Ada ")).toBe("Ada");
    expect(defaultRelayUrl({ protocol: "https:", host: "hum.example.org" })).toBe("wss://hum.example.org/ws");
    expect(defaultRelayUrl({ protocol: "http:", host: "127.0.0.1:7700" })).toBe("ws://127.0.0.1:7700/ws");
  });

  it("the page's /invite/CODE is offered once as a link", () => {
    const loc = { protocol: "http:", host: "h", pathname: "/invite/k7Qm2xRtZp", href: "http://h/invite/k7Qm2xRtZp" };
    const b = new WebBackend(new Map() as unknown as Storage, loc);
    expect(b.takeLinks()).toEqual([{ kind: "invite", code: "k7Qm2xRtZp", link: loc.href }]);
    expect(b.takeLinks()).toEqual([]);
    const home = new WebBackend(new Map() as unknown as Storage, { ...loc, pathname: "/" });
    expect(home.takeLinks()).toEqual([]);
  });

  it("a protocol channel as the UI's ChannelView", () => {
    const c = channelOf(
      {
        id: 5,
        name: "Lounge",
        max_participants: 8,
        roster: [{ user: { id: "b0", display_name: "Bob" }, voice: { muted: true, speaking: false } }],
      },
      "mesh",
      null,
    );
    expect(c.roster).toEqual([{ user_id: "b0", display_name: "Bob", muted: true, deafened: false, speaking: false }]);
    expect(c.permissions.member.join).toBe(true);
  });
});

describe("monitor", () => {
  it("dBFS of a block", async () => {
    const { dbfs } = await import("./monitor");
    expect(dbfs(new Float32Array(480))).toEqual({ rms: -100, peak: -100 });
    expect(dbfs(Float32Array.from({ length: 480 }, () => 0.5))).toEqual({ rms: -6, peak: -6 });
  });

  it("the speaking gate holds over short pauses and drops when muted", async () => {
    const { SpeakingGate } = await import("./monitor");
    const g = new SpeakingGate(-45, 300);
    expect(g.update(-30, 0, false)).toBe(true);
    expect(g.update(-80, 200, false)).toBe(false);
    expect(g.speaking).toBe(true);
    expect(g.update(-80, 301, false)).toBe(true);
    expect(g.speaking).toBe(false);
    g.update(-30, 400, false);
    expect(g.update(-30, 450, true)).toBe(true);
    expect(g.speaking).toBe(false);
  });

  it("a WebRTC stats report as the UI's link stats", async () => {
    const { peerStatsView } = await import("./monitor");
    const v = peerStatsView("b0", [
      { id: "T", type: "transport", selectedCandidatePairId: "P" },
      { id: "P", type: "candidate-pair", currentRoundTripTime: 0.0421 },
      { id: "I", type: "inbound-rtp", kind: "audio", packetsReceived: 990, packetsLost: 10, jitter: 0.0034, jitterBufferDelay: 40, jitterBufferEmittedCount: 1000 },
    ]);
    expect(v).toEqual({ user_id: "b0", rtt_ms: 42.1, loss_pct: 1, jitter_ms: 3.4, buffer_ms: 40, packets_received: 990, quality: "good" });
    expect(peerStatsView("b0", []).rtt_ms).toBeNull();
    const lossy = peerStatsView("b0", [{ id: "I", type: "inbound-rtp", kind: "audio", packetsReceived: 90, packetsLost: 10 }]);
    expect([lossy.loss_pct, lossy.quality]).toEqual([10, "poor"]);
  });
});

describe("sfu", () => {
  const A = "a".repeat(64);
  const B = "b".repeat(64);
  const ME = "c".repeat(64);
  /** An SFU offer: our own audio m-line echoed back, then one sendonly m-line per member track. */
  const sfuOffer = (version: number, owners: [string, string, string][]) =>
    [
      `v=0\r\no=- 1 ${version} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite`,
      "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\na=msid:ourstream ourtrack",
      ...owners.map(([mid, user, track]) => `m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:${mid}\r\na=sendonly\r\na=msid:${user} ${track}`),
    ].join("\r\n") + "\r\n";

  it("names each forwarded track's owner by its msid", () => {
    const sdp = sfuOffer(3, [
      ["txa", A, "t2"],
      ["lHP", B, "t3"],
    ]);
    expect(sfuTracks(sdp)).toEqual([
      { mid: "txa", kind: "audio", user: A, track: "t2", direction: "sendonly" },
      { mid: "lHP", kind: "audio", user: B, track: "t3", direction: "sendonly" },
    ]);
    // Our own m-line (a browser stream id, not a user id) and junk are not members' tracks.
    expect(sfuTracks("v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=msid:AB t\r\n")).toEqual([]);
    expect(sfuTracks("garbage")).toEqual([]);
    expect(isUserId(A)).toBe(true);
    expect(isUserId(A.toUpperCase())).toBe(false);
    expect(isUserId("a".repeat(63))).toBe(false);
    // The stream id first; without one, the m-line's msid in the SFU's offer.
    expect(trackOwner([B], "txa", sdp)).toBe(B);
    expect(trackOwner([], "txa", sdp)).toBe(A);
    expect(trackOwner(["x"], "nope", sdp)).toBe(null);
    expect(trackOwner([], null, sdp)).toBe(null);
  });

  /** Just enough RTCPeerConnection to follow the signalling: every call is logged. */
  class FakePc {
    log: string[] = [];
    iceGatheringState = "complete";
    connectionState = "new";
    localDescription: { type: string; sdp: string } | null = null;
    remoteDescription: { type: string; sdp: string } | null = null;
    ontrack: ((e: unknown) => void) | null = null;
    onconnectionstatechange: (() => void) | null = null;
    answers = 0;
    senders: { track: { kind: string; id?: string }; params: { encodings: RTCRtpEncodingParameters[] }; set: unknown[] }[] = [];
    addTrack(t: { kind: string }) {
      this.log.push(`add ${t.kind}`);
      this.sender(t, [{}]);
    }
    addTransceiver(t: { kind: string }, init: { sendEncodings?: RTCRtpEncodingParameters[] }) {
      this.log.push(`transceiver ${t.kind} ${(init.sendEncodings ?? []).map((e) => e.rid).join(",")}`);
      return { sender: this.sender(t, init.sendEncodings ?? [{}]) };
    }
    private sender(track: { kind: string } | null, encodings: RTCRtpEncodingParameters[]) {
      const set: unknown[] = [];
      const log = this.log;
      const sender = {
        track,
        params: { encodings },
        set,
        getParameters() {
          return structuredClone({ encodings });
        },
        async setParameters(p: unknown) {
          set.push(p);
        },
        async replaceTrack(t: { kind: string; id?: string } | null) {
          log.push(`replace ${t?.id ?? "null"}`);
          sender.track = t;
        },
      };
      this.senders.push(sender as never);
      return sender;
    }
    getSenders() {
      return this.senders;
    }
    async createOffer() {
      return { type: "offer", sdp: "our offer" };
    }
    async createAnswer() {
      return { type: "answer", sdp: `our answer ${++this.answers}` };
    }
    async setLocalDescription(d: { type: string; sdp: string }) {
      this.log.push(`local ${d.type}`);
      this.localDescription = d;
    }
    async setRemoteDescription(d: { type: string; sdp: string }) {
      this.log.push(`remote ${d.type}`);
      this.remoteDescription = d;
    }
    addEventListener() {}
    removeEventListener() {}
    close() {
      this.log.push("close");
    }
    /** The browser's `track` event for m-line `mid`, with stream ids `streams`. */
    fire(mid: string, streams: string[], kind = "audio"): void {
      this.ontrack?.({ track: { kind, id: `tr-${mid}` }, streams: streams.map((id) => ({ id })), transceiver: { mid } });
    }
  }

  function setup(tracks: { kind: string; id?: string }[] = [{ kind: "audio" }], simulcast = false) {
    const sent: [string, Record<string, unknown> | undefined][] = [];
    let joinReply: (v: unknown) => void = () => {};
    /** What the relay answers to our `sfu_offer` requests, in turn (default: an answer). */
    const offerReplies: (() => Promise<unknown>)[] = [];
    const relay = {
      request(type: string, fields?: Record<string, unknown>) {
        sent.push([type, fields]);
        if (type === "sfu_join") return new Promise((r) => (joinReply = r));
        if (type === "sfu_offer") return offerReplies.shift()?.() ?? Promise.resolve({ type: "sdp", sdp: "the SFU's answer" });
        return Promise.resolve({ type: "ok" });
      },
    };
    const pcs: FakePc[] = [];
    const heard: [string, string, string | null][] = [];
    const errors: string[] = [];
    const local = { getTracks: () => tracks } as unknown as MediaStream;
    const sfu = new SfuConnection(
      relay as never,
      ME,
      5,
      local,
      { onTrack: (user, _s, track, name) => heard.push([user, track.kind, name]), onError: (what, e) => errors.push(`${what}: ${e}`) },
      [],
      () => {
        const pc = new FakePc();
        pcs.push(pc);
        return pc as unknown as RTCPeerConnection;
      },
    );
    sfu.simulcast = simulcast;
    return { sent, pcs, heard, errors, sfu, offerReplies, answerJoin: (sdp: string) => joinReply({ type: "sdp", sdp }) };
  }

  it("joins with our offer, answers the SFU's offers only after its answer, in order", async () => {
    const t = setup();
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    expect(t.sent[0]).toEqual(["sfu_join", { channel: 5, sdp: "our offer" }]);
    // The SFU offers the others' tracks before our join's reply is read: queued behind it.
    expect(t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: sfuOffer(2, [["txa", A, "t2"]]) })).toBe(true);
    expect(t.sfu.handleEvent({ type: "sfu_offer", channel: 6, sdp: "other channel" })).toBe(false);
    expect(t.sfu.handleEvent({ type: "sfu_offer", channel: 5 })).toBe(false);
    expect(t.sfu.handleEvent({ type: "signal", channel: 5 })).toBe(false);
    t.answerJoin("the SFU's answer");
    await joined;
    t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: sfuOffer(3, [["txa", A, "t2"], ["lHP", B, "t3"]]) });
    await t.sfu.idle();
    const pc = t.pcs[0];
    expect(pc.log).toEqual([
      "add audio",
      "local offer",
      "remote answer",
      "remote offer",
      "local answer",
      "remote offer",
      "local answer",
    ]);
    expect(t.sent.map(([type, f]) => [type, f?.sdp])).toEqual([
      ["sfu_join", "our offer"],
      ["sfu_answer", "our answer 1"],
      ["sfu_answer", "our answer 2"],
    ]);
    expect(t.sfu.offersAnswered).toBe(2);
    // Tracks by their owner: the msid stream, or the m-line's msid; ours and nobody's dropped.
    pc.fire("txa", [A]);
    pc.fire("lHP", []);
    pc.fire("0", [ME]);
    pc.fire("zzz", ["not-a-user"]);
    expect(t.heard).toEqual([
      [A, "audio", "t2"],
      [B, "audio", "t3"],
    ]);
    expect([...t.sfu.heard]).toEqual([A, B]);
    expect(t.errors).toEqual([]);
  });

  it("a join again replaces the connection; closing says sfu_leave only when asked", async () => {
    const t = setup();
    const first = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer 1");
    await first;
    const second = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(2));
    expect(t.pcs[0].log.at(-1)).toBe("close");
    t.answerJoin("answer 2");
    await second;
    // A track event of the old connection is stale.
    t.pcs[0].fire("txa", [A]);
    expect(t.heard).toEqual([]);
    t.sfu.close();
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_join"]);
    expect(t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: "x" })).toBe(false);
    const u = setup();
    u.sfu.close(true);
    expect(u.sent.map(([type]) => type)).toEqual(["sfu_leave"]);
  });

  it("a bad SFU offer is reported and does not stop later ones", async () => {
    const t = setup();
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer");
    await joined;
    const pc = t.pcs[0];
    const orig = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = async (d) => {
      if (d.sdp === "bad") throw new Error("parse error");
      return orig(d);
    };
    t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: "bad" });
    t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: sfuOffer(4, []) });
    await t.sfu.idle();
    expect(t.errors).toEqual(["sfu: Error: parse error"]);
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_answer"]);
  });

  it("encodes only the simulcast layers the SFU says someone takes (sfu_layers)", async () => {
    const enc = (): RTCRtpEncodingParameters[] => [{ rid: "q" }, { rid: "h" }, { rid: "f" }];
    const e = enc();
    expect(applyLayers(e, ["q", "f"])).toBe(true);
    expect(e.map((x) => x.active)).toEqual([true, false, true]);
    expect(applyLayers(e, ["f", "q"])).toBe(false);
    expect(applyLayers(e, [])).toBe(true);
    expect(e.map((x) => x.active)).toEqual([false, false, false]);
    // One encoding without a rid (no simulcast): always on.
    const one: RTCRtpEncodingParameters[] = [{}];
    applyLayers(one, []);
    expect(one[0].active).toBe(true);

    const t = setup([{ kind: "audio", id: "mic" }, { kind: "video", id: "cam" }], true);
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer");
    await joined;
    const pc = t.pcs[0];
    expect(pc.log.slice(0, 2)).toEqual(["add audio", "transceiver video q,h,f"]);
    expect(t.sfu.handleEvent({ type: "sfu_layers", channel: 5, track: "cam", rids: ["q", 7, "f"] })).toBe(true);
    expect(t.sfu.handleEvent({ type: "sfu_layers", channel: 5, track: "someone-else", rids: [] })).toBe(true);
    expect(t.sfu.handleEvent({ type: "sfu_layers", channel: 6, track: "cam", rids: [] })).toBe(false);
    expect(t.sfu.handleEvent({ type: "sfu_layers", channel: 5, track: "cam" })).toBe(false);
    await t.sfu.idle();
    const cam = pc.senders[1];
    expect(cam.set).toEqual([{ encodings: [{ ...SIMULCAST_Q, active: true }, { ...SIMULCAST_H, active: false }, { ...SIMULCAST_F, active: true }] }]);
    expect(t.sfu.layers).toEqual([["q", "f"]]);
    expect(t.errors).toEqual([]);
  });

  it("publishes my camera: a renegotiation (sfu_offer) as simulcast, off and on on the same sender", async () => {
    const t = setup([{ kind: "audio", id: "mic" }], true);
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer");
    await joined;
    const pc = t.pcs[0];
    await t.sfu.setCamera({ kind: "video", id: "cam1" } as MediaStreamTrack);
    expect(pc.log).toEqual(["add audio", "local offer", "remote answer", "transceiver video q,h,f", "local offer", "remote answer"]);
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_offer"]);
    expect(t.sfu.renegotiated).toBe(1);
    // Off and on again: the same m-line, the track swapped, no renegotiation.
    await t.sfu.setCamera(null);
    await t.sfu.setCamera({ kind: "video", id: "cam2" } as MediaStreamTrack);
    expect(pc.log.slice(-2)).toEqual(["replace null", "replace cam2"]);
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_offer"]);
    // `sfu_layers` names the track of the m-line's msid (the first camera's id): still ours.
    t.sfu.handleEvent({ type: "sfu_layers", channel: 5, track: "cam1", rids: ["q"] });
    await t.sfu.idle();
    expect(pc.senders[1].set).toEqual([{ encodings: [{ ...SIMULCAST_Q, active: true }, { ...SIMULCAST_H, active: false }, { ...SIMULCAST_F, active: false }] }]);
    // The forwarded tracks' names say camera or screen share.
    pc.remoteDescription = { type: "offer", sdp: sfuOffer(5, [["v1", A, "t4"], ["v2", A, "screen-t5"]]) };
    pc.fire("v1", [A], "video");
    pc.fire("v2", [A], "video");
    expect(t.heard).toEqual([
      [A, "video", "t4"],
      [A, "video", "screen-t5"],
    ]);
    expect(t.errors).toEqual([]);
  });

  it("a camera turned on before the join goes into the join's offer; a rejoin offers it again", async () => {
    const t = setup([{ kind: "audio", id: "mic" }], true);
    await t.sfu.setCamera({ kind: "video", id: "cam" } as MediaStreamTrack);
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer");
    await joined;
    expect(t.pcs[0].log.slice(0, 3)).toEqual(["add audio", "transceiver video q,h,f", "local offer"]);
    const again = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(2));
    t.answerJoin("answer 2");
    await again;
    expect(t.pcs[1].log.slice(0, 2)).toEqual(["add audio", "transceiver video q,h,f"]);
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_join"]);
  });

  it("on glare my offer is rolled back, the SFU's offer answered, then mine made again", async () => {
    const t = setup([{ kind: "audio", id: "mic" }], true);
    const joined = t.sfu.join();
    await vi.waitFor(() => expect(t.sent.length).toBe(1));
    t.answerJoin("answer");
    await joined;
    // The relay has an SFU offer waiting for us: it refuses ours, and its event is already here.
    t.offerReplies.push(() => {
      t.sfu.handleEvent({ type: "sfu_offer", channel: 5, sdp: sfuOffer(6, [["v1", A, "t4"]]) });
      return Promise.reject(new RelayError("sfu_offer", "bad_request", "glare: answer the SFU offer first"));
    });
    await t.sfu.setCamera({ kind: "video", id: "cam" } as MediaStreamTrack);
    await t.sfu.idle();
    await t.sfu.idle();
    expect(t.pcs[0].log.slice(3)).toEqual([
      "transceiver video q,h,f",
      "local offer",
      "local rollback",
      "remote offer",
      "local answer",
      "local offer",
      "remote answer",
    ]);
    expect(t.sent.map(([type]) => type)).toEqual(["sfu_join", "sfu_offer", "sfu_answer", "sfu_offer"]);
    expect(t.sfu.renegotiated).toBe(1);
    expect(t.errors).toEqual([]);
  });

  it("a move between mesh and SFU closes the old path once everyone is heard on the new one", () => {
    const move = new PathMove("sfu", 0);
    const heard = new Set<string>();
    const others = [A, B];
    const on = (u: string) => heard.has(u);
    heard.add(A);
    expect(move.done(others, on, 2000)).toBe(false);
    heard.add(B);
    // Everyone is heard, but the others may not hear me on the new path yet: the grace first.
    expect(move.done(others, on, PathMove.GRACE_MS - 1)).toBe(false);
    expect(move.done(others, on, PathMove.GRACE_MS)).toBe(true);
    // Someone never heard: the old path closes at the timeout anyway.
    expect(move.done([A, B, ME], on, PathMove.TIMEOUT_MS - 1)).toBe(false);
    expect(move.done([A, B, ME], on, PathMove.TIMEOUT_MS)).toBe(true);
    // Alone in the channel: nothing to wait for past the grace.
    expect(move.done([], on, PathMove.GRACE_MS)).toBe(true);
  });
});

describe("video in the browser", () => {
  const A = "a".repeat(64);
  const track = (id: string) => ({ id, kind: "video" }) as MediaStreamTrack;

  it("names remote videos as the desktop does: a camera, or a screen share by the SFU's track name", () => {
    expect(remoteVideoId(A, "t4")).toBe(`${A}/camera`);
    expect(remoteVideoId(A, null)).toBe(`${A}/camera`);
    expect(remoteVideoId(A, "screen-t5")).toBe(`${A}/screen`);
    expect(pausedKey(A, "t7")).toBe(`${A}/camera`);
    expect(pausedKey(A, "screen-t8")).toBe(`${A}/screen`);
  });

  it("a remote video is live while the browser decodes its frames (inbound RTP framesDecoded)", () => {
    const v = new RemoteVideos();
    expect(v.add(A, "t4", track("r1"))).toBe(`${A}/camera`);
    v.add(A, "screen-t5", track("r2"));
    const stats = (cam: number, screen: number) => [
      { type: "inbound-rtp", kind: "video", trackIdentifier: "r1", framesDecoded: cam },
      { type: "inbound-rtp", kind: "video", trackIdentifier: "r2", framesDecoded: screen },
      { type: "inbound-rtp", kind: "audio", trackIdentifier: "mic" },
      { type: "inbound-rtp", kind: "video", trackIdentifier: "someone-gone", framesDecoded: 9 },
    ];
    expect(v.progressed(stats(0, 0))).toEqual([]);
    expect(v.progressed(stats(3, 0))).toEqual([`${A}/camera`]);
    expect(v.progressed(stats(3, 1))).toEqual([`${A}/screen`]);
    expect(v.progressed(stats(3, 1))).toEqual([]);
    // A new track for the same stream (a rejoin) replaces the old one.
    v.add(A, "t9", track("r3"));
    expect(v.ids().sort()).toEqual([`${A}/camera`, `${A}/screen`]);
    expect(v.drop(A).sort()).toEqual([`${A}/camera`, `${A}/screen`]);
    expect(v.tracks.size).toBe(0);
  });

  it("says why the camera did not start, and what it shows", () => {
    const named = (name: string) => cameraError(Object.assign(new Error("x"), { name })).message;
    expect(named("NotAllowedError")).toMatch(/^Camera: the browser was not allowed to use it\. Allow the camera for this site/);
    expect(named("NotFoundError")).toBe("Camera: the browser finds no camera on this computer.");
    expect(named("NotReadableError")).toMatch(/another program/);
    expect(cameraError(new Error("odd")).code).toBe("device");
    expect(cameraView(null)).toEqual({ on: false, stream_id: "self", source: "", width: 0, height: 0, fps: 0 });
    const cam = { label: "Fake", getSettings: () => ({ width: 1280, height: 720, frameRate: 29.97 }) } as unknown as MediaStreamTrack;
    expect(cameraView(cam)).toEqual({ on: true, stream_id: "self", source: "camera Fake", width: 1280, height: 720, fps: 30 });
  });
});
