// The Kuda demo: sign in, the live ride board, a ride's page with chat. Plain ES modules over the
// JS SDK (served from /static/sdk/, the SDK's own source), no build step.
import { Kuda } from "/static/sdk/index.js";
import * as session from "./session.js";
import { avatar, clear, h, toast } from "./ui.js";
import { authView } from "./auth.js";
import { Board } from "./board.js";
import { RidePage } from "./ride.js";
import { Bell } from "./notifications.js";
import { MyBookings } from "./bookings.js";

const app = document.getElementById("app");
const ctx = { kuda: null, me: null, bookings: null, bell: null, view: null };
window.kudaDemo = ctx; // for the curious (and the browser test)

const LABELS = {
  connected: "Live",
  connecting: "Connecting…",
  disconnected: "Reconnecting…",
  closed: "Disconnected",
  idle: "Offline",
};

function showConnection(state, info = {}) {
  const pill = document.querySelector("[data-testid=connection]");
  let label = LABELS[state] ?? state;
  if (state === "disconnected" && !navigator.onLine) label = "Offline";
  else if (state === "disconnected" && info.delayMs > 1500) {
    label = `Reconnecting in ${Math.ceil(info.delayMs / 1000)} s`;
  }
  pill.dataset.state = state;
  pill.querySelector(".conn-text").textContent = label;
  pill.title = info.reason ? `${label} (${info.code ?? ""} ${info.reason})` : label;
}

function route() {
  ctx.view?.destroy();
  clear(app);
  const match = location.hash.match(/^#\/ride\/(\d+)/);
  ctx.view = match ? new RidePage(ctx, app, Number(match[1])) : new Board(ctx, app);
  window.scrollTo(0, 0);
}

function renderUser() {
  const slot = clear(document.getElementById("user-slot"));
  if (!ctx.me) return;
  slot.append(
    h("div", { class: "user-menu" },
      avatar(ctx.me),
      h("span", { class: "user-name", "data-testid": "me" }, ctx.me.display_name),
      h("button", { class: "btn btn-ghost btn-small", onclick: signOut, "data-testid": "sign-out" }, "Sign out")),
  );
}

function signOut() {
  ctx.view?.destroy();
  ctx.bell?.destroy();
  ctx.kuda?.close();
  session.signOut();
  Object.assign(ctx, { kuda: null, me: null, bookings: null, bell: null, view: null });
  clear(document.getElementById("bell-slot"));
  renderUser();
  showConnection("idle");
  showAuth();
}

function showAuth() {
  clear(app);
  app.append(authView(() => start()));
}

async function start() {
  if (!session.current()) return showAuth();
  try {
    ctx.me = await session.api("GET", "/users/me");
  } catch (err) {
    if (err.status === 401) return signOut();
    toast(err.message, "error");
    setTimeout(start, 3000);
    return;
  }
  const kuda = new Kuda({ url: location.origin, getToken: session.getToken });
  ctx.kuda = kuda;
  kuda.on("state", showConnection);
  kuda.on("unauthorized", () => {
    toast("Your session ended: please sign in again", "error");
    signOut();
  });
  addEventListener("offline", () => showConnection(kuda.state, kuda.info));
  ctx.bookings = new MyBookings(ctx);
  ctx.bell = new Bell(ctx, document.getElementById("bell-slot"));
  renderUser();
  kuda.connect().catch(() => {});
  route();
}

addEventListener("hashchange", () => ctx.me && route());
start();
