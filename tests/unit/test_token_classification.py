"""The RPC table (which RPC each task serves) covers every RPC of the service. ClassifyTokens
itself against transformers' pipeline: tests/e2e/test_token_classification.py."""

from pipeserve.v1 import pipeserve_pb2 as pb


def test_the_rpc_table_covers_every_rpc_of_the_service():
    from pipeserve.server.model.served import RPC_TASKS

    assert list(RPC_TASKS) == [m.name for m in pb.DESCRIPTOR.services_by_name["Inference"].methods]
