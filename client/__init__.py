"""Thin pipeserve client: grpcio, protobuf and numpy only."""
