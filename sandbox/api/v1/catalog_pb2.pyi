from sandbox.api.v1 import common_pb2 as _common_pb2
from sandbox.api.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Column(_message.Message):
    __slots__ = ("name", "type", "role", "description", "bins", "values", "has_bounds", "lower_bound", "upper_bound", "aggregates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    HAS_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    role: str
    description: str
    bins: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    has_bounds: bool
    lower_bound: float
    upper_bound: float
    aggregates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., role: _Optional[str] = ..., description: _Optional[str] = ..., bins: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ..., has_bounds: _Optional[bool] = ..., lower_bound: _Optional[float] = ..., upper_bound: _Optional[float] = ..., aggregates: _Optional[_Iterable[str]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "title", "description", "person_key", "population", "row_count", "columns", "purposes", "policy_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PERSON_KEY_FIELD_NUMBER: _ClassVar[int]
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    description: str
    person_key: str
    population: str
    row_count: int
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    purposes: _containers.RepeatedScalarFieldContainer[str]
    policy_version: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., person_key: _Optional[str] = ..., population: _Optional[str] = ..., row_count: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., purposes: _Optional[_Iterable[str]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class DescribeDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class RegisterDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class MockRowsRequest(_message.Message):
    __slots__ = ("dataset", "n", "seed", "job", "matching")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    MATCHING_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    n: int
    seed: int
    job: _jobs_pb2.JobSpec
    matching: float
    def __init__(self, dataset: _Optional[str] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., job: _Optional[_Union[_jobs_pb2.JobSpec, _Mapping]] = ..., matching: _Optional[float] = ...) -> None: ...

class MockRowsChunk(_message.Message):
    __slots__ = ("arrow_ipc", "seed", "rows")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    seed: int
    rows: int
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., seed: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...
