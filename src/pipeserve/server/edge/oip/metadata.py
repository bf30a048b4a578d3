"""ModelMetadata and ModelConfig rendered from a served model's mappings (`mappings.py`) and
its protocol-free description (`requests/describe.py`). Every model has the one version
"1": pipeserve serves one version of a model under a name."""

from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.oip import model_config_pb2 as config_pb
from pipeserve.server.edge.oip.mappings import Spec, model_tensors
from pipeserve.server.requests.describe import ModelDescription
from pipeserve.server.requests.models import ServedModel

VERSION = "1"
PLATFORM = "pipeserve"

_DATA_TYPE = {
    "BYTES": config_pb.TYPE_STRING,
    "FP32": config_pb.TYPE_FP32,
    "INT64": config_pb.TYPE_INT64,
}


def model_metadata(model: ServedModel) -> oip.ModelMetadataResponse:
    inputs, outputs = model_tensors(model)

    def tensor(spec: Spec) -> oip.ModelMetadataResponse.TensorMetadata:
        return oip.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=spec.datatype, shape=spec.shape
        )

    return oip.ModelMetadataResponse(
        name=model.name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[tensor(s) for s in inputs],
        outputs=[tensor(s) for s in outputs],
    )


def model_config(model: ServedModel, described: ModelDescription) -> oip.ModelConfigResponse:
    """Triton's model configuration: the batch axis left out of every shape, as Triton's
    is for a model with max_batch_size above 0 (the request's item limit here)."""
    inputs, outputs = model_tensors(model)
    return oip.ModelConfigResponse(
        config=config_pb.ModelConfig(
            name=model.name,
            platform=PLATFORM,
            backend=described.backend.value,
            max_batch_size=described.max_items_per_request,
            input=[
                config_pb.ModelInput(
                    name=s.name,
                    data_type=_DATA_TYPE[s.datatype],
                    dims=s.shape[1:],
                    optional=s.optional,
                )
                for s in inputs
            ],
            output=[
                config_pb.ModelOutput(
                    name=s.name, data_type=_DATA_TYPE[s.datatype], dims=s.shape[1:]
                )
                for s in outputs
            ],
        )
    )
