// A ride's page: its details kept current by `ride:{id}`, and for its members the chat on
// `ride:{id}:chat` with typing and presence. Both start from a REST snapshot and subscribe with
// `since` = its Kuda-Seq, so nothing is missed or shown twice between the two.
import { profile, snapshot } from "./session.js";
import { bookingControl, seatsLabel } from "./rides.js";
import { avatar, clear, fill, fmtClock, fmtDeparture, fmtPrice, h, toast } from "./ui.js";

const TYPING_MS = 3000; // how long a `typing` event shows
const TYPING_EVERY_MS = 1500;

export class RidePage {
  constructor(ctx, root, rideId) {
    this.ctx = ctx;
    this.id = rideId;
    this.chatName = `ride:${rideId}:chat`;
    this.details = h("section", { class: "card ride-details", "data-testid": "ride-details" },
      h("p", { class: "muted" }, "Loading…"));
    this.chat = h("section", { class: "card chat", "data-testid": "chat" });
    this.subs = [];
    this.cleanups = [ctx.bookings.onChange(() => this.refresh())];
    root.append(
      h("a", { class: "back", href: "#/" }, "← All rides"),
      h("div", { class: "ride-layout" }, this.details, this.chat));
    this.load();
  }

  async load() {
    try {
      const { body, seq } = await snapshot(`/rides/${this.id}`);
      this.ride = body;
      this.subs.push(this.ctx.kuda.subscribe(`ride:${this.id}`, (f) => this.onRide(f), { since: seq }));
      this.refresh();
    } catch (err) {
      fill(this.details, h("p", { class: "empty-title" }, err.status === 404 ? "No such ride" : err.message));
    }
  }

  async onRide(frame) {
    if (frame.type === "reset") {
      this.ride = (await snapshot(`/rides/${this.id}`)).body;
    } else if (frame.event.startsWith("ride.")) {
      this.ride = { ...frame.data, driver: frame.data.driver ?? this.ride.driver };
    } else if (frame.event.startsWith("booking.")) {
      this.ride = { ...this.ride, seats_available: frame.data.seats_available };
    }
    this.refresh();
  }

  member() {
    const mine = this.ctx.bookings.active(this.id);
    return this.ride.driver_id === this.ctx.me.id || mine?.status === "confirmed";
  }

  refresh() {
    if (!this.ride) return;
    this.renderDetails();
    if (this.member() && !this.chatting) this.startChat();
    else if (!this.member() && !this.chatting) this.renderChatLocked();
  }

  renderDetails() {
    const ride = this.ride;
    const when = fmtDeparture(ride.departure_at);
    const driver = ride.driver ?? { id: ride.driver_id, display_name: "Driver" };
    const taken = ride.seats_total - ride.seats_available;
    const seatDots = Array.from({ length: ride.seats_total }, (_, i) =>
      h("span", { class: `seat${i < taken ? " taken" : ""}`, title: i < taken ? "Taken" : "Free" }));
    fill(this.details, 
      h("div", { class: "route big" },
        h("span", { class: "place" }, ride.origin), h("span", { class: "arrow" }, "→"),
        h("span", { class: "place" }, ride.destination)),
      h("p", { class: "when" }, `${when.day} · ${when.time}`,
        ride.status !== "scheduled" ? h("span", { class: `chip chip-status ${ride.status}` }, ride.status) : null),
      h("div", { class: "facts" },
        fact("Price", fmtPrice(ride.price, ride.currency)),
        fact("Seats", h("span", { "data-testid": "ride-seats" }, seatsLabel(ride))),
        fact("Booking", ride.instant_booking ? "Instant" : "Driver approves")),
      h("div", { class: "seat-map", "aria-label": `${taken} of ${ride.seats_total} seats taken` }, seatDots),
      ride.notes ? h("p", { class: "notes" }, ride.notes) : null,
      h("div", { class: "driver-row" }, avatar(driver, "avatar-large"),
        h("div", {}, h("strong", {}, driver.display_name),
          h("span", { class: "muted" }, driver.rating_count ? ` ★ ${driver.rating_avg.toFixed(1)} (${driver.rating_count})` : " New driver"))),
      h("div", { class: "details-action" }, bookingControl(this.ctx, ride)));
  }

  renderChatLocked() {
    fill(this.chat, 
      h("div", { class: "card-head" }, h("h2", {}, "Ride chat")),
      h("div", { class: "empty" }, h("p", { class: "empty-title" }, "Chat is for the driver and passengers"),
        h("p", {}, "Book a seat to talk with the driver and fellow passengers.")));
  }

  async startChat() {
    this.chatting = true;
    this.messages = new Map();
    this.typing = new Map();
    this.presentEl = h("div", { class: "presence", "data-testid": "presence" });
    this.list = h("div", { class: "messages", "data-testid": "messages" });
    this.typingEl = h("div", { class: "typing", "data-testid": "typing", "aria-live": "polite" });
    const input = h("input", { placeholder: "Write a message…", maxlength: 2000, "data-testid": "message-input",
      autocomplete: "off", oninput: () => this.onInput() });
    const send = h("button", { class: "btn btn-primary", type: "submit", "data-testid": "send" }, "Send");
    const form = h("form", { class: "composer", onsubmit: (e) => this.onSend(e, input, send) }, input, send);
    fill(this.chat, 
      h("div", { class: "card-head" }, h("h2", {}, "Ride chat"), this.presentEl),
      this.list, this.typingEl, form);
    try {
      const { body, seq } = await snapshot(`/rides/${this.id}/messages?limit=50`);
      for (const message of body.items.reverse()) this.messages.set(message.id, message);
      this.renderMessages();
      const kuda = this.ctx.kuda;
      this.subs.push(kuda.subscribe(this.chatName, (f) => this.onChat(f), {
        since: seq,
        onState: (state) => state === "revoked" && this.stopChat(),
      }));
      this.subs.push(kuda.watchPresence(this.chatName, (users) => this.renderPresence(users)));
    } catch (err) {
      toast(err.message, "error");
    }
  }

  stopChat() {
    this.chatting = false;
    toast("You left this ride's chat", "info");
    this.renderChatLocked();
  }

  async onChat(frame) {
    if (frame.type === "reset") {
      const { body } = await snapshot(`/rides/${this.id}/messages?limit=50`);
      this.messages = new Map(body.items.reverse().map((m) => [m.id, m]));
    } else if (frame.event === "message.created") {
      this.messages.set(frame.data.id, frame.data);
      this.typing.delete(frame.data.author_id);
    } else if (frame.event === "typing") {
      this.typing.set(frame.data.user_id, Date.now());
      setTimeout(() => this.renderTyping(), TYPING_MS + 50);
      return this.renderTyping();
    } else return;
    this.renderMessages();
    this.renderTyping();
  }

  onInput() {
    // At most one `typing` op per TYPING_EVERY_MS while keys are pressed, the last one trailing.
    if (this.typingTimer) return;
    const wait = Math.max(0, (this.typedAt ?? 0) + TYPING_EVERY_MS - Date.now());
    this.typingTimer = setTimeout(() => {
      this.typingTimer = null;
      this.typedAt = Date.now();
      this.ctx.kuda.typing(this.chatName);
    }, wait);
  }

  async onSend(event, input, button) {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    input.value = "";
    button.disabled = true;
    try {
      const message = await this.ctx.kuda.send(this.chatName, body);
      this.messages.set(message.id, message);
      this.renderMessages();
    } catch (err) {
      input.value = body;
      toast(err.message, "error");
    } finally {
      button.disabled = false;
      input.focus();
    }
  }

  renderMessages() {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    clear(this.list);
    const messages = [...this.messages.values()].sort((a, b) => a.id - b.id);
    if (!messages.length) this.list.append(h("p", { class: "muted center" }, "No messages yet. Say hi!"));
    let previous = null;
    for (const message of messages) {
      const mine = message.author_id === this.ctx.me.id;
      const name = h("span", { class: "author" });
      if (!mine && previous !== message.author_id) {
        profile(message.author_id).then((u) => { name.textContent = u.display_name; });
      }
      this.list.append(h("div", { class: `msg${mine ? " mine" : ""}`, "data-testid": "message" },
        !mine && previous !== message.author_id ? name : null,
        h("div", { class: "bubble" }, h("span", { class: "body" }, message.body),
          h("time", {}, fmtClock(message.created_at)))));
      previous = message.author_id;
    }
    if (atBottom || messages.length < 12) this.list.scrollTop = this.list.scrollHeight;
  }

  async renderTyping() {
    const now = Date.now();
    const ids = [...this.typing].filter(([, at]) => now - at < TYPING_MS).map(([id]) => id);
    if (!ids.length) return void (this.typingEl.textContent = "");
    const names = (await Promise.all(ids.map(profile))).map((u) => u.display_name.split(" ")[0]);
    this.typingEl.replaceChildren(h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
      `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`);
  }

  async renderPresence(ids) {
    const users = await Promise.all(ids.map(profile));
    this.presentEl.replaceChildren(...users.map((u) => avatar(u, "avatar-small")),
      h("span", { class: "muted" }, `${users.length} here`));
    this.presentEl.dataset.users = ids.join(",");
  }

  destroy() {
    clearTimeout(this.typingTimer);
    for (const sub of this.subs) sub.unsubscribe();
    for (const off of this.cleanups) off();
  }
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("span", { class: "fact-label" }, label), h("strong", {}, value));
}
