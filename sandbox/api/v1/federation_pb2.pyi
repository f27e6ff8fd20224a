from sandbox.api.v1 import common_pb2 as _common_pb2
from sandbox.api.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CellKey(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    def __init__(self, keys: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ...) -> None: ...

class PartialsRequest(_message.Message):
    __slots__ = ("federated_job_id", "party", "spec", "public_key", "encoding", "cells", "query_set", "on_behalf_of")
    FEDERATED_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    QUERY_SET_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    federated_job_id: str
    party: str
    spec: _jobs_pb2.JobSpec
    public_key: bytes
    encoding: bytes
    cells: _containers.RepeatedCompositeFieldContainer[CellKey]
    query_set: bool
    on_behalf_of: str
    def __init__(self, federated_job_id: _Optional[str] = ..., party: _Optional[str] = ..., spec: _Optional[_Union[_jobs_pb2.JobSpec, _Mapping]] = ..., public_key: _Optional[bytes] = ..., encoding: _Optional[bytes] = ..., cells: _Optional[_Iterable[_Union[CellKey, _Mapping]]] = ..., query_set: _Optional[bool] = ..., on_behalf_of: _Optional[str] = ...) -> None: ...

class PartialsResponse(_message.Message):
    __slots__ = ("party", "key_fingerprint", "encoding_fingerprint", "ciphertexts", "digest", "node_job_id", "policy_version", "data_version")
    PARTY_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    NODE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    party: str
    key_fingerprint: bytes
    encoding_fingerprint: bytes
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    digest: str
    node_job_id: str
    policy_version: str
    data_version: str
    def __init__(self, party: _Optional[str] = ..., key_fingerprint: _Optional[bytes] = ..., encoding_fingerprint: _Optional[bytes] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., digest: _Optional[str] = ..., node_job_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., data_version: _Optional[str] = ...) -> None: ...

class RunFederatedJobRequest(_message.Message):
    __slots__ = ("spec", "expected_key_fingerprint")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    spec: _jobs_pb2.JobSpec
    expected_key_fingerprint: str
    def __init__(self, spec: _Optional[_Union[_jobs_pb2.JobSpec, _Mapping]] = ..., expected_key_fingerprint: _Optional[str] = ...) -> None: ...

class RunFederatedJobResponse(_message.Message):
    __slots__ = ("job", "result", "parties", "missing")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    result: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.ResultChunk]
    parties: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., result: _Optional[_Iterable[_Union[_jobs_pb2.ResultChunk, _Mapping]]] = ..., parties: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...
