from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExceptionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXCEPTION_STATE_UNSPECIFIED: _ClassVar[ExceptionState]
    EXCEPTION_STATE_PENDING: _ClassVar[ExceptionState]
    EXCEPTION_STATE_GRANTED: _ClassVar[ExceptionState]
    EXCEPTION_STATE_REJECTED: _ClassVar[ExceptionState]
    EXCEPTION_STATE_USED: _ClassVar[ExceptionState]
EXCEPTION_STATE_UNSPECIFIED: ExceptionState
EXCEPTION_STATE_PENDING: ExceptionState
EXCEPTION_STATE_GRANTED: ExceptionState
EXCEPTION_STATE_REJECTED: ExceptionState
EXCEPTION_STATE_USED: ExceptionState

class Grant(_message.Message):
    __slots__ = ("dataset", "purpose", "expires")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    purpose: str
    expires: str
    def __init__(self, dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., expires: _Optional[str] = ...) -> None: ...

class QuotaLimits(_message.Message):
    __slots__ = ("jobs_per_day", "jobs_total", "rows_per_day", "rows_total")
    JOBS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    jobs_per_day: int
    jobs_total: int
    rows_per_day: int
    rows_total: int
    def __init__(self, jobs_per_day: _Optional[int] = ..., jobs_total: _Optional[int] = ..., rows_per_day: _Optional[int] = ..., rows_total: _Optional[int] = ...) -> None: ...

class Project(_message.Message):
    __slots__ = ("id", "title", "members", "grants", "expires", "quota", "revoked")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    members: _containers.RepeatedScalarFieldContainer[str]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    expires: str
    quota: QuotaLimits
    revoked: bool
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., expires: _Optional[str] = ..., quota: _Optional[_Union[QuotaLimits, _Mapping]] = ..., revoked: _Optional[bool] = ...) -> None: ...

class CreateProjectRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: Project
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ...) -> None: ...

class ListProjectsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProjectsResponse(_message.Message):
    __slots__ = ("projects",)
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[Project]
    def __init__(self, projects: _Optional[_Iterable[_Union[Project, _Mapping]]] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("project", "quota")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    project: str
    quota: QuotaLimits
    def __init__(self, project: _Optional[str] = ..., quota: _Optional[_Union[QuotaLimits, _Mapping]] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("project", "limits", "jobs_today", "jobs_total", "rows_today", "rows_total")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    JOBS_TODAY_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_TODAY_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    project: str
    limits: QuotaLimits
    jobs_today: int
    jobs_total: int
    rows_today: int
    rows_total: int
    def __init__(self, project: _Optional[str] = ..., limits: _Optional[_Union[QuotaLimits, _Mapping]] = ..., jobs_today: _Optional[int] = ..., jobs_total: _Optional[int] = ..., rows_today: _Optional[int] = ..., rows_total: _Optional[int] = ...) -> None: ...

class UpdateProjectRequest(_message.Message):
    __slots__ = ("project", "title", "add_members", "remove_members", "add_grants", "remove_grants", "expires", "quota")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ADD_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADD_GRANTS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_GRANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    project: str
    title: str
    add_members: _containers.RepeatedScalarFieldContainer[str]
    remove_members: _containers.RepeatedScalarFieldContainer[str]
    add_grants: _containers.RepeatedCompositeFieldContainer[Grant]
    remove_grants: _containers.RepeatedCompositeFieldContainer[Grant]
    expires: str
    quota: QuotaLimits
    def __init__(self, project: _Optional[str] = ..., title: _Optional[str] = ..., add_members: _Optional[_Iterable[str]] = ..., remove_members: _Optional[_Iterable[str]] = ..., add_grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., remove_grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., expires: _Optional[str] = ..., quota: _Optional[_Union[QuotaLimits, _Mapping]] = ...) -> None: ...

class ExpireProjectRequest(_message.Message):
    __slots__ = ("project", "reason")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    project: str
    reason: str
    def __init__(self, project: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeProjectRequest(_message.Message):
    __slots__ = ("project", "reason")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    project: str
    reason: str
    def __init__(self, project: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeProjectResponse(_message.Message):
    __slots__ = ("project", "jobs_stopped")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    JOBS_STOPPED_FIELD_NUMBER: _ClassVar[int]
    project: Project
    jobs_stopped: int
    def __init__(self, project: _Optional[_Union[Project, _Mapping]] = ..., jobs_stopped: _Optional[int] = ...) -> None: ...

class ExceptionRequest(_message.Message):
    __slots__ = ("id", "job_id", "principal", "project", "dataset", "purpose", "spec_digest", "rule_ids", "justification", "state", "requested_at_us", "decided_by", "decision_reason", "decided_at_us", "used_by_job")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SPEC_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_US_FIELD_NUMBER: _ClassVar[int]
    USED_BY_JOB_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    principal: str
    project: str
    dataset: str
    purpose: str
    spec_digest: str
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    justification: str
    state: ExceptionState
    requested_at_us: int
    decided_by: str
    decision_reason: str
    decided_at_us: int
    used_by_job: str
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., principal: _Optional[str] = ..., project: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., spec_digest: _Optional[str] = ..., rule_ids: _Optional[_Iterable[str]] = ..., justification: _Optional[str] = ..., state: _Optional[_Union[ExceptionState, str]] = ..., requested_at_us: _Optional[int] = ..., decided_by: _Optional[str] = ..., decision_reason: _Optional[str] = ..., decided_at_us: _Optional[int] = ..., used_by_job: _Optional[str] = ...) -> None: ...

class RequestExceptionRequest(_message.Message):
    __slots__ = ("job_id", "rule_ids", "justification")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    justification: str
    def __init__(self, job_id: _Optional[str] = ..., rule_ids: _Optional[_Iterable[str]] = ..., justification: _Optional[str] = ...) -> None: ...

class ListExceptionRequestsRequest(_message.Message):
    __slots__ = ("state", "project", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: ExceptionState
    project: str
    limit: int
    def __init__(self, state: _Optional[_Union[ExceptionState, str]] = ..., project: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListExceptionRequestsResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ExceptionRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ExceptionRequest, _Mapping]]] = ...) -> None: ...

class DecideExceptionRequest(_message.Message):
    __slots__ = ("request_id", "grant", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    grant: bool
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., grant: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
