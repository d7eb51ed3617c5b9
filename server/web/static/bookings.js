// My bookings, kept current from `user:{me}` (booking.* events of my own bookings).
import { api } from "./session.js";

export class MyBookings {
  constructor(ctx) {
    this.ctx = ctx;
    this.byRide = new Map();
    this.listeners = new Set();
    this.ready = this.load();
    this.sub = ctx.kuda.subscribe(`user:${ctx.me.id}`, (frame) => {
      if (frame.type === "reset") return this.load();
      if (frame.event?.startsWith("booking.") && frame.data.passenger_id === ctx.me.id) this.put(frame.data);
    });
  }

  async load() {
    const page = await api("GET", "/bookings?limit=100").catch(() => ({ items: [] }));
    for (const booking of page.items.reverse()) this.put(booking, false);
    this.emit();
  }

  put(booking, notify = true) {
    const known = this.byRide.get(booking.ride_id);
    if (known && known.id > booking.id && booking.status !== "confirmed") return;
    this.byRide.set(booking.ride_id, booking);
    if (notify) this.emit();
  }

  /** My active booking of a ride (pending or confirmed), if any. */
  active(rideId) {
    const booking = this.byRide.get(rideId);
    return booking && ["pending", "confirmed"].includes(booking.status) ? booking : undefined;
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit() {
    for (const fn of this.listeners) fn();
  }
}
