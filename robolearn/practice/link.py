"""The actor-learner link over gRPC: transitions in, weights out (``link.proto``).

What it does that LeRobot's port of the same design (``lerobot/transport``) does not (see
``../shared/reference/interactive_and_practice.md`` section 5):

- **every actor gets every weight version**: the learner keeps one *newest* weight set and each
  ``StreamWeights`` call tracks the version it last sent, so a push reaches all subscribers
  (LeRobot's streams drain one shared queue: each push reaches one actor). A slow actor skips
  stale versions, never queues them (LeRobot #1523: the queue grew until RAM ran out).
- **no worker starvation**: the server's pool is sized from ``max_actors`` (two long-lived streams
  each, plus headroom), and a ``Hello`` beyond ``max_actors`` is refused with a message instead of
  hanging (LeRobot #3979: three workers, a second actor hangs forever).
- **liveness everywhere**: weight streams send a heartbeat every ``heartbeat_s``; a handler
  returns as soon as its peer is gone (``context.is_active()``), HTTP/2 keepalive pings find
  half-open connections, every unary call has a deadline, and the actor declares the link down
  after ``liveness_s`` without a message.
- **reconnects**: the actor's link re-dials with backoff for as long as it lives, and resends
  every transition the learner has not made durable (sequence numbers, acks, and the learner's
  checkpointed count), so a learner restart loses nothing.
- **no pickle**: tensors are safetensors bytes, metadata JSON; weights go in ``chunk_bytes``
  pieces (default 1 MiB; gRPC's default message cap is 4 MiB).
- **authentication**: a shared token (``authorization: Bearer ...``, compared in constant time)
  on every call; TLS (server certificate, the actor pins a CA) whenever the learner binds to
  anything but loopback, which is refused without TLS and a token.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from robolearn.practice import link_pb2 as pb
from robolearn.practice import link_pb2_grpc as pbg
from robolearn.practice.security import Security
from robolearn.practice.wire import LinkError, chunks, pack, stack_rows, unpack
from robolearn_core.config import ConfigError

log = logging.getLogger("robolearn.link")

LINK_PROTOCOL = 1
DEFAULT_ADDRESS = "127.0.0.1:50151"
# HTTP/2 keepalive: a ping every 2 s, the connection dropped 2 s after an unanswered one; pings
# are allowed without calls in flight (an idle actor waiting for the learner)
_KEEPALIVE = [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000),
              ("grpc.keepalive_permit_without_calls", 1),
              ("grpc.http2.max_pings_without_data", 0)]
_SERVER_OPTIONS = [*_KEEPALIVE, ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                   ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                   ("grpc.so_reuseport", 0),  # a second learner on the same port is an error
                   ("grpc.max_receive_message_length", 64 << 20)]
_CLIENT_OPTIONS = [*_KEEPALIVE, ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]


class Refused(LinkError):
    """The learner refused an actor (protocol, spec, too many actors): reconnecting will not
    help until someone changes a setting."""


# ---------------------------------------------------------------------- learner side
@dataclass
class _Weights:
    version: int = 0
    data: bytes = b""
    learner_step: int = 0
    sent_time: float = 0.0


class LinkServer(pbg.LearnerServicer):
    """The learner's end. ``hello(actor_id, spec, resend_from) -> (next_seq, durable_seq,
    policy_json)`` admits an actor (raise :class:`Refused` to refuse it);
    ``receive(actor_id, first_seq, arrays) -> (next_seq, durable_seq)`` takes a batch
    (it drops rows it already has: a resend after a reconnect may overlap)."""

    def __init__(self, address: str, hello: Callable[[str, dict[str, Any], int],
                                                     tuple[int, int, str]],
                 receive: Callable[[str, int, dict[str, np.ndarray]], tuple[int, int]],
                 *, security: Security | None = None, max_actors: int = 16,
                 heartbeat_s: float = 0.5, chunk_bytes: int = 1 << 20,
                 session: str = "") -> None:
        self.security = security or Security()
        self.security.check_server(address)
        self._hello, self._receive = hello, receive
        self.max_actors, self.heartbeat_s, self.chunk_bytes = max_actors, heartbeat_s, chunk_bytes
        self.session = session
        self._weights = _Weights()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self.actors_seen: set[str] = set()
        # two long-lived streams per actor, plus Hellos and headroom; beyond max_actors a Hello
        # is refused (never queued behind busy workers)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2 * max_actors + 4),
                                   options=_SERVER_OPTIONS,
                                   maximum_concurrent_rpcs=2 * max_actors + 4)
        pbg.add_LearnerServicer_to_server(self, self._server)
        creds = self.security.server_credentials()
        try:
            self.port = (self._server.add_secure_port(address, creds) if creds
                         else self._server.add_insecure_port(address))
        except RuntimeError as exc:
            raise ConfigError(f"address: cannot listen on {address} ({exc}); is another learner "
                              "running there?") from None
        host = address.rsplit(":", 1)[0]
        self.address = f"{host}:{self.port}"

    def start(self) -> LinkServer:
        self._server.start()
        log.info("learner link listening on %s%s", self.address,
                 " (TLS)" if self.security.tls_cert else "")
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._server.stop(grace).wait()

    def publish(self, state: dict[str, np.ndarray], learner_step: int) -> int:
        """Make ``state`` (the actor's weights) the newest version; every open weight stream
        sends it. Returns its version number."""
        data = pack(state)
        with self._cond:
            w = self._weights
            self._weights = _Weights(w.version + 1, data, learner_step, time.time())
            self._cond.notify_all()
            return self._weights.version

    @property
    def version(self) -> int:
        return self._weights.version

    # -- the RPCs
    def _authorize(self, context: grpc.ServicerContext) -> None:
        token = self.security.token
        if token is None:
            return
        got = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(str(got).encode(), f"Bearer {token}".encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "robolearn learner: wrong or missing token (token= / token_file=)")

    def Hello(self, request: pb.HelloRequest, context: grpc.ServicerContext) -> pb.HelloReply:
        self._authorize(context)
        if request.protocol != LINK_PROTOCOL:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"link protocol {request.protocol}; this learner speaks "
                          f"{LINK_PROTOCOL}: run the same robolearn version on both ends")
        aid = request.actor_id
        if aid not in self.actors_seen and len(self.actors_seen) >= self.max_actors:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this learner serves at most {self.max_actors} actors (max_actors=); "
                          f"it has {sorted(self.actors_seen)}")
        try:
            spec = json.loads(request.spec_json)
            next_seq, durable, policy = self._hello(aid, spec, request.resend_from)
        except Refused as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"actor {aid}: bad spec ({exc})")
        self.actors_seen.add(aid)
        return pb.HelloReply(next_seq=next_seq, durable_seq=durable, session=self.session,
                             policy_json=policy)

    def SendTransitions(self, request_iterator: Iterator[pb.TransitionBatch],
                        context: grpc.ServicerContext) -> Iterator[pb.Ack]:
        self._authorize(context)
        for batch in request_iterator:
            if batch.actor_id not in self.actors_seen:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"actor {batch.actor_id}: transitions before Hello")
            try:
                arrays = unpack(batch.tensors, f"actor {batch.actor_id} batch at "
                                               f"{batch.first_seq}")
                next_seq, durable = self._receive(batch.actor_id, batch.first_seq, arrays)
            except (LinkError, ValueError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            yield pb.Ack(next_seq=next_seq, durable_seq=durable)

    def StreamWeights(self, request: pb.WeightsRequest, context: grpc.ServicerContext
                      ) -> Iterator[pb.WeightChunk]:
        self._authorize(context)
        have = request.have_version
        while context.is_active() and not self._stopping.is_set():
            with self._cond:
                if self._weights.version <= have:
                    self._cond.wait(self.heartbeat_s)
                w = self._weights
            if not context.is_active() or self._stopping.is_set():
                return
            if w.version <= have:
                yield pb.WeightChunk(heartbeat=True, version=w.version)
                continue
            parts = chunks(w.data, self.chunk_bytes)
            for i, part in enumerate(parts):
                yield pb.WeightChunk(version=w.version, index=i, total=len(parts),
                                     total_bytes=len(w.data), data=part,
                                     learner_step=w.learner_step, sent_time=w.sent_time)
            have = w.version


# ---------------------------------------------------------------------- actor side
@dataclass
class Received:
    """A complete weight version as the actor got it."""

    version: int
    state: dict[str, np.ndarray]
    learner_step: int
    sent_time: float  # learner's time.time() at publish
    received_time: float  # actor's time.time() when the last chunk arrived


@dataclass
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    resent: int = 0  # transitions sent again after a reconnect
    lost: int = 0  # transitions the learner will never get (it was wiped), reported by Hello
    weight_versions: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # publish -> received, per version
    last_error: str = ""


class ActorLink:
    """The actor's end: keeps a connection to the learner up for as long as it lives.

    ``push(row)`` queues one transition (it is kept until the learner says it is
    in a checkpoint); ``latest()`` returns the newest complete weights not yet taken;
    ``up`` says whether the learner is reachable and alive right now."""

    def __init__(self, address: str, actor_id: str, spec: dict[str, Any], *,
                 security: Security | None = None, liveness_s: float = 3.0,
                 timeout_s: float = 5.0, batch_rows: int = 64, flush_s: float = 0.05) -> None:
        self.address, self.actor_id, self.spec = address, actor_id, spec
        self.security = security or Security()
        self.liveness_s, self.timeout_s = liveness_s, timeout_s
        self.batch_rows, self.flush_s = batch_rows, flush_s
        self.stats = LinkStats()
        self.policy_json = ""
        self._lock = threading.Condition()
        self._outbox: deque[tuple[int, dict[str, Any]]] = deque()
        self._next_seq = 0  # seq of the next pushed transition
        self._send_from = 0  # first seq not yet sent on the current connection
        self._acked = 0  # the learner has every seq below this
        self._durable = 0
        self._fresh = True  # no Hello answered yet: adopt the learner's count
        self._latest: Received | None = None
        self._have_version = 0
        self._up = threading.Event()
        self._closed = threading.Event()
        self._last_msg = 0.0
        self._thread = threading.Thread(target=self._run, name=f"link-{actor_id}", daemon=True)

    # -- the actor's API
    def start(self) -> ActorLink:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=5)

    @property
    def up(self) -> bool:
        return self._up.is_set() and time.monotonic() - self._last_msg < self.liveness_s

    def wait_up(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.up:
            if self._closed.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            self._up.wait(0.05)
            time.sleep(0.01)
        return True

    def push(self, row: dict[str, Any]) -> int:
        """Queue one transition; returns its sequence number."""
        with self._lock:
            seq = self._next_seq
            self._outbox.append((seq, row))
            self._next_seq += 1
            self._lock.notify_all()
            return seq

    def latest(self) -> Received | None:
        with self._lock:
            got, self._latest = self._latest, None
            return got

    @property
    def pending(self) -> int:
        """Transitions the learner has not acknowledged."""
        with self._lock:
            return self._next_seq - self._acked

    @property
    def held(self) -> int:
        """Transitions kept in memory (not yet in a learner checkpoint)."""
        with self._lock:
            return len(self._outbox)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def acked(self) -> int:
        return self._acked

    # -- the connection
    def _run(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            channel = self.security.channel(self.address, _CLIENT_OPTIONS)
            calls: list[Any] = []
            try:
                self._session(channel, calls)
                backoff = 0.1
            except Refused as exc:
                self.stats.last_error = str(exc)
                log.error("learner %s refused actor %s: %s", self.address, self.actor_id, exc)
                backoff = 5.0
            except (grpc.RpcError, LinkError) as exc:
                self.stats.last_error = _describe(exc)
            finally:
                if self._up.is_set() and not self._closed.is_set():
                    self.stats.disconnects += 1
                    log.warning("actor %s: link to %s lost (%s)", self.actor_id, self.address,
                                self.stats.last_error)
                self._up.clear()
                for c in calls:
                    c.cancel()
                channel.close()
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _session(self, channel: grpc.Channel, calls: list[Any]) -> None:
        stub = pbg.LearnerStub(channel)
        md = self.security.metadata()
        with self._lock:
            resend_from = self._outbox[0][0] if self._outbox else self._next_seq
        try:
            reply = stub.Hello(pb.HelloRequest(
                actor_id=self.actor_id, protocol=LINK_PROTOCOL, spec_json=json.dumps(self.spec),
                resend_from=0 if self._fresh else resend_from),
                timeout=self.timeout_s, metadata=md, wait_for_ready=False)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION,  # type: ignore[attr-defined]
                              grpc.StatusCode.UNAUTHENTICATED,
                              grpc.StatusCode.INVALID_ARGUMENT,
                              grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise Refused(exc.details()) from None  # type: ignore[attr-defined]
            raise
        with self._lock:
            if self._fresh:  # a new actor process: its numbering continues the learner's
                self._outbox = deque((s + reply.next_seq, r) for s, r in self._outbox)
                self._next_seq = reply.next_seq + len(self._outbox)
                self._fresh = False
            elif reply.next_seq > self._next_seq:
                raise Refused(f"the learner has {reply.next_seq} transitions from "
                              f"{self.actor_id}, more than it ever sent ({self._next_seq}): "
                              "two actors run with the same actor_id")
            while self._outbox and self._outbox[0][0] < reply.next_seq:
                self._outbox.popleft()
            self.stats.resent += max(0, self._send_from - reply.next_seq)
            self._send_from = reply.next_seq
            self._acked = reply.next_seq
            self._durable = reply.durable_seq
            self.policy_json = reply.policy_json
        self.stats.connects += 1
        self._last_msg = time.monotonic()
        failure: list[BaseException] = []
        stop = threading.Event()

        def weights() -> None:
            try:
                call = stub.StreamWeights(pb.WeightsRequest(actor_id=self.actor_id,
                                                            have_version=self._have_version),
                                          metadata=md)
                calls.append(call)
                self._read_weights(call)
                failure.append(LinkError("the learner closed the weight stream"))
            except BaseException as exc:  # noqa: BLE001 - handed to the session
                failure.append(exc)
            finally:
                stop.set()

        wt = threading.Thread(target=weights, name=f"weights-{self.actor_id}", daemon=True)
        wt.start()
        send = stub.SendTransitions(self._batches(stop), metadata=md)
        calls.append(send)
        self._up.set()
        log.info("actor %s: connected to %s (learner has %d of its transitions)",
                 self.actor_id, self.address, reply.next_seq)
        acks = threading.Thread(target=self._read_acks, args=(send, failure, stop),
                                daemon=True)
        acks.start()
        while not stop.is_set() and not self._closed.is_set():
            if time.monotonic() - self._last_msg > self.liveness_s:
                failure.append(LinkError(f"no message from the learner for "
                                         f"{self.liveness_s:.1f} s"))
                break
            stop.wait(0.05)
        stop.set()
        with self._lock:
            self._lock.notify_all()
        if failure:
            raise failure[0] if isinstance(failure[0], (grpc.RpcError, LinkError)) \
                else LinkError(_describe(failure[0]))

    def _read_acks(self, call: Any, failure: list[BaseException], stop: threading.Event
                   ) -> None:
        try:
            for ack in call:
                self._last_msg = time.monotonic()
                with self._lock:
                    self._acked = max(self._acked, ack.next_seq)
                    self._durable = max(self._durable, ack.durable_seq)
                    while self._outbox and self._outbox[0][0] < self._durable:
                        self._outbox.popleft()
            failure.append(LinkError("the learner closed the transition stream"))
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)
        finally:
            stop.set()

    def _batches(self, stop: threading.Event) -> Iterator[pb.TransitionBatch]:
        """Batches of unsent transitions, from ``_send_from`` on, as they come."""
        while not stop.is_set():
            with self._lock:
                if self._next_seq <= self._send_from:
                    self._lock.wait(self.flush_s)
                    if self._next_seq <= self._send_from:
                        continue
                start = self._send_from
                offset = start - self._outbox[0][0]
                take = [self._outbox[offset + i]
                        for i in range(min(self.batch_rows, self._next_seq - start))]
                self._send_from = start + len(take)
            yield pb.TransitionBatch(actor_id=self.actor_id, first_seq=start, count=len(take),
                                     tensors=pack(stack_rows([r for _, r in take])))

    def _read_weights(self, call: Any) -> None:
        parts: list[bytes] = []
        for chunk in call:
            self._last_msg = time.monotonic()
            if chunk.heartbeat:
                continue
            if chunk.index == 0:
                parts = []
            if chunk.index != len(parts):
                raise LinkError(f"weights version {chunk.version}: chunk {chunk.index} after "
                                f"{len(parts)}")
            parts.append(chunk.data)
            if len(parts) < chunk.total:
                continue
            data = b"".join(parts)
            if len(data) != chunk.total_bytes:
                raise LinkError(f"weights version {chunk.version}: {len(data)} bytes, expected "
                                f"{chunk.total_bytes}")
            got = Received(chunk.version, unpack(data, f"weights version {chunk.version}"),
                           chunk.learner_step, chunk.sent_time, time.time())
            self.stats.weight_versions += 1
            self.stats.latencies_ms.append(1000 * (got.received_time - got.sent_time))
            with self._lock:
                self._latest = got
                self._have_version = chunk.version


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"
