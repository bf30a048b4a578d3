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
    PADDING_DO_NOT_PAD: _ClassVar[Padding]

class FunctionToApply(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNCTION_TO_APPLY_UNSPECIFIED: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_SOFTMAX: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_SIGMOID: _ClassVar[FunctionToApply]
    FUNCTION_TO_APPLY_NONE: _ClassVar[FunctionToApply]

class WindowAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_AGGREGATION_UNSPECIFIED: _ClassVar[WindowAggregation]
    WINDOW_AGGREGATION_MEAN: _ClassVar[WindowAggregation]
    WINDOW_AGGREGATION_MAX: _ClassVar[WindowAggregation]

class AggregationStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_STRATEGY_UNSPECIFIED: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_NONE: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_SIMPLE: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_FIRST: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_AVERAGE: _ClassVar[AggregationStrategy]
    AGGREGATION_STRATEGY_MAX: _ClassVar[AggregationStrategy]
TRAILING_METADATA_KEY_UNSPECIFIED: TrailingMetadataKey
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
PADDING_DO_NOT_PAD: Padding
FUNCTION_TO_APPLY_UNSPECIFIED: FunctionToApply
FUNCTION_TO_APPLY_SOFTMAX: FunctionToApply
FUNCTION_TO_APPLY_SIGMOID: FunctionToApply
FUNCTION_TO_APPLY_NONE: FunctionToApply
WINDOW_AGGREGATION_UNSPECIFIED: WindowAggregation
WINDOW_AGGREGATION_MEAN: WindowAggregation
WINDOW_AGGREGATION_MAX: WindowAggregation
AGGREGATION_STRATEGY_UNSPECIFIED: AggregationStrategy
AGGREGATION_STRATEGY_NONE: AggregationStrategy
AGGREGATION_STRATEGY_SIMPLE: AggregationStrategy
AGGREGATION_STRATEGY_FIRST: AggregationStrategy
AGGREGATION_STRATEGY_AVERAGE: AggregationStrategy
AGGREGATION_STRATEGY_MAX: AggregationStrategy
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
    __slots__ = ("truncation", "max_length")
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    truncation: bool
    max_length: int
    def __init__(self, truncation: _Optional[bool] = ..., max_length: _Optional[int] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("inputs", "options", "padding", "return_attention_mask", "return_token_type_ids", "return_tokens", "return_offsets", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    RETURN_ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETURN_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TextInput]
    options: TokenizeOptions
    padding: Padding
    return_attention_mask: bool
    return_token_type_ids: bool
    return_tokens: bool
    return_offsets: bool
    model: str
    def __init__(self, inputs: _Optional[_Iterable[_Union[TextInput, _Mapping]]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., padding: _Optional[_Union[Padding, str]] = ..., return_attention_mask: _Optional[bool] = ..., return_token_type_ids: _Optional[bool] = ..., return_tokens: _Optional[bool] = ..., return_offsets: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("encodings", "timings")
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    encodings: _containers.RepeatedCompositeFieldContainer[Encoding]
    timings: Timings
    def __init__(self, encodings: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("tokenize_ms", "queue_ms", "forward_ms", "postprocess_ms")
    TOKENIZE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    tokenize_ms: float
    queue_ms: float
    forward_ms: float
    postprocess_ms: float
    def __init__(self, tokenize_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., forward_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("inputs", "outputs", "output_dtype", "options", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[ModelInput]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    output_dtype: DType
    options: TokenizeOptions
    model: str
    def __init__(self, inputs: _Optional[_Iterable[_Union[ModelInput, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., output_dtype: _Optional[_Union[DType, str]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("outputs", "sequence_lengths", "timings")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    sequence_lengths: _containers.RepeatedScalarFieldContainer[int]
    timings: Timings
    def __init__(self, outputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., sequence_lengths: _Optional[_Iterable[int]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("inputs", "function_to_apply", "top_k", "options", "all_labels", "stride", "window_aggregation", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_TO_APPLY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ALL_LABELS_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[ModelInput]
    function_to_apply: FunctionToApply
    top_k: int
    options: TokenizeOptions
    all_labels: bool
    stride: int
    window_aggregation: WindowAggregation
    model: str
    def __init__(self, inputs: _Optional[_Iterable[_Union[ModelInput, _Mapping]]] = ..., function_to_apply: _Optional[_Union[FunctionToApply, str]] = ..., top_k: _Optional[int] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., all_labels: _Optional[bool] = ..., stride: _Optional[int] = ..., window_aggregation: _Optional[_Union[WindowAggregation, str]] = ..., model: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("labels", "windows")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    windows: int
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., windows: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: ClassifyRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[ClassifyRequest, _Mapping]] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("id", "response", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: ClassifyResponse
    status: _status_pb2.Status
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class LabelSet(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyTokensRequest(_message.Message):
    __slots__ = ("inputs", "aggregation_strategy", "ignore_labels", "stride", "options", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    IGNORE_LABELS_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    aggregation_strategy: AggregationStrategy
    ignore_labels: LabelSet
    stride: int
    options: TokenizeOptions
    model: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., aggregation_strategy: _Optional[_Union[AggregationStrategy, str]] = ..., ignore_labels: _Optional[_Union[LabelSet, _Mapping]] = ..., stride: _Optional[int] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("label", "score", "word", "start", "end", "index")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    word: str
    start: int
    end: int
    index: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., word: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class TokenClassification(_message.Message):
    __slots__ = ("entities", "windows")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    windows: int
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., windows: _Optional[int] = ...) -> None: ...

class ClassifyTokensResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenClassification]
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[TokenClassification, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class FillMaskRequest(_message.Message):
    __slots__ = ("inputs", "top_k", "targets", "options", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    targets: _containers.RepeatedScalarFieldContainer[str]
    options: TokenizeOptions
    model: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., targets: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class MaskCandidate(_message.Message):
    __slots__ = ("score", "token", "token_str", "sequence")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_STR_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    score: float
    token: int
    token_str: str
    sequence: str
    def __init__(self, score: _Optional[float] = ..., token: _Optional[int] = ..., token_str: _Optional[str] = ..., sequence: _Optional[str] = ...) -> None: ...

class MaskFill(_message.Message):
    __slots__ = ("position", "candidates")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    position: int
    candidates: _containers.RepeatedCompositeFieldContainer[MaskCandidate]
    def __init__(self, position: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[MaskCandidate, _Mapping]]] = ...) -> None: ...

class FillMaskResult(_message.Message):
    __slots__ = ("masks",)
    MASKS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[MaskFill]
    def __init__(self, masks: _Optional[_Iterable[_Union[MaskFill, _Mapping]]] = ...) -> None: ...

class FillMaskResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FillMaskResult]
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[FillMaskResult, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("id", "device", "pid", "ready", "batches", "items", "restarts", "busy", "shared_with")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    id: int
    device: str
    pid: int
    ready: bool
    batches: int
    items: int
    restarts: int
    busy: bool
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., device: _Optional[str] = ..., pid: _Optional[int] = ..., ready: _Optional[bool] = ..., batches: _Optional[int] = ..., items: _Optional[int] = ..., restarts: _Optional[int] = ..., busy: _Optional[bool] = ..., shared_with: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("model", "architecture", "labels", "max_length", "hidden_size", "vocab_size", "outputs", "max_items_per_request", "workers", "queued_items", "max_tokens_per_request", "frontend_pid", "frontends", "task_type", "compute_dtype", "quantization", "served_rpcs", "mask_token", "embedding", "name", "backend_type", "backend_version", "max_text_chars", "max_candidate_labels", "max_targets", "max_template_chars", "max_workers_per_device")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_PID_FIELD_NUMBER: _ClassVar[int]
    FRONTENDS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    SERVED_RPCS_FIELD_NUMBER: _ClassVar[int]
    MASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TARGETS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEMPLATE_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    model: str
    architecture: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    hidden_size: int
    vocab_size: int
    outputs: _containers.RepeatedScalarFieldContainer[str]
    max_items_per_request: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    queued_items: int
    max_tokens_per_request: int
    frontend_pid: int
    frontends: int
    task_type: Task
    compute_dtype: ComputeDType
    quantization: Quantization
    served_rpcs: _containers.RepeatedScalarFieldContainer[str]
    mask_token: str
    embedding: EmbeddingInfo
    name: str
    backend_type: Backend
    backend_version: str
    max_text_chars: int
    max_candidate_labels: int
    max_targets: int
    max_template_chars: int
    max_workers_per_device: int
    def __init__(self, model: _Optional[str] = ..., architecture: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., outputs: _Optional[_Iterable[str]] = ..., max_items_per_request: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., queued_items: _Optional[int] = ..., max_tokens_per_request: _Optional[int] = ..., frontend_pid: _Optional[int] = ..., frontends: _Optional[int] = ..., task_type: _Optional[_Union[Task, str]] = ..., compute_dtype: _Optional[_Union[ComputeDType, str]] = ..., quantization: _Optional[_Union[Quantization, str]] = ..., served_rpcs: _Optional[_Iterable[str]] = ..., mask_token: _Optional[str] = ..., embedding: _Optional[_Union[EmbeddingInfo, _Mapping]] = ..., name: _Optional[str] = ..., backend_type: _Optional[_Union[Backend, str]] = ..., backend_version: _Optional[str] = ..., max_text_chars: _Optional[int] = ..., max_candidate_labels: _Optional[int] = ..., max_targets: _Optional[int] = ..., max_template_chars: _Optional[int] = ..., max_workers_per_device: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("inputs", "normalize", "truncate_dim", "output_dtype", "options", "prompt", "prompt_name", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_DIM_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    truncate_dim: int
    output_dtype: DType
    options: TokenizeOptions
    prompt: str
    prompt_name: str
    model: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., truncate_dim: _Optional[int] = ..., output_dtype: _Optional[_Union[DType, str]] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., prompt: _Optional[str] = ..., prompt_name: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "sequence_lengths", "timings")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    embeddings: Tensor
    sequence_lengths: _containers.RepeatedScalarFieldContainer[int]
    timings: Timings
    def __init__(self, embeddings: _Optional[_Union[Tensor, _Mapping]] = ..., sequence_lengths: _Optional[_Iterable[int]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class EmbeddingInfo(_message.Message):
    __slots__ = ("pooling", "source", "include_prompt", "normalized", "dimension", "max_seq_length", "prompts", "default_prompt_name", "truncate_dim")
    POOLING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_DIM_FIELD_NUMBER: _ClassVar[int]
    pooling: str
    source: str
    include_prompt: bool
    normalized: bool
    dimension: int
    max_seq_length: int
    prompts: _containers.RepeatedScalarFieldContainer[str]
    default_prompt_name: str
    truncate_dim: int
    def __init__(self, pooling: _Optional[str] = ..., source: _Optional[str] = ..., include_prompt: _Optional[bool] = ..., normalized: _Optional[bool] = ..., dimension: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., prompts: _Optional[_Iterable[str]] = ..., default_prompt_name: _Optional[str] = ..., truncate_dim: _Optional[int] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "return_documents", "raw_scores", "options", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    raw_scores: bool
    options: TokenizeOptions
    model: str
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: _Optional[bool] = ..., raw_scores: _Optional[bool] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class RankedDocument(_message.Message):
    __slots__ = ("index", "score", "document")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    document: str
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., document: _Optional[str] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RankedDocument]
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[RankedDocument, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ClassifyZeroShotRequest(_message.Message):
    __slots__ = ("inputs", "candidate_labels", "hypothesis_template", "multi_label", "options", "model")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LABELS_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    candidate_labels: _containers.RepeatedScalarFieldContainer[str]
    hypothesis_template: str
    multi_label: bool
    options: TokenizeOptions
    model: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., candidate_labels: _Optional[_Iterable[str]] = ..., hypothesis_template: _Optional[str] = ..., multi_label: _Optional[bool] = ..., options: _Optional[_Union[TokenizeOptions, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class ClassifyZeroShotResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "model", "task_type", "serving", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    task_type: Task
    serving: bool
    default: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., task_type: _Optional[_Union[Task, str]] = ..., serving: _Optional[bool] = ..., default: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "path", "revision", "task", "devices", "workers_per_device", "dtype", "quantize", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_PER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    revision: str
    task: str
    devices: str
    workers_per_device: int
    dtype: str
    quantize: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., revision: _Optional[str] = ..., task: _Optional[str] = ..., devices: _Optional[str] = ..., workers_per_device: _Optional[int] = ..., dtype: _Optional[str] = ..., quantize: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfoResponse
    def __init__(self, info: _Optional[_Union[ModelInfoResponse, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "grace_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    grace_s: float
    def __init__(self, name: _Optional[str] = ..., grace_s: _Optional[float] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("name", "calls_cut")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLS_CUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    calls_cut: int
    def __init__(self, name: _Optional[str] = ..., calls_cut: _Optional[int] = ...) -> None: ...
