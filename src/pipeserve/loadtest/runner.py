"""Runs a setup against a real server: connect, send, watch progress."""

import asyncio
from collections.abc import Sequence
from typing import TextIO

import grpc
import grpc.aio

from pipeserve.client.channel import Endpoint
from pipeserve.client.errors import PipeserveError
from pipeserve.loadtest.generate import run_load
from pipeserve.loadtest.plan import (
    Sample,
    Setup,
)
from pipeserve.loadtest.progress import Progress
from pipeserve.loadtest.senders import build_requests, make_sender
from pipeserve.loadtest.texts import BUILTIN_TEXTS, with_mask
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

CONNECT_TIMEOUT_S = 10.0


async def _connect(endpoint: Endpoint) -> grpc.aio.Channel:
    channel = endpoint.aio_channel()
    target = endpoint.target
    try:
        # Connect first: a wrong --target fails in seconds with one line, not with a report
        # full of UNAVAILABLE.
        await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
    except TimeoutError:
        await channel.close()
        raise PipeserveError(
            grpc.StatusCode.UNAVAILABLE,
            f"no server answered at {target} within {CONNECT_TIMEOUT_S:g} s",
        ) from None
    return channel


async def load_test(
    setup: Setup,
    texts: Sequence[str] = BUILTIN_TEXTS,
    *,
    samples: list[Sample] | None = None,
    stop: asyncio.Event | None = None,
    progress: TextIO | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> list[Sample]:
    """Runs `setup` against its server and returns the samples (see run_load); pass them to
    build_report. For fill-mask, a text without the model's mask token gets it in place of its
    last word. `progress`, if given, gets a progress line once a second and a final one.
    `credentials` and `token` reach a protected server, as Client's do."""
    samples = [] if samples is None else samples
    # Before connecting, so that texts the client cannot send fail at once.
    requests = build_requests(setup, texts)
    endpoint = Endpoint(setup.target, credentials=credentials, token=token)
    channel = await _connect(endpoint)
    try:
        stub = InferenceStub(channel)
        if setup.rpc == "fill-mask":
            # Only the server knows its model's mask token, which each text needs.
            info = await stub.ModelInfo(
                pb.ModelInfoRequest(model=setup.model),
                timeout=CONNECT_TIMEOUT_S,
                metadata=endpoint.metadata,
            )
            requests = build_requests(setup, with_mask(texts, info.mask_token))
        sender = make_sender(stub, setup, requests, endpoint.metadata)
        reporter = Progress(samples, progress) if progress is not None else None
        ticker = asyncio.create_task(reporter.run()) if reporter is not None else None
        try:
            await run_load(sender, setup.plan, samples=samples, stop=stop)
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
            await sender.close()
        if reporter is not None:
            reporter.write(final=True)
    finally:
        await channel.close()
    return samples
