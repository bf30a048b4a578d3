"""Which RPC needs which head: the one table of it, for ModelInfo.served_rpcs and for the
FAILED_PRECONDITION an RPC answers when the loaded head cannot serve it."""

from pipeserve.server.errors import UnsupportedByModel
from pipeserve.server.settings import Task

# Every RPC of the Inference service, in its order -> the head it needs (None: any head).
RPC_TASKS: dict[str, Task | None] = {
    "Tokenize": None,
    "Forward": None,
    "Classify": Task.TEXT_CLASSIFICATION,
    "ClassifyStream": Task.TEXT_CLASSIFICATION,
    "ClassifyTokens": Task.TOKEN_CLASSIFICATION,
    "FillMask": Task.FILL_MASK,
    "ModelInfo": None,
    "Embed": Task.FEATURE_EXTRACTION,
    # Both also need more of the classifier (one label; an entailment label), checked per call.
    "Rerank": Task.TEXT_CLASSIFICATION,
    "ClassifyZeroShot": Task.TEXT_CLASSIFICATION,
    "ListModels": None,
}

# How an error message names the model a head needs.
_MODEL_KIND: dict[Task, str] = {
    Task.FEATURE_EXTRACTION: "a bare encoder (AutoModel)",
    Task.TEXT_CLASSIFICATION: (
        "a sequence-classification model (AutoModelForSequenceClassification)"
    ),
    Task.TOKEN_CLASSIFICATION: "a token-classification model (AutoModelForTokenClassification)",
    Task.QUESTION_ANSWERING: "a question-answering model (AutoModelForQuestionAnswering)",
    Task.FILL_MASK: "a masked language model (AutoModelForMaskedLM)",
}


def served_rpcs(task: Task) -> list[str]:
    """The RPCs a model served as `task` serves."""
    return [rpc for rpc, needed in RPC_TASKS.items() if needed in (None, task)]


def require_task(rpc: str, model: str, task: Task) -> None:
    """Refuses `rpc` (FAILED_PRECONDITION) unless the loaded head serves it."""
    needed = RPC_TASKS[rpc]
    if needed is None or needed is task:
        return
    raise UnsupportedByModel(
        f"{rpc} needs {_MODEL_KIND[needed]}; {model} is served as {task} "
        f"(it serves {', '.join(served_rpcs(task))})"
    )
