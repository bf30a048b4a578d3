"""Embed: sentence embeddings equal to SentenceTransformer(path).encode() on the same
checkpoint, for the real all-MiniLM-L6-v2 and for tiny checkpoints that declare each pooling
mode, a prompt left out of pooling, a Normalize module and a max_seq_length, sent by
concurrent callers so that items of different requests share batches."""

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from pipeserve.client import AsyncClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import SEED_SENTENCES, sst2_sentences
from tests.servers import ModelClient, ServerProcess, front_end_clients, pipeserve

COSINE = 0.99999


def _reference(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def _embed_concurrently(client: Client, texts: list[str], chunk: int = 8, **options) -> np.ndarray:
    """Embeds `texts` in requests of `chunk` texts sent at once by several callers."""
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda part: client.embed(part, **options), chunks))
    return np.concatenate(parts)


def _assert_same(served: np.ndarray, expected: np.ndarray) -> float:
    """Cosine >= COSINE row by row; returns the largest absolute difference."""
    assert served.shape == expected.shape
    cosine = (served * expected).sum(1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= COSINE, f"worst cosine {cosine.min()} at row {cosine.argmin()}"
    largest = float(np.abs(served - expected).max())
    print(f"max abs difference {largest:.3g}, worst cosine {cosine.min():.8f}")
    return largest


# --- The real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return _reference(minilm_path)


@pytest.fixture(scope="module")
def minilm_client(minilm_server) -> Iterator[Client]:
    with Client(minilm_server.address, timeout=120) as client:
        yield client


def test_minilm_embeddings_equal_sentence_transformers(minilm, minilm_client: Client):
    texts = sst2_sentences(320)
    served = _embed_concurrently(minilm_client, texts)
    expected = minilm.encode(texts, batch_size=64)
    assert served.dtype == np.float32
    assert _assert_same(served, expected) < 1e-5
    # The checkpoint's Normalize module applies without asking.
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_truncate_dim_normalize_and_float16(minilm, minilm_client: Client):
    texts = sst2_sentences(48)
    truncated = _embed_concurrently(minilm_client, texts, truncate_dim=128)
    _assert_same(truncated, minilm.encode(texts, truncate_dim=128))
    assert not np.allclose(np.linalg.norm(truncated, axis=1), 1.0, atol=1e-3)
    renormalised = _embed_concurrently(minilm_client, texts, truncate_dim=128, normalize=True)
    expected = minilm.encode(texts, truncate_dim=128, normalize_embeddings=True)
    _assert_same(renormalised, expected)
    half = minilm_client.embed(texts, dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, minilm.encode(texts), atol=1e-3)


def test_a_prompt_goes_before_every_text(minilm, minilm_client: Client):
    texts = sst2_sentences(24)
    served = _embed_concurrently(minilm_client, texts, prompt="query: ")
    _assert_same(served, minilm.encode(texts, prompt="query: "))
    assert not np.allclose(served, minilm_client.embed(texts), atol=1e-3)


def test_query_and_document_prompts_exist_even_unfilled(minilm, minilm_client: Client):
    """sentence-transformers 6 gives every model empty "query" and "document" prompts, so
    naming them on a checkpoint without them is no prompt, not an error."""
    texts = sst2_sentences(16)
    assert minilm.prompts == {"query": "", "document": ""}
    assert set(minilm_client.model_info().embedding.prompts) == set(minilm.prompts)
    plain = minilm_client.embed(texts)
    for name, expected in (
        ("query", minilm.encode_query(texts)),
        ("document", minilm.encode_document(texts)),
    ):
        served = minilm_client.embed(texts, prompt_name=name)
        _assert_same(served, expected)
        _assert_same(served, minilm.encode(texts, prompt_name=name))
        np.testing.assert_allclose(served, plain, atol=1e-6)


def test_model_info_describes_the_pooling(minilm_client: Client):
    info = minilm_client.model_info().embedding
    assert info is not None
    assert (info.pooling, info.source, info.normalized) == ("mean", "modules.json", True)
    assert (info.dimension, info.max_seq_length) == (384, 256)


def test_async_client_and_cli_return_the_same_embeddings(minilm_server, minilm_client: Client):
    texts = sst2_sentences(6)
    expected = minilm_client.embed(texts, truncate_dim=32)

    async def embed() -> list[np.ndarray]:
        async with AsyncClient(minilm_server.address, timeout=60) as client:
            return await asyncio.gather(*(client.embed([t], truncate_dim=32) for t in texts))

    # One text a call, batched with the others or not: equal to float32 rounding.
    np.testing.assert_allclose(np.concatenate(asyncio.run(embed())), expected, atol=1e-6)
    done = pipeserve("embed", "--target", minilm_server.address, "--truncate-dim", "32", *texts)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["shape"] == [len(texts), 32] and printed["dtype"] == "float32"
    np.testing.assert_allclose(printed["embeddings"], expected, rtol=0, atol=1e-6)


def test_bad_requests_are_refused_naming_the_problem(minilm_server, minilm_client: Client):
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(minilm_server.address))
    refused = {
        "inputs is empty": pb.EmbedRequest(),
        "inputs[1].text is empty": pb.EmbedRequest(inputs=["fine", ""]),
        "truncate_dim 385": pb.EmbedRequest(inputs=["a"], truncate_dim=385),
        "not both": pb.EmbedRequest(inputs=["a"], prompt="q: ", prompt_name="query"),
        "unknown prompt_name 'passage'": pb.EmbedRequest(inputs=["a"], prompt_name="passage"),
        "output_dtype": pb.EmbedRequest(inputs=["a"], output_dtype=pb.DTYPE_INT64),
        "max_length 1000": pb.EmbedRequest(
            inputs=["a"], options=pb.TokenizeOptions(max_length=1000)
        ),
    }
    for message, request in refused.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()
    with pytest.raises(ValueError, match="truncate_dim"):
        minilm_client.embed(["a"], truncate_dim=0)
    with pytest.raises(TypeError, match="single string"):
        minilm_client.embed("a")  # type: ignore[arg-type]


def test_a_classifier_cannot_embed(client: Client):
    with pytest.raises(PipeserveError) as error:
        client.embed(["a text"])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "bare encoder" in str(error.value)
    assert client.model_info().embedding is None


# --- Every pooling a checkpoint can declare -------------------------------------------------


def _sentence_transformers_checkpoint(
    folder: Path, encoder: Path, pooling: dict, normalize: bool, settings: dict
) -> Path:
    """`encoder` with the sentence-transformers files that declare how it pools."""
    import shutil

    shutil.copytree(encoder, folder, dirs_exist_ok=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    bert = {
        "max_seq_length": settings.pop("max_seq_length", 512),
        "do_lower_case": settings.pop("do_lower_case", False),
    }
    (folder / "sentence_bert_config.json").write_text(json.dumps(bert))
    if bert["do_lower_case"]:
        # A cased tokenizer, so that only do_lower_case lowercases.
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        tokenizer["normalizer"]["lowercase"] = False
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**config, "do_lower_case": False})
        )
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    return folder


# (pooling config, Normalize module, config_sentence_transformers.json (prompts, a
# default prompt, truncate_dim) + the sentence_bert_config.json keys max_seq_length and
# do_lower_case)
CHECKPOINTS = {
    "cls-without-its-default-prompt": (
        {"embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": False},
        False,
        {"prompts": {"query": "query: "}, "default_prompt_name": "query", "max_seq_length": 20},
    ),
    "max-normalized": (
        {"word_embedding_dimension": 32, "pooling_mode_max_tokens": True},
        True,
        {"prompts": {"query": "Query: ", "passage": "Passage: "}, "do_lower_case": True},
    ),
    "lasttoken-without-prompt": (
        {"embedding_dimension": 32, "pooling_mode": "lasttoken", "include_prompt": False},
        False,
        {"prompts": {"query": "represent this sentence for retrieval: "}},
    ),
    "mean-without-prompt-truncated": (
        {"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False},
        False,
        {"prompts": {"query": "query: "}, "truncate_dim": 16},
    ),
}


@pytest.fixture(scope="module")
def poolings(tmp_path_factory, tiny_encoder) -> dict[str, Path]:
    """Each of CHECKPOINTS, by its name."""
    folder = tmp_path_factory.mktemp("poolings")
    return {
        name: _sentence_transformers_checkpoint(
            folder / name, tiny_encoder, dict(pooling), normalize, dict(settings)
        )
        for name, (pooling, normalize, settings) in CHECKPOINTS.items()
    }


@pytest.fixture(scope="module")
def poolings_server(servers, poolings, tmp_path_factory) -> ServerProcess:
    """One server of every checkpoint of `poolings`, by its name, batches of at most 8."""
    models = tmp_path_factory.mktemp("poolings-file") / "models.toml"
    models.write_text(
        "".join(f'[models.{name}]\npath = "{path}"\n' for name, path in poolings.items()),
        encoding="utf-8",
    )
    return servers.get(None, "--models-file", str(models), "--max-batch-size", "8")


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_each_declared_pooling_equals_sentence_transformers(name, poolings, poolings_server):
    pooling, _, settings = CHECKPOINTS[name]
    server = poolings_server
    reference = _reference(poolings[name])
    texts = [*SEED_SENTENCES, *sst2_sentences(62)]  # SST-2 is lower case; these are not
    # The checkpoint's own, and the "query" and "document" every model has.
    prompts = [None, *reference.prompts]
    assert set(settings["prompts"]) < set(prompts)
    with ModelClient(server.address, name) as client:
        info = client.model_info().embedding
        assert info is not None and info.source == "modules.json"
        assert info.include_prompt is pooling.get("include_prompt", True)
        assert info.truncate_dim == settings.get("truncate_dim", 0)
        assert set(info.prompts) == set(reference.prompts)
        for prompt_name in prompts:
            served = _embed_concurrently(client, texts, prompt_name=prompt_name)
            expected = reference.encode(texts, prompt_name=prompt_name)
            assert _assert_same(served, expected) < 1e-5
        explicit = _embed_concurrently(client, texts[:16], prompt="a prompt of my own: ")
        _assert_same(explicit, reference.encode(texts[:16], prompt="a prompt of my own: "))
        # An empty prompt is no prompt at all, not even the default, in both clients.
        unprompted = reference.encode(texts[:16], prompt="")
        bare = _embed_concurrently(client, texts[:16], prompt="")
        _assert_same(bare, unprompted)

        async def bare_async() -> np.ndarray:
            async with AsyncClient(server.address, timeout=60) as aclient:
                return await aclient.embed(texts[:16], prompt="", model=name)

        _assert_same(asyncio.run(bare_async()), unprompted)
        if settings.get("default_prompt_name"):
            default = client.embed(texts[:16])
            assert not np.allclose(bare, default, atol=1e-3)


@pytest.mark.slow
def test_a_plain_checkpoint_gets_mean_pooling(every_task_two_front_ends, tiny_encoder):
    reference = _reference(tiny_encoder)  # no modules.json: sentence-transformers means too
    texts = sst2_sentences(64)
    # every_task_file serves tiny_encoder as "emb".
    with front_end_clients(every_task_two_front_ends, "emb") as clients:
        for client in clients:
            info = client.model_info().embedding
            assert info is not None and (info.pooling, info.source) == ("mean", "default")
            served = _embed_concurrently(client, texts)
            assert _assert_same(served, reference.encode(texts)) < 1e-5
