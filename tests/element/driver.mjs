// One simulated Element device: matrix-js-sdk with its Rust crypto (matrix-sdk-crypto through
// @matrix-org/matrix-sdk-crypto-wasm), the engine Element Web runs, driven by the Python tests.
//
// Protocol, one JSON object per line. In (stdin): {"id": n, "cmd": "...", ...arguments}.
// Out (stdout): {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false, "error": "..."}
// for each command, and {"event": "...", ...} whenever something happens that a person would
// see: a timeline event (decrypted, or not), a verification request, its phase, the short
// authentication string. The sdk's own log goes to stderr.
//
// Each behaviour has one home below: the session (login), rooms, the timeline, trust (shields,
// devices, cross-signing, device isolation) and SAS verification.

import { format } from "node:util";
import readline from "node:readline";

// The sdk logs through console: keep stdout for the protocol. Done before the sdk loads, as its
// logger binds the console's methods when it is made.
for (const name of ["log", "info", "debug", "trace", "warn", "error"]) {
  console[name] = (...args) => process.stderr.write(format(...args) + "\n");
}

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
logger.setLevel(process.env.JETON_ELEMENT_LOG || "warn");

const started = Date.now();
/** Milliseconds since the driver started, on every event (figures such as time to first message). */
const now = () => Date.now() - started;

function emit(event) {
  process.stdout.write(JSON.stringify({ ...event, t: now() }) + "\n");
}

function waitUntil(check, what, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = () => {
      let value;
      try {
        value = check();
      } catch (e) {
        reject(e);
        return;
      }
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      else setTimeout(poll, 50);
    };
    poll();
  });
}

// ---------------------------------------------------------------------------------------------
// The session

/** The logged-in client and the password (user-interactive auth for cross-signing). */
const session = { client: null, password: null };

function client() {
  if (!session.client) throw new Error("not logged in");
  return session.client;
}

const crypto = () => client().getCrypto();

async function login({ homeserver, user, password, device_name }) {
  const anonymous = sdk.createClient({ baseUrl: homeserver });
  const response = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: device_name,
  });
  const c = sdk.createClient({
    baseUrl: homeserver,
    userId: response.user_id,
    deviceId: response.device_id,
    accessToken: response.access_token,
    verificationMethods: ["m.sas.v1"],
  });
  // In memory, as nothing outlives the test; Element Web keeps the same store in IndexedDB.
  await c.initRustCrypto({ useIndexedDB: false });
  session.client = c;
  session.password = password;
  watchTimeline(c);
  watchVerification(c);
  const prepared = new Promise((resolve) =>
    c.on(sdk.ClientEvent.Sync, (state) => state === sdk.SyncState.Prepared && resolve()),
  );
  await c.startClient({ initialSyncLimit: 50 });
  await prepared;
  const keys = await c.getCrypto().getOwnDeviceKeys();
  return {
    user_id: response.user_id,
    device_id: response.device_id,
    ed25519: keys.ed25519,
    curve25519: keys.curve25519,
    crypto_version: c.getCrypto().getVersion(),
  };
}

// ---------------------------------------------------------------------------------------------
// Rooms

async function createRoom({ invite = [], name }) {
  const { room_id } = await client().createRoom({
    name,
    invite,
    preset: sdk.Preset.PrivateChat,
    initial_state: [
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    ],
  });
  await waitUntil(() => client().getRoom(room_id), `room ${room_id} in the sync`);
  return { room_id };
}

async function invite({ room, user }) {
  await client().invite(room, user);
  return {};
}

async function join({ room }) {
  await client().joinRoom(room);
  return {};
}

/** Waits until this device's sync shows `user` with `membership` in `room` (as Element's member list). */
async function waitMember({ room, user, membership = "join", timeout_ms = 60000 }) {
  await waitUntil(
    () => client().getRoom(room)?.getMember(user)?.membership === membership,
    `${user} to ${membership} ${room}`,
    timeout_ms,
  );
  return {};
}

async function sendText({ room, body }) {
  const { event_id } = await client().sendMessage(room, { msgtype: "m.text", body });
  return { event_id };
}

// ---------------------------------------------------------------------------------------------
// The timeline: every room event is reported once it is decrypted or has failed, and again when
// a late room key decrypts it.

function report(event) {
  const clear = event.getClearContent() ?? event.getContent();
  emit({
    event: "timeline",
    room: event.getRoomId(),
    event_id: event.getId(),
    sender: event.getSender(),
    type: event.getType(),
    encrypted: event.isEncrypted(),
    body: event.isDecryptionFailure() ? null : (clear?.body ?? null),
    failure: event.isDecryptionFailure() ? event.decryptionFailureReason : null,
  });
}

function watchTimeline(c) {
  c.on(sdk.RoomEvent.Timeline, async (event, room, toStartOfTimeline, removed) => {
    if (removed) return;
    if (event.status !== null) return; // a local echo of our own message, not yet sent
    if (event.isEncrypted()) {
      event.on(sdk.MatrixEventEvent.Decrypted, () => report(event));
      await c.decryptEventIfNeeded(event);
      if (event.isBeingDecrypted()) return; // reported by the handler above
    }
    report(event);
  });
}

function findEvent(roomId, eventId) {
  const event = client().getRoom(roomId)?.findEventById(eventId);
  if (!event) throw new Error(`event ${eventId} is not in the timeline of ${roomId}`);
  return event;
}

// ---------------------------------------------------------------------------------------------
// Trust: the shield on an event, devices, cross-signing, device isolation

/** The shield Element draws next to an event: NONE, GREY or RED, and why. */
async function shield({ room, event_id }) {
  const info = await crypto().getEncryptionInfoForEvent(findEvent(room, event_id));
  if (!info) return { colour: null, reason: null };
  return {
    colour: cryptoApi.EventShieldColour[info.shieldColour],
    reason: info.shieldReason === null ? null : cryptoApi.EventShieldReason[info.shieldReason],
  };
}

async function devices({ user }) {
  const map = await crypto().getUserDeviceInfo([user], true);
  return { devices: [...(map.get(user)?.keys() ?? [])] };
}

async function deviceStatus({ user, device }) {
  const status = await crypto().getDeviceVerificationStatus(user, device);
  if (!status) return { known: false };
  return {
    known: true,
    verified: status.isVerified(),
    signed_by_owner: status.signedByOwner,
    cross_signing_verified: status.crossSigningVerified,
    locally_verified: status.localVerified,
  };
}

async function userStatus({ user }) {
  const status = await crypto().getUserVerificationStatus(user);
  return {
    cross_signing_verified: status.isCrossSigningVerified(),
    has_cross_signing_keys: await crypto().userHasCrossSigningKeys(user, true),
  };
}

/** Cross-signing for this device's account, the account password answering user-interactive auth. */
async function bootstrapCrossSigning() {
  await crypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: (makeRequest) =>
      makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: client().getUserId() },
        password: session.password,
      }),
  });
  return { ready: await crypto().isCrossSigningReady() };
}

/** "all": keys for every device (the default); "only_signed": Element's "exclude insecure
 * devices" (MSC4153), keys only for devices their owner cross-signed. */
async function isolation({ mode }) {
  const modes = {
    all: () => new cryptoApi.AllDevicesIsolationMode(false),
    only_signed: () => new cryptoApi.OnlySignedDevicesIsolationMode(),
  };
  if (!modes[mode]) throw new Error(`unknown isolation mode ${mode}`);
  crypto().setDeviceIsolationMode(modes[mode]());
  return {};
}

// ---------------------------------------------------------------------------------------------
// SAS verification, to-device or in a room, in both roles. Requests are known by a number the
// driver gives them (a request's transaction id comes later for in-room ones).

const requests = [];
const sasShown = new Map(); // request number -> the sdk's ShowSasCallbacks

function track(request) {
  const rid = requests.length;
  requests.push(request);
  let phase = null;
  const onChange = () => {
    if (request.phase !== phase) {
      phase = request.phase;
      emit({
        event: "verification_phase",
        rid,
        phase: cryptoApi.VerificationPhase[phase],
        cancel_code: request.cancellationCode,
      });
    }
    if (request.verifier) follow(rid, request.verifier);
  };
  request.on(cryptoApi.VerificationRequestEvent.Change, onChange);
  onChange();
  return rid;
}

const followed = new Set();

/** Runs a SAS verifier, the one this device started or the peer's start it answers. */
function follow(rid, verifier) {
  if (followed.has(verifier)) return;
  followed.add(verifier);
  verifier.on(cryptoApi.VerifierEvent.ShowSas, (sas) => {
    sasShown.set(rid, sas);
    emit({
      event: "sas",
      rid,
      decimals: sas.sas.decimal ?? null,
      emoji: sas.sas.emoji?.map(([, name]) => name) ?? null,
    });
  });
  verifier.verify().then(
    () => emit({ event: "verification_done", rid }),
    (e) => emit({ event: "verification_failed", rid, error: String(e?.message ?? e) }),
  );
}

function watchVerification(c) {
  c.on(cryptoApi.CryptoEvent.VerificationRequestReceived, (request) => {
    const rid = track(request);
    emit({
      event: "verification_request",
      rid,
      user: request.otherUserId,
      device: request.otherDeviceId ?? null,
      room: request.roomId ?? null,
      transaction_id: request.transactionId ?? null,
    });
  });
}

function request(rid) {
  const found = requests[rid];
  if (!found) throw new Error(`no verification request ${rid}`);
  return found;
}

async function requestVerification({ user, device, room }) {
  const request = room
    ? await crypto().requestVerificationDM(user, room)
    : await crypto().requestDeviceVerification(user, device);
  return { rid: track(request), transaction_id: request.transactionId ?? null };
}

async function acceptVerification({ rid }) {
  await request(rid).accept();
  return {};
}

async function startSas({ rid }) {
  follow(rid, await request(rid).startVerification("m.sas.v1"));
  return {};
}

async function confirmSas({ rid }) {
  const sas = sasShown.get(rid);
  if (!sas) throw new Error(`no short authentication string shown for request ${rid}`);
  await sas.confirm();
  return {};
}

async function mismatchSas({ rid }) {
  const sas = sasShown.get(rid);
  if (!sas) throw new Error(`no short authentication string shown for request ${rid}`);
  sas.mismatch();
  return {};
}

async function cancelVerification({ rid }) {
  await request(rid).cancel();
  return {};
}

// ---------------------------------------------------------------------------------------------
// The command loop

const commands = {
  login,
  create_room: createRoom,
  invite,
  join,
  wait_member: waitMember,
  send_text: sendText,
  shield,
  devices,
  device_status: deviceStatus,
  user_status: userStatus,
  bootstrap_cross_signing: bootstrapCrossSigning,
  isolation,
  request_verification: requestVerification,
  accept_verification: acceptVerification,
  start_sas: startSas,
  confirm_sas: confirmSas,
  mismatch_sas: mismatchSas,
  cancel_verification: cancelVerification,
};

async function run(line) {
  let id = null;
  try {
    const { id: given, cmd, ...args } = JSON.parse(line);
    id = given;
    if (cmd === "quit") {
      session.client?.stopClient();
      process.stdout.write(JSON.stringify({ id, ok: true, result: {} }) + "\n", () => process.exit(0));
      return;
    }
    if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
    const result = await commands[cmd](args);
    process.stdout.write(JSON.stringify({ id, ok: true, result }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ id, ok: false, error: String(e?.stack ?? e) }) + "\n");
  }
}

// Commands run concurrently: a test may wait for a member while confirming a verification.
readline.createInterface({ input: process.stdin }).on("line", (line) => line.trim() && run(line));
process.stdin.on("end", () => {
  session.client?.stopClient();
  process.exit(0);
});
