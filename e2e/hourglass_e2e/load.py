"""Traffic: one SDK client per customer sending seeded events through the balancer, as users' apps do.

Everything random comes from the run's seed (customer shares, event types, users, properties, times
within their hour, event ids), so a run's events are the same for the same seed; only how they interleave
with the faults depends on the machine. Customers' volumes follow a Zipf law, like event types and users:
a few customers and types carry most of the traffic.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Set, Tuple

from hourglass import BatchResult, Client, ClientStats

from hourglass_e2e.platform import Customer

EVENT_TYPES = [
    "page_view",
    "click",
    "search",
    "add_to_cart",
    "checkout_started",
    "checkout_completed",
    "signup",
    "login",
    "video_play",
    "share",
    "error",
    "download",
]
PLANS = ["free", "pro", "team", "enterprise"]


def zipf_weights(count: int, exponent: float = 1.1) -> List[float]:
    weights = [1.0 / (rank + 1) ** exponent for rank in range(count)]
    total = sum(weights)
    return [weight / total for weight in weights]


def split(total: int, weights: Sequence[float]) -> List[int]:
    """``total`` split by ``weights`` into whole numbers that add up to it."""
    counts = [int(total * weight) for weight in weights]
    for index in range(total - sum(counts)):
        counts[index % len(counts)] += 1
    return counts


def hour_start(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class CustomerTraffic:
    """What one customer's client sent and what became of it."""

    customer: Customer
    client: Client
    rng: random.Random
    #: event id -> the hour it belongs to, for every event given to the client.
    sent: Dict[str, datetime] = field(default_factory=dict)
    #: ids sent deliberately invalid (the collectors must reject them).
    invalid: Set[str] = field(default_factory=set)
    accepted: Set[str] = field(default_factory=set)
    rejected: Dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_ack(self, result: BatchResult) -> None:
        with self.lock:
            self.accepted.update(result.accepted_ids)
            for rejection in result.rejections:
                self.rejected[rejection.event_id] = rejection.reason


class Traffic:
    """The clients of one scenario: ``start`` sends ``total`` events (at ``rate`` events/s in all, or as
    fast as the platform takes them), ``finish`` waits for every ack and closes the clients."""

    def __init__(
        self,
        target: str,
        customers: List[Customer],
        seed: str,
        hours: List[Tuple[datetime, float]],
        weights: Optional[List[float]] = None,
        max_queued_events: int = 5_000,
    ):
        self.hours = hours
        self.weights = weights or zipf_weights(len(customers))
        self.customers: List[CustomerTraffic] = []
        self.type_weights = zipf_weights(len(EVENT_TYPES), 1.2)
        for customer in customers:
            traffic = CustomerTraffic(customer, None, random.Random(f"{seed}/{customer.name}"))  # type: ignore[arg-type]
            traffic.client = Client(
                target,
                customer.ingest_key,
                batch_size=100,
                linger_ms=20,
                streams=2,
                max_in_flight_batches=16,
                # Bounded: a platform that stops acking (Kafka down) blocks `track` once this many events
                # wait, which is the backpressure a user's app sees.
                max_queued_events=max_queued_events,
                max_block_secs=None,
                max_backoff_secs=2.0,
                on_ack=traffic.on_ack,
            )
            self.customers.append(traffic)
        self._threads: List[threading.Thread] = []
        self.errors: List[BaseException] = []
        self.started_at = 0.0
        self.sent_all_at: Optional[float] = None

    def _event(self, traffic: CustomerTraffic, invalid: bool) -> str:
        rng = traffic.rng
        hour = rng.choices([hour for hour, _ in self.hours], [weight for _, weight in self.hours])[0]
        occurred = min(hour + timedelta(seconds=rng.uniform(0, 3599)), datetime.now(timezone.utc) - timedelta(seconds=1))
        occurred = max(occurred, hour)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event_type = "" if invalid else rng.choices(EVENT_TYPES, self.type_weights)[0]
        user = f"user-{int(rng.paretovariate(1.2)) % 5000}"
        traffic.client.track(
            event_type,
            user_id=user,
            event_id=event_id,
            timestamp=occurred,
            plan=rng.choice(PLANS),
            amount=round(rng.uniform(1, 500), 2),
            trial=rng.random() < 0.2,
        )
        with traffic.lock:
            traffic.sent[event_id] = hour_start(occurred)
            if invalid:
                traffic.invalid.add(event_id)
        return event_id

    def _send(self, traffic: CustomerTraffic, count: int, rate: Optional[float], invalid_every: int) -> None:
        try:
            started = time.monotonic()
            for index in range(count):
                if rate and index % 10 == 0:
                    ahead = started + index / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                self._event(traffic, invalid=invalid_every > 0 and index % invalid_every == invalid_every - 1)
        except BaseException as error:  # noqa: BLE001 - reported by finish()
            self.errors.append(error)

    def start(self, total: int, rate: Optional[float] = None, invalid_every: int = 0) -> None:
        """Sends ``total`` events, split over the customers by their weights, each customer at its share
        of ``rate``; ``invalid_every`` N: every Nth event of each customer has no event type."""
        self.started_at = time.monotonic()
        for traffic, count, weight in zip(self.customers, split(total, self.weights), self.weights):
            thread = threading.Thread(
                target=self._send,
                args=(traffic, count, rate * weight if rate else None, invalid_every),
                name=f"traffic-{traffic.customer.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def sending(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def finish(self, timeout_secs: float = 300.0) -> float:
        """Waits until everything is sent and acknowledged; closes the clients. Returns the seconds from
        the start of sending to the last ack."""
        deadline = time.monotonic() + timeout_secs
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 1))
        if self.errors:
            raise RuntimeError(f"sending failed: {self.errors[0]!r}") from self.errors[0]
        if self.sending():
            raise TimeoutError(f"still sending after {timeout_secs:.0f} s")
        for traffic in self.customers:
            traffic.client.close(timeout=max(deadline - time.monotonic(), 1))
        return time.monotonic() - self.started_at

    def abandon(self) -> None:
        """Closes the clients without waiting (a scenario that failed)."""
        for traffic in self.customers:
            try:
                traffic.client.close(timeout=1)
            except Exception:  # noqa: BLE001 - whatever was pending is given up
                pass

    def stats(self) -> ClientStats:
        """The clients' counters, summed."""
        total = ClientStats()
        for traffic in self.customers:
            stats = traffic.client.stats()
            for name in ClientStats.__dataclass_fields__:
                if name == "stream_errors":
                    for code, count in stats.stream_errors.items():
                        total.stream_errors[code] = total.stream_errors.get(code, 0) + count
                else:
                    setattr(total, name, getattr(total, name) + getattr(stats, name))
        return total

    def acked(self) -> int:
        return sum(len(traffic.accepted) for traffic in self.customers)
