from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Grant(_message.Message):
    __slots__ = ("dataset", "purpose")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    purpose: str
    def __init__(self, dataset: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "title", "members", "grants", "expires", "quota")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    members: _containers.RepeatedScalarFieldContainer[str]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    expires: str
    quota: QuotaLimits
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., expires: _Optional[str] = ..., quota: _Optional[_Union[QuotaLimits, _Mapping]] = ...) -> None: ...

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
