"""The pipeserve server: gRPC front end, dynamic batcher and model worker processes."""
