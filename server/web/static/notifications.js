// The notifications bell: unread count and the latest notifications, pushed on `user:{me}`.
import { api, snapshot } from "./session.js";
import { clear, fill, fmtClock, h, toast } from "./ui.js";

function route(data) {
  const ride = data.ride ?? {};
  const id = data.booking?.ride_id ?? ride.id ?? data.ride_id;
  const path = ride.origin ? `${ride.origin} → ${ride.destination}` : data.origin ? `${data.origin} → ${data.destination}` : "";
  return { id, path };
}

const TEXT = {
  "booking.requested": "New booking request",
  "booking.confirmed": "Booking confirmed",
  "booking.rejected": "Booking declined",
  "booking.cancelled": "Booking cancelled",
  "ride.updated": "Your ride changed",
  "ride.cancelled": "Ride cancelled",
  "ride.matched": "A new ride matches your alert",
  "ride.reminder": "Your ride leaves soon",
  "review.created": "You got a new review",
};

export function describe(note) {
  const { path } = route(note.data ?? {});
  return `${TEXT[note.kind] ?? note.kind}${path ? `: ${path}` : ""}`;
}

export class Bell {
  constructor(ctx, slot) {
    this.ctx = ctx;
    this.items = [];
    this.unread = 0;
    this.badge = h("span", { class: "badge", "data-testid": "badge", hidden: true });
    this.panel = h("div", { class: "panel", hidden: true, "data-testid": "notifications" });
    this.button = h("button", { class: "bell", "aria-label": "Notifications", "data-testid": "bell",
      onclick: () => this.toggle() }, bellIcon(), this.badge);
    this.closer = (e) => !slot.contains(e.target) && this.toggle(false);
    document.addEventListener("click", this.closer);
    fill(slot, h("div", { class: "bell-wrap" }, this.button, this.panel));
    this.load();
  }

  async load() {
    try {
      // Two fenced reads: the list as of seq `listSeq`, the count as of `countSeq`. Following
      // `user:{me}` from the lower one, an event adds to the list only past `listSeq` and to the
      // count only past `countSeq`: nothing is missed or counted twice.
      const [list, count] = await Promise.all([
        snapshot("/notifications?limit=20"),
        snapshot("/notifications/unread-count"),
      ]);
      this.items = list.body.items;
      this.unread = count.body.unread;
      this.listSeq = list.seq;
      this.countSeq = count.seq;
      this.sub?.unsubscribe();
      const since = Math.min(list.seq, count.seq);
      this.sub = this.ctx.kuda.subscribe(`user:${this.ctx.me.id}`, (f) => this.onFrame(f), { since });
      this.render();
    } catch (err) {
      setTimeout(() => this.load(), 3000);
    }
  }

  onFrame(frame) {
    if (frame.type === "reset") return this.load();
    if (frame.event !== "notification.created") return;
    if (frame.seq > this.listSeq) {
      this.items = [frame.data, ...this.items.filter((n) => n.id !== frame.data.id)].slice(0, 20);
      toast(describe(frame.data), "info");
    }
    if (frame.seq > this.countSeq) this.unread += 1;
    this.render();
  }

  toggle(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.button.classList.toggle("open", open);
  }

  async readAll() {
    await api("POST", "/notifications/read-all").catch((err) => toast(err.message, "error"));
    this.unread = 0;
    this.items = this.items.map((n) => ({ ...n, read_at: n.read_at ?? new Date().toISOString() }));
    this.render();
  }

  render() {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = this.unread > 99 ? "99+" : String(this.unread);
    const list = this.items.map((note) => {
      const { id } = route(note.data ?? {});
      return h("a", { class: `note${note.read_at ? "" : " unread"}`, href: id ? `#/ride/${id}` : "#/",
        onclick: () => this.toggle(false) },
        h("span", { class: "note-text" }, describe(note)),
        h("time", {}, fmtClock(note.created_at)));
    });
    fill(this.panel, 
      h("div", { class: "panel-head" }, h("strong", {}, "Notifications"),
        this.unread ? h("button", { class: "btn btn-ghost btn-small", onclick: () => this.readAll() }, "Mark all read") : null),
      list.length ? list : h("p", { class: "muted center" }, "Nothing yet"));
  }

  destroy() {
    this.sub?.unsubscribe();
    document.removeEventListener("click", this.closer);
  }
}

function bellIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.innerHTML = '<path d="M12 3a6 6 0 0 0-6 6v3.6l-1.6 2.7A1 1 0 0 0 5.3 17h13.4a1 1 0 0 0 .9-1.7L18 12.6V9a6 6 0 0 0-6-6zm-2.5 15a2.5 2.5 0 0 0 5 0z" fill="currentColor"/>';
  return svg;
}
