"""Checks the server's gRPC health (grpc.health.v1): exit 0 when SERVING, 1 otherwise.

A probe for Docker HEALTHCHECK and scripts, since no grpc_health_probe binary can be shipped.
It speaks TLS and sends a bearer token when given them, like the server's own settings.
"""

import argparse
import os

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client.security import tls_credentials


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service", default="", help="service to check (default: the server as a whole)"
    )
    parser.add_argument("--tls-ca", metavar="PEM", help="CA of the server's certificate (TLS)")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    parser.add_argument(
        "--token",
        default=os.environ.get("PIPESERVE_TOKEN"),
        help="bearer token (default: $PIPESERVE_TOKEN)",
    )


def run(args: argparse.Namespace) -> int:
    tls = args.tls_ca or args.tls_cert
    channel = (
        grpc.secure_channel(args.target, tls_credentials(args.tls_ca, args.tls_cert, args.tls_key))
        if tls
        else grpc.insecure_channel(args.target)
    )
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout or 5,
                metadata=metadata,
            )
        except grpc.RpcError as error:
            print(f"{args.target}: {error.code().name}: {error.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
