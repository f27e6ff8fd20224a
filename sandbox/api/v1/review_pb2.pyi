from sandbox.api.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListPendingReviewsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingReview(_message.Message):
    __slots__ = ("job", "why", "approvals_required", "approved_by")
    JOB_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    why: _containers.RepeatedScalarFieldContainer[str]
    approvals_required: int
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., why: _Optional[_Iterable[str]] = ..., approvals_required: _Optional[int] = ..., approved_by: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPendingReviewsResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[PendingReview]
    def __init__(self, reviews: _Optional[_Iterable[_Union[PendingReview, _Mapping]]] = ...) -> None: ...

class DecideReviewRequest(_message.Message):
    __slots__ = ("job_id", "approve", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    approve: bool
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
