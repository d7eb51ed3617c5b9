// The live board: the search from REST, kept current by the live-only `rides` channel, and the
// form to publish a ride. `rides` has no history: after a reconnect the search is fetched again.
import { api } from "./session.js";
import { rideCard } from "./rides.js";
import { clear, h, toast } from "./ui.js";

export class Board {
  constructor(ctx, root) {
    this.ctx = ctx;
    this.rides = new Map();
    this.list = h("div", { class: "ride-list", "data-testid": "board" });
    this.count = h("span", { class: "count", "data-testid": "board-count" });
    root.append(h("div", { class: "board-layout" },
      h("section", { class: "card publish" }, publishForm(ctx)),
      h("section", { class: "card board" },
        h("div", { class: "card-head" },
          h("h2", {}, "Live board ", h("span", { class: "live-dot", title: "Updates live" })),
          this.count),
        this.list)));
    this.cleanups = [ctx.bookings.onChange(() => this.render())];
    // Fetch the search once live: each time the `rides` subscription is (re)established, so a ride
    // published before the subscription or while disconnected is never missing.
    this.sub = ctx.kuda.subscribe("rides", (frame) => this.apply(frame), {
      onState: (state) => state === "subscribed" && this.load(),
    });
    this.load();
  }

  async load() {
    const now = new Date().toISOString();
    const serial = (this.loads = (this.loads ?? 0) + 1);
    this.touched = new Map(); // what events said while the search was in flight
    try {
      const page = await api("GET", `/rides?limit=50&departure_from=${encodeURIComponent(now)}`);
      if (serial !== this.loads) return; // a later load is on its way
      this.rides = new Map(page.items.map((ride) => [ride.id, ride]));
      for (const [id, ride] of this.touched) {
        const listed = this.rides.get(id);
        if (listed && ride && listed.updated_at > ride.updated_at) continue; // the search is newer
        if (ride) this.rides.set(id, ride);
        else this.rides.delete(id);
      }
      this.touched = null;
      this.render();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  apply(frame) {
    if (frame.type === "reset") return this.load();
    const ride = frame.data;
    const gone = frame.event === "ride.cancelled" || ride.status !== "scheduled";
    if (gone) this.rides.delete(ride.id);
    else if (frame.event === "ride.created" || this.rides.has(ride.id) || this.touched) {
      const old = this.rides.get(ride.id);
      this.rides.set(ride.id, { ...old, ...ride, driver: ride.driver ?? old?.driver });
    }
    this.touched?.set(ride.id, gone ? null : this.rides.get(ride.id));
    this.render();
  }

  render() {
    const rides = [...this.rides.values()].sort((a, b) => a.departure_at.localeCompare(b.departure_at));
    this.count.textContent = rides.length === 1 ? "1 ride" : `${rides.length} rides`;
    clear(this.list);
    if (!rides.length) {
      this.list.append(h("div", { class: "empty" },
        h("p", { class: "empty-title" }, "No rides yet"),
        h("p", {}, "Publish the first one: it appears here for everyone, live.")));
    }
    for (const ride of rides) this.list.append(rideCard(this.ctx, ride));
  }

  destroy() {
    this.sub.unsubscribe();
    for (const off of this.cleanups) off();
  }
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function publishForm(ctx) {
  const soon = new Date(Date.now() + 2 * 3600_000);
  soon.setMinutes(0, 0, 0);
  const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);
  const origin = h("input", { required: true, maxlength: 200, placeholder: "Innopolis", "data-testid": "origin-input" });
  const destination = h("input", { required: true, maxlength: 200, placeholder: "Kazan", "data-testid": "destination-input" });
  const departure = h("input", { type: "datetime-local", required: true, value: localInput(soon), "data-testid": "departure-input" });
  const seats = h("input", { type: "number", min: 1, max: 8, value: 3, required: true, "data-testid": "seats-input" });
  const price = h("input", { type: "number", min: 0, step: 10, value: 300, "data-testid": "price-input" });
  const instant = h("input", { type: "checkbox", checked: true, "data-testid": "instant-input" });
  const submit = h("button", { class: "btn btn-primary btn-block", type: "submit", "data-testid": "publish" }, "Publish ride");

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    try {
      const ride = await api("POST", "/rides", {
        origin: origin.value.trim(),
        destination: destination.value.trim(),
        departure_at: new Date(departure.value).toISOString(),
        seats_total: Number(seats.value),
        price: price.value === "" ? null : Number(price.value),
        instant_booking: instant.checked,
      });
      toast(`Published: ${ride.origin} → ${ride.destination}`, "success");
      origin.value = destination.value = "";
    } catch (err) {
      const detail = Array.isArray(err.details) ? `: ${err.details[0]?.message}` : "";
      toast(err.message + detail, "error");
    } finally {
      submit.disabled = false;
    }
  }

  return h("form", { onsubmit: onSubmit, "data-testid": "publish-form" },
    h("h2", {}, "Offer a ride"),
    h("p", { class: "muted" }, `Driving somewhere, ${ctx.me.display_name.split(" ")[0]}? Share the empty seats.`),
    h("div", { class: "row" }, field("From", origin), field("To", destination)),
    field("Departure", departure),
    h("div", { class: "row" }, field("Seats", seats), field("Price per seat, ₽", price)),
    h("label", { class: "check" }, instant, h("span", {}, "Instant booking (no approval needed)")),
    submit);
}
