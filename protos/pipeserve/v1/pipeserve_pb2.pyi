from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrailingMetadataKey(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAILING_METADATA_KEY_UNSPECIFIED: _ClassVar[TrailingMetadataKey]
    TRAILING_METADATA_KEY_TOKENIZE_MS: _ClassVar[TrailingMetadataKey]
    TRAILING_METADATA_KEY_QUEUE_MS: _ClassVar[TrailingMetadataKey]
    TRAILING_METADATA_KEY_FORWARD_MS: _ClassVar[TrailingMetadataKey]
    TRAILING_METADATA_KEY_RETRY_AFTER_MS: _ClassVar[TrailingMetadataKey]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_FEATURE_EXTRACTION: _ClassVar[Task]
    TASK_TEXT_CLASSIFICATION: _ClassVar[Task]
    TASK_TOKEN_CLASSIFICATION: _ClassVar[Task]
    TASK_QUESTION_ANSWERING: _ClassVar[Task]
    TASK_FILL_MASK: _ClassVar[Task]

class ComputeDType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPUTE_DTYPE_UNSPECIFIED: _ClassVar[ComputeDType]
    COMPUTE_DTYPE_FLOAT32: _ClassVar[ComputeDType]
    COMPUTE_DTYPE_BFLOAT16: _ClassVar[ComputeDType]
    COMPUTE_DTYPE_FLOAT16: _ClassVar[ComputeDType]

class Quantization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZATION_NONE: _ClassVar[Quantization]
    QUANTIZATION_INT8: _ClassVar[Quantization]
    QUANTIZATION_INT8_WEIGHTS: _ClassVar[Quantization]
    QUANTIZATION_INT8_STATIC: _ClassVar[Quantization]

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    BACKEND_TORCH: _ClassVar[Backend]
    BACKEND_OPENVINO: _ClassVar[Backend]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]

class Padding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PADDING_UNSPECIFIED: _ClassVar[Padding]
    PADDING_LONGEST: _ClassVar[Padding]
    PADDING_MAX_LENGTH: _ClassVar[Padding]
    PADDING_NONE: _ClassVar[Padding]

class FunctionToApply(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNCTION_TO_APPLY_UNSPECIFIED: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_SOFTMAX: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_SIGMOID: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_NONE: _ClassVar[FunctionToApply]
TRAILING_METADATA_KEY_UNSPECIFIED: TrailingMetadataKey
TRAILING_METADATA_KEY_TOKENIZE_MS: TrailingMetadataKey
TRAILING_METADATA_KEY_QUEUE_MS: TrailingMetadataKey
TRAILING_METADATA_KEY_FORWARD_MS: TrailingMetadataKey
TRAILING_METADATA_KEY_RETRY_AFTER_MS: TrailingMetadataKey
TASK_UNSPECIFIED: Task
TASK_FEATURE_EXTRACTION: Task
TASK_TEXT_CLASSIFICATION: Task
TASK_TOKEN_CLASSIFICATION: Task
TASK_QUESTION_ANSWERING: Task
TASK_FILL_MASK: Task
COMPUTE_DTYPE_UNSPECIFIED: ComputeDType
COMPUTE_DTYPE_FLOAT32: ComputeDType
COMPUTE_DTYPE_BFLOAT16: ComputeDType
COMPUTE_DTYPE_FLOAT16: ComputeDType
QUANTIZATION_NONE: Quantization
QUANTIZATION_INT8: Quantization
QUANTIZATION_INT8_WEIGHTS: Quantization
QUANTIZATION_INT8_STATIC: Quantization
BACKEND_UNSPECIFIED: Backend
BACKEND_TORCH: Backend
BACKEND_OPENVINO: Backend
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_INT64: DType
DTYPE_INT32: DType
PADDING_UNSPECIFIED: Padding
PADDING_LONGEST: Padding
PADDING_MAX_LENGTH: Padding
PADDING_NONE: Padding
FUNCTION_TO_APPLY_UNSPECIFIED: FunctionToApply
FUNCTION_TO_APPLY_SOFTMAX: FunctionToApply
FUNCTION_TO_APPLY_SIGMOID: FunctionToApply
FUNCTION_TO_APPLY_NONE: FunctionToApply
METADATA_KEY_FIELD_NUMBER: _ClassVar[int]
metadata_key: _descriptor.FieldDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TextPair(_message.Message):
    __slots__ = ("text", "text_pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    text_pair: str
    def __init__(self, text: _Optional[str] = ..., text_pair: _Optional[str] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("input_ids", "token_type_ids")
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, input_ids: _Optional[_Iterable[int]] = ..., token_type_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInput(_message.Message):
    __slots__ = ("text", "pair", "ids")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    pair: TextPair
    ids: TokenIds
    def __init__(self, text: _Optional[str] = ..., pair: _Optional[_Union[TextPair, _Mapping]] = ..., ids: _Optional[_Union[TokenIds, _Mapping]] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text", "pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    pair: TextPair
    def __init__(self, text: _Optional[str] = ..., pair: _Optional[_Union[TextPair, _Mapping]] = ...) -> None: ...

class TokenizeOptions(_message.Message):
    __slots__ = ("padding", "truncation", "max_length")
    PADDING_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    padding: Padding
    truncation: bool
    max_length: int
    def __init__(self, padding: _Optional[_Union[Padding, str]] = ..., truncation: _Optional[bool] = ..., max_length: _Optional[int] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("inputs", "options", "return_attention_mask", "return_token_type_ids", "return_tokens", "return_offsets")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETURN_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TextInput]
    options: TokenizeOptions
    return_attention_mask: bool
    return_token_type_ids: bool
    return_tokens: bool
    return_offsets: bool
    def __init__(self, inputs: _Optional[_Iterable[_Union[TextInput, _Mapping]]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., return_attention_mask: _Optional[bool] = ..., return_token_type_ids: _Optional[bool] = ..., return_tokens: _Optional[bool] = ..., return_offsets: _Optional[bool] = ...) -> None: ...

class Offset(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Encoding(_message.Message):
    __slots__ = ("input_ids", "attention_mask", "token_type_ids", "tokens", "offsets")
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    offsets: _containers.RepeatedCompositeFieldContainer[Offset]
    def __init__(self, input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., token_type_ids: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ..., offsets: _Optional[_Iterable[_Union[Offset, _Mapping]]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("encodings",)
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    encodings: _containers.RepeatedCompositeFieldContainer[Encoding]
    def __init__(self, encodings: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("inputs", "outputs", "output_dtype", "options")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[ModelInput]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    output_dtype: DType
    options: TokenizeOptions
    def __init__(self, inputs: _Optional[_Iterable[_Union[ModelInput, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., output_dtype: _Optional[_Union[DType, str]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("outputs", "sequence_lengths")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    sequence_lengths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, outputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., sequence_lengths: _Optional[_Iterable[int]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("inputs", "function_to_apply", "top_k", "options", "all_labels")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_TO_APPLY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ALL_LABELS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[ModelInput]
    function_to_apply: FunctionToApply
    top_k: int
    options: TokenizeOptions
    all_labels: bool
    def __init__(self, inputs: _Optional[_Iterable[_Union[ModelInput, _Mapping]]] = ..., function_to_apply: _Optional[_Union[FunctionToApply, str]] = ..., top_k: _Optional[int] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., all_labels: _Optional[bool] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score", "index")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    index: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., index: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: ClassifyRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[ClassifyRequest, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: ClassifyResponse
    error: StreamError
    status: _status_pb2.Status
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("id", "device", "pid", "ready", "batches", "items", "restarts", "busy")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    id: int
    device: str
    pid: int
    ready: bool
    batches: int
    items: int
    restarts: int
    busy: bool
    def __init__(self, id: _Optional[int] = ..., device: _Optional[str] = ..., pid: _Optional[int] = ..., ready: _Optional[bool] = ..., batches: _Optional[int] = ..., items: _Optional[int] = ..., restarts: _Optional[int] = ..., busy: _Optional[bool] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("model", "task", "architecture", "labels", "max_length", "hidden_size", "vocab_size", "outputs", "dtype", "max_items_per_request", "workers", "queued_items", "max_tokens_per_request", "frontend_pid", "frontends", "task_type", "compute_dtype", "quantization", "backend", "backend_type")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_PID_FIELD_NUMBER: _ClassVar[int]
    FRONTENDS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    task: str
    architecture: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    hidden_size: int
    vocab_size: int
    outputs: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    max_items_per_request: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    queued_items: int
    max_tokens_per_request: int
    frontend_pid: int
    frontends: int
    task_type: Task
    compute_dtype: ComputeDType
    quantization: Quantization
    backend: str
    backend_type: Backend
    def __init__(self, model: _Optional[str] = ..., task: _Optional[str] = ..., architecture: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., outputs: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., max_items_per_request: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., queued_items: _Optional[int] = ..., max_tokens_per_request: _Optional[int] = ..., frontend_pid: _Optional[int] = ..., frontends: _Optional[int] = ..., task_type: _Optional[_Union[Task, str]] = ..., compute_dtype: _Optional[_Union[ComputeDType, str]] = ..., quantization: _Optional[_Union[Quantization, str]] = ..., backend: _Optional[str] = ..., backend_type: _Optional[_Union[Backend, str]] = ...) -> None: ...
