"""check the server's gRPC health (grpc.health.v1): exit 0 when SERVING, 1 otherwise

A probe for scripts, since no grpc_health_probe binary can be shipped. (The image's HEALTHCHECK
runs python -m pipeserve.server.healthcheck, which finds the server's settings itself.)
It speaks TLS and sends a bearer token like every other subcommand (see cli_args.endpoint).
"""

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service", default="", help="service to check (default: the server as a whole)"
    )


def run(args: argparse.Namespace) -> int:
    endpoint = cli_args.endpoint(args)
    metadata = endpoint.metadata
    with endpoint.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout or 5,
                metadata=metadata,
            )
        except grpc.RpcError as error:
            # As every command reports a refused call: stdout stays for the status.
            print(f"error: {error.code().name}: {error.details()} ({args.target})", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
