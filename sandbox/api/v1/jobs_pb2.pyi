from sandbox.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FilterOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_OP_UNSPECIFIED: _ClassVar[FilterOp]
    FILTER_OP_EQ: _ClassVar[FilterOp]
    FILTER_OP_NE: _ClassVar[FilterOp]
    FILTER_OP_LT: _ClassVar[FilterOp]
    FILTER_OP_LE: _ClassVar[FilterOp]
    FILTER_OP_GT: _ClassVar[FilterOp]
    FILTER_OP_GE: _ClassVar[FilterOp]
    FILTER_OP_IN: _ClassVar[FilterOp]
    FILTER_OP_BETWEEN: _ClassVar[FilterOp]

class AggregateFunction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_FUNCTION_UNSPECIFIED: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_COUNT: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_COUNT_DISTINCT: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_SUM: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_MEAN: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_VARIANCE: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_STDDEV: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_MEDIAN: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_QUANTILE: _ClassVar[AggregateFunction]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_DENIED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_AWAITING_APPROVAL: _ClassVar[JobState]

class CellStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELL_STATUS_UNSPECIFIED: _ClassVar[CellStatus]
    CELL_STATUS_RELEASED: _ClassVar[CellStatus]
    CELL_STATUS_ROUNDED: _ClassVar[CellStatus]
    CELL_STATUS_SUPPRESSED: _ClassVar[CellStatus]
    CELL_STATUS_NOISED: _ClassVar[CellStatus]
FILTER_OP_UNSPECIFIED: FilterOp
FILTER_OP_EQ: FilterOp
FILTER_OP_NE: FilterOp
FILTER_OP_LT: FilterOp
FILTER_OP_LE: FilterOp
FILTER_OP_GT: FilterOp
FILTER_OP_GE: FilterOp
FILTER_OP_IN: FilterOp
FILTER_OP_BETWEEN: FilterOp
AGGREGATE_FUNCTION_UNSPECIFIED: AggregateFunction
AGGREGATE_FUNCTION_COUNT: AggregateFunction
AGGREGATE_FUNCTION_COUNT_DISTINCT: AggregateFunction
AGGREGATE_FUNCTION_SUM: AggregateFunction
AGGREGATE_FUNCTION_MEAN: AggregateFunction
AGGREGATE_FUNCTION_VARIANCE: AggregateFunction
AGGREGATE_FUNCTION_STDDEV: AggregateFunction
AGGREGATE_FUNCTION_MEDIAN: AggregateFunction
AGGREGATE_FUNCTION_QUANTILE: AggregateFunction
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_DENIED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_AWAITING_APPROVAL: JobState
CELL_STATUS_UNSPECIFIED: CellStatus
CELL_STATUS_RELEASED: CellStatus
CELL_STATUS_ROUNDED: CellStatus
CELL_STATUS_SUPPRESSED: CellStatus
CELL_STATUS_NOISED: CellStatus

class GetProcessPortRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetProcessPortResponse(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("column", "op", "values")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: str
    op: FilterOp
    values: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    def __init__(self, column: _Optional[str] = ..., op: _Optional[_Union[FilterOp, str]] = ..., values: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ...) -> None: ...

class Aggregate(_message.Message):
    __slots__ = ("function", "column", "alias", "q")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    function: AggregateFunction
    column: str
    alias: str
    q: str
    def __init__(self, function: _Optional[_Union[AggregateFunction, str]] = ..., column: _Optional[str] = ..., alias: _Optional[str] = ..., q: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("dataset", "project", "purpose", "filters", "group_by", "aggregates", "margins")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    MARGINS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    project: str
    purpose: str
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    aggregates: _containers.RepeatedCompositeFieldContainer[Aggregate]
    margins: bool
    def __init__(self, dataset: _Optional[str] = ..., project: _Optional[str] = ..., purpose: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., group_by: _Optional[_Iterable[str]] = ..., aggregates: _Optional[_Iterable[_Union[Aggregate, _Mapping]]] = ..., margins: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "request_id", "principal", "spec", "state", "reason", "message", "rule_ids", "created_at_us", "started_at_us", "finished_at_us", "rows_scanned", "policy_version", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_US_FIELD_NUMBER: _ClassVar[int]
    ROWS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    principal: str
    spec: JobSpec
    state: JobState
    reason: str
    message: str
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    created_at_us: int
    started_at_us: int
    finished_at_us: int
    rows_scanned: int
    policy_version: str
    progress: float
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., principal: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., rule_ids: _Optional[_Iterable[str]] = ..., created_at_us: _Optional[int] = ..., started_at_us: _Optional[int] = ..., finished_at_us: _Optional[int] = ..., rows_scanned: _Optional[int] = ..., policy_version: _Optional[str] = ..., progress: _Optional[float] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("request_id", "spec", "wait_seconds", "include_result", "expected_key_fingerprint")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec: JobSpec
    wait_seconds: float
    include_result: bool
    expected_key_fingerprint: str
    def __init__(self, request_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., wait_seconds: _Optional[float] = ..., include_result: _Optional[bool] = ..., expected_key_fingerprint: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "result")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    result: ResultChunk
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., result: _Optional[_Union[ResultChunk, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WaitJobRequest(_message.Message):
    __slots__ = ("job_id", "timeout_seconds", "include_result", "expected_key_fingerprint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout_seconds: float
    include_result: bool
    expected_key_fingerprint: str
    def __init__(self, job_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., include_result: _Optional[bool] = ..., expected_key_fingerprint: _Optional[str] = ...) -> None: ...

class WaitJobResponse(_message.Message):
    __slots__ = ("job", "result")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    result: ResultChunk
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., result: _Optional[_Union[ResultChunk, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("project", "limit")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    project: str
    limit: int
    def __init__(self, project: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("job_id", "expected_key_fingerprint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    expected_key_fingerprint: str
    def __init__(self, job_id: _Optional[str] = ..., expected_key_fingerprint: _Optional[str] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("has_value", "value", "status", "rule", "ci_half_width")
    HAS_VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CI_HALF_WIDTH_FIELD_NUMBER: _ClassVar[int]
    has_value: bool
    value: float
    status: CellStatus
    rule: str
    ci_half_width: float
    def __init__(self, has_value: _Optional[bool] = ..., value: _Optional[float] = ..., status: _Optional[_Union[CellStatus, str]] = ..., rule: _Optional[str] = ..., ci_half_width: _Optional[float] = ...) -> None: ...

class ResultRow(_message.Message):
    __slots__ = ("keys", "cells")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, keys: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("key_columns", "value_columns", "settings", "rows", "result_digest", "privacy", "sealed_result", "policy_version", "receipt_json")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class PrivacyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    SEALED_RESULT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_JSON_FIELD_NUMBER: _ClassVar[int]
    key_columns: _containers.RepeatedScalarFieldContainer[str]
    value_columns: _containers.RepeatedScalarFieldContainer[str]
    settings: _containers.ScalarMap[str, int]
    rows: _containers.RepeatedCompositeFieldContainer[ResultRow]
    result_digest: str
    privacy: _containers.ScalarMap[str, str]
    sealed_result: bytes
    policy_version: str
    receipt_json: str
    def __init__(self, key_columns: _Optional[_Iterable[str]] = ..., value_columns: _Optional[_Iterable[str]] = ..., settings: _Optional[_Mapping[str, int]] = ..., rows: _Optional[_Iterable[_Union[ResultRow, _Mapping]]] = ..., result_digest: _Optional[str] = ..., privacy: _Optional[_Mapping[str, str]] = ..., sealed_result: _Optional[bytes] = ..., policy_version: _Optional[str] = ..., receipt_json: _Optional[str] = ...) -> None: ...

class EstimateJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class JobEstimate(_message.Message):
    __slots__ = ("allowed", "rule_ids", "reasons", "jobs", "rows", "epsilon", "delta", "spec_digest", "predicted", "mock_rows")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SPEC_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    MOCK_ROWS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    jobs: int
    rows: int
    epsilon: str
    delta: str
    spec_digest: str
    predicted: ResultChunk
    mock_rows: int
    def __init__(self, allowed: _Optional[bool] = ..., rule_ids: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[str]] = ..., jobs: _Optional[int] = ..., rows: _Optional[int] = ..., epsilon: _Optional[str] = ..., delta: _Optional[str] = ..., spec_digest: _Optional[str] = ..., predicted: _Optional[_Union[ResultChunk, _Mapping]] = ..., mock_rows: _Optional[int] = ...) -> None: ...
