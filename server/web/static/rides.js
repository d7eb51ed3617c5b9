// Pieces shared by the board and the ride page: a ride's card and booking a seat.
import { api, profile } from "./session.js";
import { avatar, fmtDeparture, fmtPrice, h, toast } from "./ui.js";

export function seatsLabel(ride) {
  if (ride.status === "cancelled") return "Cancelled";
  if (ride.seats_available === 0) return "Full";
  return ride.seats_available === 1 ? "1 seat left" : `${ride.seats_available} seats left`;
}

export async function book(ctx, ride, button) {
  button.disabled = true;
  try {
    const booking = await api("POST", `/rides/${ride.id}/bookings`, { seats: 1 });
    ctx.bookings.put(booking);
    toast(booking.status === "confirmed" ? "Seat booked. Have a good ride!" : "Request sent to the driver", "success");
  } catch (err) {
    toast(err.message, "error");
  } finally {
    button.disabled = false;
  }
}

/** The booking control for a ride: "Book a seat", my booking's state, or "Your ride". */
export function bookingControl(ctx, ride) {
  if (ride.driver_id === ctx.me.id) return h("span", { class: "chip chip-own", "data-testid": "own" }, "Your ride");
  const mine = ctx.bookings.active(ride.id);
  if (mine?.status === "confirmed") return h("span", { class: "chip chip-ok", "data-testid": "booked" }, "✓ Booked");
  if (mine) return h("span", { class: "chip chip-wait", "data-testid": "booked" }, "Requested");
  if (ride.status !== "scheduled" || ride.seats_available < 1) return null;
  const button = h("button", { class: "btn btn-primary btn-small", "data-testid": "book" }, "Book a seat");
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    book(ctx, ride, button);
  });
  return button;
}

export function rideCard(ctx, ride) {
  const when = fmtDeparture(ride.departure_at);
  const driver = h("span", { class: "driver" });
  const fillDriver = (d) => driver.replaceChildren(avatar(d, "avatar-small"), h("span", {}, d.display_name));
  if (ride.driver) fillDriver(ride.driver);
  else profile(ride.driver_id).then(fillDriver);
  const low = ride.seats_available <= 1 ? " seats-low" : "";
  return h("article", {
    class: `ride${ride.status !== "scheduled" ? " ride-off" : ""}`, "data-testid": "ride-card",
    "data-ride-id": ride.id, tabindex: 0, role: "link",
    onclick: () => { location.hash = `#/ride/${ride.id}`; },
    onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/ride/${ride.id}`; },
  },
    h("div", { class: "ride-when" }, h("strong", {}, when.time), h("span", {}, when.day)),
    h("div", { class: "ride-main" },
      h("div", { class: "route" },
        h("span", { class: "place", "data-testid": "origin" }, ride.origin),
        h("span", { class: "arrow", "aria-hidden": "true" }, "→"),
        h("span", { class: "place", "data-testid": "destination" }, ride.destination)),
      h("div", { class: "ride-meta" }, driver,
        ride.kind === "taxi_share" ? h("span", { class: "chip" }, "Taxi share") : null,
        ride.instant_booking ? h("span", { class: "chip chip-instant", title: "Instant booking" }, "⚡ Instant") : null)),
    h("div", { class: "ride-side" },
      h("span", { class: "price" }, fmtPrice(ride.price, ride.currency)),
      h("span", { class: `seats${low}`, "data-testid": "seats" }, seatsLabel(ride)),
      bookingControl(ctx, ride)));
}
