from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ("actor_id", "protocol", "spec_json", "resend_from")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    RESEND_FROM_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    protocol: int
    spec_json: str
    resend_from: int
    def __init__(self, actor_id: _Optional[str] = ..., protocol: _Optional[int] = ..., spec_json: _Optional[str] = ..., resend_from: _Optional[int] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("next_seq", "durable_seq", "session", "policy_json")
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    next_seq: int
    durable_seq: int
    session: str
    policy_json: str
    def __init__(self, next_seq: _Optional[int] = ..., durable_seq: _Optional[int] = ..., session: _Optional[str] = ..., policy_json: _Optional[str] = ...) -> None: ...

class TransitionBatch(_message.Message):
    __slots__ = ("actor_id", "first_seq", "count", "tensors")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    first_seq: int
    count: int
    tensors: bytes
    def __init__(self, actor_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., count: _Optional[int] = ..., tensors: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("next_seq", "durable_seq")
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    next_seq: int
    durable_seq: int
    def __init__(self, next_seq: _Optional[int] = ..., durable_seq: _Optional[int] = ...) -> None: ...

class WeightsRequest(_message.Message):
    __slots__ = ("actor_id", "have_version")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    have_version: int
    def __init__(self, actor_id: _Optional[str] = ..., have_version: _Optional[int] = ...) -> None: ...

class WeightChunk(_message.Message):
    __slots__ = ("version", "index", "total", "total_bytes", "data", "heartbeat", "learner_step", "sent_time")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    version: int
    index: int
    total: int
    total_bytes: int
    data: bytes
    heartbeat: bool
    learner_step: int
    sent_time: float
    def __init__(self, version: _Optional[int] = ..., index: _Optional[int] = ..., total: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., heartbeat: _Optional[bool] = ..., learner_step: _Optional[int] = ..., sent_time: _Optional[float] = ...) -> None: ...
