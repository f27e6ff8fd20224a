from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterPublicKeyRequest(_message.Message):
    __slots__ = ("public_key_pem",)
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: bytes
    def __init__(self, public_key_pem: _Optional[bytes] = ...) -> None: ...

class GetPublicKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKeyInfo(_message.Message):
    __slots__ = ("principal", "registered", "fingerprint", "bits", "replaced_fingerprint")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    principal: str
    registered: bool
    fingerprint: str
    bits: int
    replaced_fingerprint: str
    def __init__(self, principal: _Optional[str] = ..., registered: _Optional[bool] = ..., fingerprint: _Optional[str] = ..., bits: _Optional[int] = ..., replaced_fingerprint: _Optional[str] = ...) -> None: ...
