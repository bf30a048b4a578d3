"""Where `--model` points, checked in a second before anything loads: a checkpoint folder that
exists, or a hub id with the hub in reach (or HF_HUB_OFFLINE set); and the architectures its
config declares (`preflight.py` checks the --task head against them).

Without these checks a mistyped folder fails after torch and transformers have loaded, as an
invalid hub id, and an unreachable hub costs half a minute of download retries first. Imports
neither torch nor transformers; huggingface_hub only for a hub id.
"""

import json
import threading
from pathlib import Path

from pipeserve.server.errors import ModelLoadError
from pipeserve.server.terms import Terms

HUB_ID_EXAMPLE = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
# How long the hub gets to answer one request before start-up gives up on it.
HUB_PROBE_TIMEOUT_S = 3.0
# Longest path Linux resolves (PATH_MAX); a hub id is far shorter.
MAX_PATH_CHARS = 4096


def _looks_like_a_path(model: str) -> bool:
    # A hub id is "name" or "namespace/name"; anything else can only mean a folder.
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_problem(endpoint: str, timeout_s: float) -> str | None:
    """Why the hub at `endpoint` did not answer within `timeout_s`, or None if it answered.

    Any HTTP answer will do: reaching the hub is the question, not what it says. The request
    runs in a thread because name resolution is not bound by the request's own timeout.
    """
    from huggingface_hub.utils import get_session

    problems: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout_s)
            problems.append(None)
        except Exception as error:  # whatever failed, the hub is out of reach
            problems.append(_first_line(error))

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    return problems[0] if problems else f"no answer within {timeout_s:g} s"


def check_model_source(model: str, terms: Terms) -> None:
    """Raises ModelLoadError, one line saying what to do (in `terms`), when `model` cannot be
    loaded from where it points: a missing folder, a folder that is no checkpoint, an invalid
    hub id, or a hub out of reach."""
    folder = Path(model).expanduser()
    try:
        is_dir = folder.is_dir()
    except OSError as error:  # a name too long for the file system, say
        raise ModelLoadError(
            f"cannot load model {model[:200]!r}: {error.strerror}. --model takes a checkpoint "
            f"folder or a hub id such as {HUB_ID_EXAMPLE}"
        ) from None
    if is_dir:
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"cannot load model {model!r}: the folder {folder} has no config.json, so it is "
                "not a checkpoint (transformers' save_pretrained writes one)"
            )
        return
    what = "a file, not a folder" if folder.exists() else "no such folder"
    if str(folder.absolute()) != model:
        what += f" ({folder.absolute()})"
    not_a_folder = (
        f"cannot load model {model!r}: {what}. {terms.option('model')} takes a checkpoint "
        f"folder or a hub id such as {HUB_ID_EXAMPLE}"
    )
    if folder.exists() or _looks_like_a_path(model):
        raise ModelLoadError(not_a_folder)

    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ModelLoadError(not_a_folder) from None
    if constants.HF_HUB_OFFLINE:
        return  # transformers reads the hub cache alone, and says so if the model is not there
    problem = _hub_problem(constants.ENDPOINT, HUB_PROBE_TIMEOUT_S)
    if problem is not None:
        raise ModelLoadError(
            f"cannot load model {model!r}: the Hugging Face hub ({constants.ENDPOINT}) is out of "
            f"reach ({problem}). Serve a local checkpoint folder with "
            f"{terms.setting('model', 'PATH')}, or set "
            f"HF_HUB_OFFLINE=1 to use a copy already in the hub cache ({constants.HF_HUB_CACHE})"
        )


def declared_architectures(model: str, revision: str | None) -> list[str] | None:
    """The architectures `model`'s config.json declares, read without transformers (from a
    folder, or the hub: the file transformers reads next anyway); None if it cannot be read."""
    folder = Path(model).expanduser()
    try:
        if folder.is_dir():
            path = folder / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "config.json", revision=revision))
        architectures = json.loads(path.read_text(encoding="utf-8")).get("architectures")
    except Exception:  # transformers reads it again, and says what is wrong with it
        return None
    if not isinstance(architectures, list):
        return None
    return [a for a in architectures if isinstance(a, str)]
