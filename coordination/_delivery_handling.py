"""The router's consuming half: from a bus's deliveries to handlers run once, dead letters and acks.

    handling = DeliveryHandling(config, subscribers_for, history=..., flow=..., counts=...)
    handling.attach(dedup_store, dead_letter_queue)     # once the router is connected
    await handling.consume("data", broker, topic)       # one task per bus, until cancelled
    await handling.stop()                                # retries released, pending settles awaited

Every delivery goes: decode -> strict validation -> dedup claim -> handlers (first attempts, one
timer for all of them: handlers.first_attempts) -> dedup settle -> ack. A batch's claims travel in
one round trip, made while the batch before it is handled (coordination._claimed_batches); its
commits and acks together after it, off the consumer's path (never an ack before its mark: if the
process dies in between, the record comes back and is dropped as a duplicate, or handled again when
its mark never landed). A consumer that stops commits and acknowledges what it handled and releases
the claims of what it did not, so that those records come back as first deliveries.
A handler that fails its first attempt is retried beside the stream (coordination._retries): the
events behind it go on; its record is acknowledged when the retries end, handled or dead-lettered.
Redeliveries go one at a time through `_handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any

from brokers.base import Broker, Delivery, ack_all
from brokers.dedup import DedupStore, Verdict
from coordination._claimed_batches import ClaimedBatch, ClaimedBatches
from coordination._deadlines import Deadlines
from coordination._retries import Retries
from coordination.config import RouterConfig
from coordination.dlq import DeadLetterQueue, Stage, dead_letter_for
from coordination.handlers import Failures, RetryPolicy, Subscriber, first_attempts, retry_handler
from schemas.envelope import EventSource, RouterEvent
from schemas.events import UnknownEventTypeError, validate_event_type

__all__ = ["NO_CONTENT_DEDUP_PREFIX", "ORIGIN", "DeliveryHandling"]

log = logging.getLogger("coordination.event_router")
NO_CONTENT_DEDUP_PREFIX = "nodedup-"
ORIGIN = {"data": EventSource.DATA_BUS, "stage": EventSource.STAGE_BUS, "cross": EventSource.CROSS_PROCESS}
_RETRY_LIMIT = 512  # events in retry at once per router; a consumer with more waits (back-pressure)
# What became of a claimed delivery: handled, its dedup commit left to the batch (_DONE); settled, only
# its ack is left (_SETTLED); in retry, which commits and acknowledges it when it ends (_DEFERRED).
_DONE, _SETTLED, _DEFERRED = "done", "settled", "deferred"


class DeliveryHandling:
    def __init__(self, config: RouterConfig, subscribers_for: Callable[[str], tuple[Subscriber, ...]], *,
                 history: deque[RouterEvent], flow: Counter[tuple[str, str, str]], counts: Counter[str]) -> None:
        self.config = config
        self.policy = RetryPolicy(config.handler_timeout_s, config.max_attempts, config.retry_initial_s,
                                  config.retry_max_s)
        self._subscribers_for = subscribers_for
        self._history, self._flow, self._counts = history, flow, counts
        self._dedup: DedupStore | None = None
        self._dlq: DeadLetterQueue | None = None
        self._attempts = Deadlines(config.handler_timeout_s)  # every consumer's handler attempts, one timer
        self._retries = Retries(_RETRY_LIMIT)
        self._settling: set[asyncio.Task[None]] = set()
        self._valid_types: set[str] = set()

    def attach(self, dedup: DedupStore, dlq: DeadLetterQueue) -> None:
        self._dedup, self._dlq = dedup, dlq

    async def stop(self) -> None:
        """After the consumers were cancelled: retries end (each releases its claim, so its record
        comes back and is handled anew), then the pending commits and acks get 5 s to land."""
        await self._retries.cancel_all()
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=5.0)
        self._dedup = self._dlq = None

    async def consume(self, bus: str, broker: Broker, topic: str) -> None:
        c = self.config
        me = asyncio.current_task()
        # The cancelling() checks: a cancellation swallowed somewhere below must still end the loop.
        while me is None or not me.cancelling():
            try:
                # reads of a few batches at once: fewer round trips to the broker (and to the Kafka
                # bus's attempt store) per record, while the batches are claimed and handled one by one
                reads = broker.consume_batches(topic, c.group, c.consumer, start=c.start_position,
                                               claim_idle_ms=c.claim_idle_ms, batch_size=4 * c.consume_batch)
                async with ClaimedBatches(reads, functools.partial(self._claim_ahead, bus), self._let_go,
                                          limit=c.consume_batch) as batches:
                    async for batch in batches:
                        await self._handle_batch(bus, batch)
                        if me is not None and me.cancelling():
                            return
            except asyncio.CancelledError:
                raise
            except Exception:
                if me is not None and me.cancelling():
                    return
                log.exception("router consumer of %s (%s) failed; restarting in 1 s", topic, bus)
                await asyncio.sleep(1.0)

    # -- one batch, one delivery ------------------------------------------------------------------

    def _claim_ahead(self, bus: str, deliveries: list[Delivery]) -> ClaimedBatch:
        """Start the claims of a batch's first deliveries (ClaimedBatches calls this while the batch
        before it is handled)."""
        claimable = [d for d in deliveries if self._claimable(d)]
        if not claimable:
            return ClaimedBatch(deliveries, claimable, None)
        assert self._dedup is not None
        items = [(d.event, self._position(bus, d), self._content_dedup(d.event)) for d in claimable]  # type: ignore[arg-type]
        return ClaimedBatch(deliveries, claimable, asyncio.ensure_future(self._dedup.claim_many(items)))  # type: ignore[arg-type]

    async def _handle_batch(self, bus: str, batch: ClaimedBatch) -> None:
        """Handlers in order, with the verdicts claimed ahead; then the commits and acks together, in
        the background. Deliveries that could not be claimed ahead go through `_handle`. Interrupted
        (stop, or the store failed), what was handled is still committed and acknowledged, and the
        claims of what was not are released."""
        if batch.claim is None:
            for delivery in batch.deliveries:
                await self._handle(bus, delivery)
            return
        try:
            verdicts = await asyncio.shield(batch.claim)  # cancelled, the claim may still land: let it, then release
        except asyncio.CancelledError:
            self._let_go([batch])
            raise
        if len(batch.claimable) == len(batch.deliveries):
            pairs: Any = zip(batch.deliveries, verdicts, strict=True)
        else:
            by_delivery = dict(zip(map(id, batch.claimable), verdicts, strict=True))
            pairs = ((d, by_delivery.get(id(d))) for d in batch.deliveries)
        done: list[RouterEvent] = []
        acks: list[Delivery] = []
        handled = 0  # deliveries of the batch settled or handed to retries, in order
        try:
            for delivery, verdict in pairs:
                if verdict is None:
                    await self._handle(bus, delivery)
                else:
                    settled = await self._settle_claim(bus, delivery, verdict)
                    if settled is _DONE:
                        done.append(delivery.event)  # type: ignore[arg-type]
                    if settled is not _DEFERRED:
                        acks.append(delivery)
                handled += 1
        finally:
            if done or acks:
                self._in_background(self._commit_then_ack(done, acks))
            if handled < len(batch.deliveries):  # interrupted: what was claimed and not reached is let go
                left = set(map(id, batch.deliveries[handled:]))
                unsettled = [d.event for d, verdict in zip(batch.claimable, verdicts, strict=True)
                             if verdict is Verdict.NEW and id(d) in left]
                if unsettled:
                    self._in_background(self._release(unsettled))  # type: ignore[arg-type]

    async def _handle(self, bus: str, delivery: Delivery) -> None:
        """One delivery, start to ack. Infrastructure errors propagate (no ack: it comes back)."""
        event = delivery.event
        if event is None:
            await self._dead_letter(delivery, bus, "decode", message=delivery.error or "undecodable")
        elif self._elsewhere(event):
            pass
        elif not self._valid(event):
            await self._dead_letter(delivery, bus, "validate", message=f"unknown event type {event.event_type!r}")
        else:
            assert self._dedup is not None
            verdict = await self._dedup.claim(event, self._position(bus, delivery), content=self._content_dedup(event))
            try:
                settled = await self._settle_claim(bus, delivery, verdict)
            except BaseException:
                if verdict is Verdict.NEW:  # interrupted: the record comes back and is claimed anew
                    self._in_background(self._release([event]))
                raise
            if settled is _DEFERRED:
                return
            if settled is _DONE:
                await self._dedup.commit(event)
        await delivery.ack()  # no backend's ack waits for a round trip

    def _claimable(self, delivery: Delivery) -> bool:
        """A first delivery of a valid event for this group: its dedup claim may join a batch.
        Redeliveries go one at a time, so that a record whose handling kills the process is the
        only one whose claim is taken over again (the crash count stays with it)."""
        event = delivery.event
        return delivery.attempt == 1 and event is not None and not self._elsewhere(event) and self._valid(event)

    def _elsewhere(self, event: RouterEvent) -> bool:
        """Addressed to another consumer group (a re-drive): acknowledged, not handled."""
        return bool(event.target_group) and event.target_group != self.config.group

    def _valid(self, event: RouterEvent) -> bool:
        if not self.config.strict_validation or event.event_type in self._valid_types:
            return True
        try:
            validate_event_type(event.event_type, strict=True)
        except (UnknownEventTypeError, ValueError, TypeError):
            return False
        self._valid_types.add(event.event_type)  # known types only: bounded by the catalog
        return True

    def _content_dedup(self, event: RouterEvent) -> bool:
        return not event.event_id.startswith(NO_CONTENT_DEDUP_PREFIX) and \
            event.event_type not in self.config.dedup_exempt_types

    @staticmethod
    def _position(bus: str, delivery: Delivery) -> str:
        return f"{bus}|{delivery.topic}|{delivery.partition}|{delivery.record_id}"

    # -- verdicts, handlers, retries --------------------------------------------------------------

    async def _settle_claim(self, bus: str, delivery: Delivery, verdict: Verdict) -> str:
        """Act on a claim's verdict: _DONE (handlers ran and succeeded: the caller commits the mark and
        acknowledges), _SETTLED (the caller acknowledges) or _DEFERRED (in retry, which does both)."""
        c, event = self.config, delivery.event
        assert event is not None and self._dedup is not None
        if verdict is Verdict.NEW:
            # each handler's first attempt, in order (no coroutine layer of its own: it is per event)
            event.origin = ORIGIN[bus]
            self._history.append(event)
            self._flow["consumed", bus, event.event_type] += 1
            failures = await first_attempts(self._subscribers_for(event.event_type), event, self._attempts)
            if not failures:
                return _DONE
            if self.policy.max_attempts > 1:
                await self._retries.submit(self._retry(bus, delivery, event, failures))
                return _DEFERRED
            await self._give_up_or_recover(bus, delivery, event, failures)
            return _SETTLED
        if verdict is Verdict.CRASHED:
            await self._dead_letter(delivery, bus, "crash", attempts=c.max_deliveries + 1,
                                    message=f"its handling ended its process {c.max_deliveries} times "
                                    f"(max_deliveries={c.max_deliveries}); handlers not called again")
            await self._dedup.fail(event)
        else:
            self._counts["duplicates_prevented" if verdict is Verdict.DUPLICATE_ID
                         else "content_duplicates_prevented"] += 1
            self._flow["deduplicated", bus, event.event_type] += 1
        return _SETTLED

    async def _retry(self, bus: str, delivery: Delivery, event: RouterEvent, failures: Failures) -> None:
        """In a Retries task: the failed handlers' remaining attempts, then the mark and the ack."""
        try:
            await self._give_up_or_recover(bus, delivery, event, failures)
        except asyncio.CancelledError:  # stop(): the record was not acknowledged and comes back
            if self._dedup is not None:
                with contextlib.suppress(Exception):
                    await self._dedup.release(event)
            raise
        except Exception:  # the dedup store or the DLQ failed: let the record go, it comes back
            await delivery.nack()
            raise
        await delivery.ack()

    async def _give_up_or_recover(self, bus: str, delivery: Delivery, event: RouterEvent, failures: Failures) -> None:
        """Retry each handler that failed its first attempt; dead-letter those that keep failing.
        Settles the event's dedup mark: committed when all recovered, else failed."""
        failed = False
        for subscriber, first_failure in failures:
            outcome = await retry_handler(subscriber.handler, event, self.policy, first_failure,
                                          name=subscriber.name)
            self._counts["handler_errors"] += outcome.failures
            self._counts["handler_timeouts"] += outcome.timeouts
            if not outcome.ok:
                failed = True
                await self._dead_letter(delivery, bus, "timeout" if outcome.timed_out else "handle",
                                        exc=outcome.error, handler=outcome.handler, attempts=outcome.attempts,
                                        first_failure_at=outcome.first_failure_at)
        assert self._dedup is not None
        await (self._dedup.fail(event) if failed else self._dedup.commit(event))

    async def _dead_letter(self, delivery: Delivery, bus: str, stage: Stage, **details: Any) -> None:
        assert self._dlq is not None
        letter = dead_letter_for(delivery, stage=stage, bus=bus, group=self.config.group,
                                 node_id=self.config.node_id, **details)
        await self._dlq.put(letter)
        self._flow["dead_lettered", bus, delivery.event.event_type if delivery.event else "(undecodable)"] += 1
        log.warning("dead letter %s: %s %s on %s (%s)", letter.dead_letter_id, stage,
                    letter.handler or "", delivery, letter.message)

    # -- settling in the background ---------------------------------------------------------------

    async def _commit_then_ack(self, done: list[RouterEvent], acks: list[Delivery]) -> None:
        """A batch's dedup commits, then its acks. If the commit fails, the handled records are let go
        unacknowledged (nack): they come back, their claims are taken over, the handlers run again."""
        if done:
            assert self._dedup is not None
            try:
                await self._dedup.commit_many(done)
            except Exception:
                uncommitted = {id(event) for event in done}
                for delivery in acks:
                    await (delivery.nack() if id(delivery.event) in uncommitted else delivery.ack())
                raise
        await ack_all(acks)

    def _let_go(self, batches: list[ClaimedBatch]) -> None:
        """Batches claimed ahead and never handled (the consumer stopped): their claims are released
        once they land."""
        self._in_background(self._release_when_claimed(batches))

    async def _release_when_claimed(self, batches: list[ClaimedBatch]) -> None:
        claims = [b.claim for b in batches if b.claim is not None]
        if claims:
            await asyncio.wait(claims)
        await self._release([d.event for b in batches for d in b.claimed_new()])  # type: ignore[misc]

    async def _release(self, events: list[RouterEvent]) -> None:
        if events and self._dedup is not None:
            await self._dedup.release_many(events)

    def _in_background(self, settling: Coroutine[Any, Any, None]) -> None:
        """Commits and acks do not hold the consumer up; stop() waits for them."""
        task = asyncio.create_task(settling)
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("commit or ack failed (the record will be delivered again): %s", task.exception())
