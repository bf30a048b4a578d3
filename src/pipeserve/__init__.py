"""pipeserve: a gRPC model server for Hugging Face transformer text models.

`pipeserve.v1` holds the generated protobuf stubs (`pipeserve.oip` those of the
Open Inference Protocol), `pipeserve.client` the thin client (no torch) and
`pipeserve.server` the server.
"""

__version__ = "0.1.0"
