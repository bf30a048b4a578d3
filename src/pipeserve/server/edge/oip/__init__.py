"""The Open Inference Protocol's door (KServe v2 gRPC, `inference.GRPCInferenceService`, with
Triton's additions): its messages converted to and from the protocol-free request path, as
the pipeserve.v1 servicer (`edge/service.py`) does for pipeserve's own contract."""
